"""ObjectSelector and what reads it: the box head's `select` read-out and the VQA
relation read-out (model.box_readout, model.relation_readout)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdict_jax import model as model_lib
# The model helpers of test_model.py (pytest puts tests/ on the import path).
from test_model import _all_equations, _batch, _count_softmax, _model, _params

GRID = (4, 4)


def test_patch_centres_lie_in_their_own_patch():
  """patch_centres is in patchify's row-major order: a small box around patch k's
  centre covers patch k alone (box_patch_mask, the region words' mask)."""
  centres = model_lib.patch_centres(GRID)
  boxes = jnp.concatenate([centres - 0.01, centres + 0.01], -1)  # [16, 4]
  masks = model_lib.box_patch_mask(boxes, GRID)
  np.testing.assert_array_equal(np.asarray(masks), np.eye(16))


def test_question_halves_split_the_valid_words_by_order():
  rng = np.random.default_rng(0)
  text = jnp.asarray(rng.normal(size=(1, 8, 5)), jnp.float32)
  mask = jnp.asarray([[1, 1, 1, 1, 1, 1, 0, 0]], jnp.float32)
  first, second = model_lib.question_halves(text, mask)[0]
  # Padding is not read.
  padded = text.at[0, 6:].set(100.0)
  np.testing.assert_allclose(model_lib.question_halves(padded, mask)[0],
                             jnp.stack([first, second]), rtol=1e-6)
  # The valid words reversed: the halves trade places.
  reversed_text = text.at[0, :6].set(text[0, 5::-1])
  swapped = model_lib.question_halves(reversed_text, mask)[0]
  np.testing.assert_allclose(swapped[0], second, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(swapped[1], first, rtol=1e-5, atol=1e-6)
  # Together they are the mean; each leans on its own half of the words.
  np.testing.assert_allclose((first + second) / 2, jnp.mean(text[0, :6], 0),
                             rtol=1e-5, atol=1e-6)
  words = text[0, :6]
  assert float(jnp.linalg.norm(first - jnp.mean(words[:3], 0))) < float(
      jnp.linalg.norm(first - jnp.mean(words[3:], 0)))


def _selector_that_picks_channel_0(width):
  """Hand-set parameters: a token is selected when its channel 0 is 1, not when 0."""
  return {"params": {
      "film": {"kernel": jnp.zeros((width, 2 * width)), "bias": jnp.zeros(2 * width)},
      "mlp_in": {"kernel": jnp.eye(width), "bias": jnp.zeros(width)},
      "score": {"kernel": jnp.zeros((width, 1)).at[0, 0].set(100.0),
                "bias": jnp.full((1,), -40.0)},
  }}


def test_selector_centre_is_the_mean_position_of_the_selected_tokens():
  width = 6
  selector = model_lib.ObjectSelector()
  tokens = np.zeros((1, 16, width), np.float32)
  picked = [5, 6, 9]  # an object over three patches
  tokens[0, picked, 0] = 1.0
  centres = model_lib.patch_centres(GRID)
  query = jnp.zeros((1, 1, width))
  params = _selector_that_picks_channel_0(width)
  assert set(params["params"]) == set(
      selector.init(jax.random.PRNGKey(0), tokens, query, centres)["params"])
  centre, features, weights = selector.apply(params, jnp.asarray(tokens), query,
                                             centres)
  np.testing.assert_allclose(centre[0, 0], jnp.mean(centres[np.array(picked)], 0),
                             atol=1e-2)
  assert features.shape == (1, 1, width)
  # The normalised weights: a third on each picked patch, the centre their mean.
  np.testing.assert_allclose(weights[0, 0], np.isin(np.arange(16), picked) / 3.01,
                             atol=1e-3)
  np.testing.assert_allclose(weights[0, 0] @ centres, centre[0, 0], rtol=1e-5)
  # Tokens and their positions permuted together: the same centre.
  order = np.random.default_rng(0).permutation(16)
  permuted, _, _ = selector.apply(params, jnp.asarray(tokens[:, order]), query,
                                  centres[order])
  np.testing.assert_allclose(permuted, centre, rtol=1e-5, atol=1e-6)


def test_selector_is_finite_when_nothing_is_selected():
  """Every weight exactly 0 (sigmoid(-200) underflows): the + 0.01 of the
  normaliser keeps the centre finite (at the corner) and its gradients too."""
  width = 6
  params = _selector_that_picks_channel_0(width)
  params["params"]["score"]["bias"] = jnp.full((1,), -200.0)
  tokens = jnp.asarray(np.random.default_rng(0).normal(size=(1, 16, width)) * 0.1,
                       jnp.float32)

  def centre(p):
    return model_lib.ObjectSelector().apply(
        p, tokens, jnp.zeros((1, 1, width)), model_lib.patch_centres(GRID))[0]

  np.testing.assert_array_equal(np.asarray(centre(params)), np.zeros((1, 1, 2)))
  grads = jax.grad(lambda p: jnp.sum(centre(p)))(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_relation_readout_tells_the_two_named_objects_apart_by_word_order():
  """The same fused tokens with the question's words in the other order ("is B
  left of A" for "is A left of B"): the relation read-out answers otherwise, the
  pooled head alike (it reads [CLS], and the order reaches it only through the
  mixers, which this test leaves out)."""
  model, batch = _model(vqa_readout="pool", relation_readout=True), _batch()
  params = _params(model, batch)
  film = params["object_selector"]["film"]  # zero at init: every query alike
  film["kernel"] = jax.random.normal(jax.random.PRNGKey(3), film["kernel"].shape)
  rng = np.random.default_rng(0)
  fused = rng.normal(size=(2, 1 + 16 + 8, 32)).astype(np.float32)
  mask = np.ones((2, 1 + 16 + 8), np.float32)
  mask[:, -2:] = 0  # six valid words
  reordered = fused.copy()
  reordered[:, 17:23] = fused[:, 22:16:-1]

  def logits(m, p, f):
    return m.apply({"params": p}, jnp.asarray(f), jnp.asarray(mask), 16,
                   method=model_lib.SDictVLM.answer_logits)

  change = logits(model, params, fused) - logits(model, params, reordered)
  assert float(jnp.max(jnp.abs(change))) > 1e-3  # float noise: ~1e-7
  # The control: the same parameters without the read-out answer both alike.
  plain = _model(vqa_readout="pool")
  plain_params = {k: v for k, v in params.items()
                  if k != "object_selector" and not k.startswith("relation_head")}
  np.testing.assert_allclose(logits(plain, plain_params, fused),
                             logits(plain, plain_params, reordered), rtol=1e-6)


def test_box_select_centre_is_the_selectors():
  model, batch = _model(box_readout="select"), _batch()
  params = _params(model, batch)

  def run(m, b):
    vision = m.encode_image(b["image"])
    fused, mask = m.fuse(vision, b["refexp"])
    n = vision.shape[1]
    query = model_lib.masked_mean(fused[:, 1 + n:], mask[:, 1 + n:])
    centre, selected, _ = m.object_selector(fused[:, 1:1 + n], query[:, None],
                                            model_lib.patch_centres(GRID))
    hidden, out = m.box_head
    size = jax.nn.sigmoid(out(jax.nn.gelu(hidden(fused[:, 0] + selected[:, 0]))))[:, 2:]
    return m.box(fused, mask, n), centre[:, 0], size

  box, centre, size = model.apply({"params": params}, batch, method=run)
  assert bool(jnp.all((box > 0) & (box < 1)))  # unclipped, so the sizes compare
  np.testing.assert_allclose((box[:, :2] + box[:, 2:]) / 2, centre, atol=1e-5)
  np.testing.assert_allclose(box[:, 2:] - box[:, :2], size, atol=1e-5)
  with pytest.raises(ValueError, match="box_readout='select' needs box"):
    model.apply({"params": params}, batch, method=lambda m, b: m.box(
        *m.fuse(m.encode_image(b["image"]), b["refexp"])))


def test_unknown_box_readout_is_a_clear_error():
  model, batch = _model(box_readout="argmax"), _batch()
  with pytest.raises(ValueError, match="box_readout 'argmax'.*'pool' or 'select'"):
    _params(model, batch)


def test_selector_weights_are_sigmoids_not_a_softmax():
  """No exponential at all in the selector (sigmoid is XLA's `logistic`), so no
  softmax however it were spelled; and the whole model with both read-outs has
  none by the model test's count."""
  tokens, query = jnp.ones((1, 16, 6)), jnp.ones((1, 2, 6))
  selector = model_lib.ObjectSelector()
  params = selector.init(jax.random.PRNGKey(0), tokens, query,
                         model_lib.patch_centres(GRID))
  jaxpr = jax.make_jaxpr(selector.apply)(params, tokens, query,
                                         model_lib.patch_centres(GRID)).jaxpr
  primitives = {e.primitive.name for e in _all_equations(jaxpr)}
  assert "exp" not in primitives and "logistic" in primitives, primitives
  model, batch = _model(box_readout="select", relation_readout=True), _batch()
  params = _params(model, batch)
  jaxpr = jax.make_jaxpr(lambda p, b: model.apply(
      {"params": p}, b, train=True, rngs={"noise": jax.random.PRNGKey(0)},
      mutable=["aux"]))(params, batch).jaxpr
  assert _count_softmax(jaxpr) == 0
  primitives = {e.primitive.name for e in _all_equations(jaxpr)}
  assert "conv_general_dilated" not in primitives


def test_object_readout_reads_the_second_halfs_object_and_holds_the_selector():
  """model.object_readout: answer logits + W · Σ_n w_n x_n, the fused image tokens
  x_n under the selector's weights w for the question's second half. W starts
  at zero (the model without the read-out, to the last bit); the answers'
  gradient reaches the tokens read, not the selector (stop-gradient)."""
  model = _model(vqa_readout="pool", object_readout=True)  # no relation read-out
  params = _params(model, _batch())
  rng = np.random.default_rng(0)
  fused = jnp.asarray(rng.normal(size=(2, 1 + 16 + 8, 32)), jnp.float32)
  mask = jnp.ones((2, 1 + 16 + 8)).at[:, -2:].set(0.0)

  def logits(m, p, f):
    return m.apply({"params": p}, f, mask, 16, method=model_lib.SDictVLM.answer_logits)

  plain = _model(vqa_readout="pool")
  plain_params = {k: v for k, v in params.items()
                  if k not in ("object_selector", "object_head")}
  np.testing.assert_array_equal(logits(model, params, fused),
                                logits(plain, plain_params, fused))
  film = params["object_selector"]["film"]
  film["kernel"] = jax.random.normal(jax.random.PRNGKey(3), film["kernel"].shape)
  head = jax.random.normal(jax.random.PRNGKey(4), (32, 7))
  trained = params | {"object_head": {"kernel": head, "bias": jnp.zeros(7)}}
  image, text = fused[:, 1:17], fused[:, 17:]
  _, _, weights = model_lib.ObjectSelector().apply(
      {"params": params["object_selector"]}, image,
      model_lib.question_halves(text, mask[:, 17:]), model_lib.patch_centres(GRID))
  np.testing.assert_allclose(
      logits(model, trained, fused) - logits(plain, plain_params, fused),
      jnp.einsum("bn,bnd->bd", weights[:, 1], image) @ head, rtol=1e-4, atol=1e-5)
  grads = jax.grad(lambda p, f: jnp.sum(logits(model, p, f) ** 2), argnums=(0, 1))(
      trained, fused)
  assert all(float(jnp.max(jnp.abs(g))) == 0.0
             for g in jax.tree.leaves(grads[0]["object_selector"]))
  assert float(jnp.max(jnp.abs(grads[1][:, 1:17]))) > 1e-3
