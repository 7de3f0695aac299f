"""train.make_optimizer: which parameters get which step."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sdict_jax import train


def _optim(**kw):
  return ml_collections.ConfigDict(dict(lr=1e-2, warmup_steps=0, weight_decay=0.5,
                                        clip_norm=1e9, b1=0.9, b2=0.98,
                                        accum_steps=1) | kw)


def _params():
  ones = jnp.ones((4, 3))
  return {"mixer": {"gain": ones, "phase_bias": ones, "omega": jnp.ones((4,)),
                    "amp": jnp.ones((4,))},
          "mlp_in": {"kernel": ones, "bias": jnp.ones((3,))}}


def _first_update(optim, grads):
  optimizer, _ = train.make_optimizer(optim, steps=10)
  params = _params()
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  return updates


def test_filter_lr_mult_scales_the_filters_step_only():
  grads = jax.tree.map(jnp.ones_like, _params())
  plain = _first_update(_optim(weight_decay=0.0), grads)
  fast = _first_update(_optim(weight_decay=0.0, filter_lr_mult=100.0), grads)
  for name in train.FILTER_PARAMS:
    np.testing.assert_allclose(fast["mixer"][name], 100 * plain["mixer"][name],
                               rtol=1e-6)
  for path in (("mixer", "omega"), ("mixer", "amp"), ("mlp_in", "kernel"),
               ("mlp_in", "bias")):
    np.testing.assert_allclose(fast[path[0]][path[1]], plain[path[0]][path[1]])


def test_weight_decay_shrinks_weight_matrices_not_filters_or_atoms():
  zero_grads = jax.tree.map(jnp.zeros_like, _params())
  # With zero gradients Adam's step is 0: what is left is the decay.
  updates = _first_update(_optim(), zero_grads)
  assert float(jnp.max(updates["mlp_in"]["kernel"])) < 0  # decayed towards 0
  for name in ("gain", "phase_bias", "omega", "amp"):
    np.testing.assert_array_equal(updates["mixer"][name], 0.0)
  np.testing.assert_array_equal(updates["mlp_in"]["bias"], 0.0)


def test_lr_mults_scale_the_matching_paths_by_the_first_match():
  grads = jax.tree.map(jnp.ones_like, _params())
  plain = _first_update(_optim(weight_decay=0.0), grads)
  mults = ((r"mlp_in/kernel", 0.1), (r"mlp_in/.*", 3.0), (r"mixer/(gain|omega)", 0.5))
  scaled = _first_update(_optim(weight_decay=0.0, filter_lr_mult=100.0,
                                lr_mults=mults), grads)
  expected = {("mlp_in", "kernel"): 0.1, ("mlp_in", "bias"): 3.0,
              ("mixer", "gain"): 0.5 * 100.0,  # composes with filter_lr_mult
              ("mixer", "phase_bias"): 100.0, ("mixer", "omega"): 0.5,
              ("mixer", "amp"): 1.0}
  for (module, name), factor in expected.items():
    np.testing.assert_allclose(scaled[module][name], factor * plain[module][name],
                               rtol=1e-6)


def test_trunk_params_are_the_encoders_and_fusion_not_heads_or_decoder():
  import re  # pylint: disable=g-import-not-at-top
  from sdict_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  model = model_lib.SDictVLM(vocab_size=20, num_answers=5, width=16, num_atoms=4,
                             pretrain_grid=(4, 4), question_gate=True,
                             question_film=True, vqa_readout="tokens",
                             tie_vision_atoms=True, region_words=True)
  shapes = jax.eval_shape(lambda: model.init(
      {"params": jax.random.PRNGKey(0), "noise": jax.random.PRNGKey(1)},
      model_lib.dummy_batch(1, 32, 4, 4, 5)))["params"]
  read_by_others = ("vqa_head_", "box_head_", "region_head", "token_readout",
                    "decoder_", "token_embedding", "caption_position")
  for path, _ in jax.tree_util.tree_flatten_with_path(shapes)[0]:
    name = jax.tree_util.keystr(path, simple=True, separator="/")
    in_trunk = re.fullmatch(model_lib.TRUNK_PARAMS, name) is not None
    assert in_trunk != name.startswith(read_by_others), name
    in_vision = re.fullmatch(model_lib.VISION_PARAMS, name) is not None
    assert in_vision == (in_trunk and name.startswith(
        ("vision_", "patch_projection"))), name


def test_default_config_steps_the_vision_encoder_at_the_heads_rate_the_rest_slower():
  """configs/shapes.py: VISION_PARAMS (listed first) at 1 ×, the rest of the trunk
  at 0.1 ×, heads and decoder at 1 × (Adam's first step: lr × sign(grad))."""
  import os  # pylint: disable=g-import-not-at-top
  from sdict_jax import config_files  # pylint: disable=g-import-not-at-top
  config = config_files.get_config(os.path.join(
      os.path.dirname(__file__), "..", "configs", "shapes.py"))
  optim = ml_collections.ConfigDict(config.optim.to_dict())
  optim.update(warmup_steps=0, weight_decay=0.0)
  kernel = {"kernel": jnp.ones((4, 3))}
  params = {"vision_0": {"mlp_in": kernel}, "patch_projection": kernel,
            "text_0": {"mlp_in": kernel}, "fusion_1": {"mlp_in": kernel},
            "vqa_head_0": kernel, "decoder_0": {"mlp_in": kernel}}
  optimizer, _ = train.make_optimizer(optim, steps=10)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  step = lambda *path: float(jnp.abs(functools.reduce(dict.get, path, updates)
                                     ["kernel"]).mean())
  head = step("vqa_head_0")
  for path, factor in ((("vision_0", "mlp_in"), 1.0), (("patch_projection",), 1.0),
                       (("text_0", "mlp_in"), 0.1), (("fusion_1", "mlp_in"), 0.1),
                       (("decoder_0", "mlp_in"), 1.0)):
    np.testing.assert_allclose(step(*path), factor * head, rtol=1e-5, err_msg=path)


def test_lr_mult_zero_freezes_weight_decay_included():
  grads = jax.tree.map(jnp.ones_like, _params())
  updates = _first_update(_optim(lr_mults=((r"mlp_in/.*", 0.0),)), grads)
  np.testing.assert_array_equal(updates["mlp_in"]["kernel"], 0.0)
  np.testing.assert_array_equal(updates["mlp_in"]["bias"], 0.0)
  assert float(jnp.max(jnp.abs(updates["mixer"]["gain"]))) > 0
