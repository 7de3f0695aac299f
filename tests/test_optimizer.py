"""train.make_optimizer: which parameters get which step."""

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
