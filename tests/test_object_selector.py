"""ObjectSelector and what reads it: the box head's `select` read-out and the VQA
relation read-out and the named and relative object reads (model.box_readout,
model.relation_readout, model.object_readout, model.relative_readout)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdict_jax import model as model_lib
# The model helpers of test_model.py (pytest puts tests/ on the import path).
from test_model import (_all_equations, _batch, _count_softmax, _loss_config, _model,
                        _params)

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
  # Each token's weight: 1 on the picked patches, 0 elsewhere; the centre is
  # their weighted mean (the normaliser's + 0.01 keeps an empty pick finite).
  np.testing.assert_allclose(weights[0, 0], np.isin(np.arange(16), picked), atol=1e-3)
  np.testing.assert_allclose(weights[0, 0] @ centres / (jnp.sum(weights[0, 0]) + 0.01),
                             centre[0, 0], rtol=1e-5)
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


def _fused_question():
  """Random fused tokens of two examples, [CLS] + 16 image tokens + 8 text
  positions of which 6 are valid, and their mask."""
  rng = np.random.default_rng(0)
  fused = jnp.asarray(rng.normal(size=(2, 1 + 16 + 8, 32)), jnp.float32)
  return fused, jnp.ones((2, 1 + 16 + 8)).at[:, -2:].set(0.0)


def test_object_readout_reads_the_second_halfs_object_and_holds_the_selector():
  """model.object_readout: answer logits + W · Σ_n w_n x_n / (Σ_n w_n + 0.01), the
  fused image tokens x_n under the selector's weights w for the question's second
  half. W starts at zero (the model without the read-out, to the last bit); the
  answers' gradient reaches the tokens read, not the selector (stop-gradient)."""
  model = _model(vqa_readout="pool", object_readout=True)  # no relation read-out
  params = _params(model, _batch())
  fused, mask = _fused_question()

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
      jnp.einsum("bn,bnd->bd", weights[:, 1], image) @ head /
      (jnp.sum(weights[:, 1], -1, keepdims=True) + 0.01), rtol=1e-4, atol=1e-5)
  grads = jax.grad(lambda p, f: jnp.sum(logits(model, p, f) ** 2), argnums=(0, 1))(
      trained, fused)
  assert all(float(jnp.max(jnp.abs(g))) == 0.0
             for g in jax.tree.leaves(grads[0]["object_selector"]))
  assert float(jnp.max(jnp.abs(grads[1][:, 1:17]))) > 1e-3


def _scene_tokens(width=32):
  """16 image tokens (4 x 4 grid) with channel 0 = 1 on three objects: the named
  one on patch 5 (row 1, column 1), one up and right of it on patches 2, 3 (row
  0) and one down and left of it on patch 12 (row 3, column 0)."""
  tokens = np.random.default_rng(0).normal(size=(1, 16, width)).astype(np.float32)
  tokens[0, :, 0] = 0.0
  tokens[0, [2, 3, 5, 12], 0] = 1.0
  return jnp.asarray(tokens)


def test_relative_read_finds_the_object_on_the_named_side_of_the_named_one():
  """model.relative_readout: with the gate open, the read is the mean of the
  tokens that are on an object (objectness), on the question's side of the
  named object's centre, and not the named object; with it shut, the named
  object's read. The relation direction and the gate come from the question
  (here their biases, the question being zero)."""
  model = _model(vqa_readout="pool", object_readout=True, relative_readout=True)
  params = _params(model, _batch())
  width = 32
  params["objectness_head"] = {  # channel 0 says "object"
      "kernel": jnp.zeros((width, 1)).at[0, 0].set(100.0), "bias": jnp.full(1, -50.0)}
  tokens, question = _scene_tokens(width), jnp.zeros((1, width))
  selected = (jnp.arange(16) == 5)[None].astype(jnp.float32)
  centre = selected @ model_lib.patch_centres(GRID)

  def read(direction, gate):
    p = params | {"relation_direction": {"kernel": jnp.zeros((width, 2)),
                                         "bias": jnp.asarray(direction, jnp.float32)},
                  "relative_gate": {"kernel": jnp.zeros((width, 1)),
                                    "bias": jnp.full(1, gate)}}
    return model.apply({"params": p}, tokens, question, centre, selected,
                       method=model_lib.SDictVLM.object_read)[0]

  mean_of = lambda patches, weight=1.0: jnp.sum(tokens[0, jnp.asarray(patches)], 0) * (
      weight / (weight * len(patches) + 0.01))
  np.testing.assert_allclose(read((0.0, 10.0), 30.0), mean_of([2, 3]),  # (y, x): right
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(read((10.0, 0.0), 30.0), mean_of([12]),  # below
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(read((10.0, 0.0), -30.0), mean_of([5]),  # gate shut
                             rtol=1e-4, atol=1e-5)
  # No direction (as at init): every side half-taken, but never the named object.
  np.testing.assert_allclose(read((0.0, 0.0), 30.0), mean_of([2, 3, 12], 0.5),
                             rtol=1e-4, atol=1e-5)


def test_relative_read_learns_the_side_from_the_answers_and_holds_the_rest():
  """The answers' gradient reaches the relation direction and the gate, not the
  objectness head (taught by the boxes) nor the selector (taught by the box
  loss); the read starts as nothing in the logits (object_head is zero)."""
  model = _model(vqa_readout="pool", object_readout=True, relative_readout=True)
  params = _params(model, _batch())
  fused, mask = _fused_question()

  def logits(p):
    return model.apply({"params": p}, fused, mask, 16,
                       method=model_lib.SDictVLM.answer_logits)

  plain = _model(vqa_readout="pool")
  plain_params = {k: v for k, v in params.items() if k in _params(plain, _batch())}
  np.testing.assert_array_equal(
      logits(params), plain.apply({"params": plain_params}, fused, mask, 16,
                                  method=model_lib.SDictVLM.answer_logits))
  trained = params | {"object_head": {
      "kernel": jax.random.normal(jax.random.PRNGKey(4), (32, 7)), "bias": jnp.zeros(7)}}
  grads = jax.grad(lambda p: jnp.sum(logits(p) ** 2))(trained)
  biggest = lambda name: max(float(jnp.max(jnp.abs(g)))
                             for g in jax.tree.leaves(grads[name]))
  assert biggest("objectness_head") == 0.0 and biggest("object_selector") == 0.0
  assert biggest("relation_direction") > 1e-4 and biggest("relative_gate") > 1e-4


def test_objectness_is_taught_by_every_box_of_the_image():
  """The objectness logits are the fused image tokens' (one row per question);
  the loss is each token's sigmoid cross-entropy against "inside any of the
  image's boxes", boxes past has_region and images without any left out, and
  total_loss adds loss.objectness x it."""
  from sdict_jax import losses  # pylint: disable=g-import-not-at-top
  model = _model(vqa_readout="pool", object_readout=True, relative_readout=True)
  batch = model_lib.dummy_batch(2, 32, 8, 10, 7, regions_per_image=2) | _batch()
  boxes = jnp.asarray([[[0.0, 0.0, 0.4, 0.4], [0.6, 0.6, 1.0, 1.0]],
                       [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]])
  batch |= {"region_boxes": boxes, "has_region": jnp.asarray([[1.0, 1.0], [0.0, 0.0]])}
  outputs = model.apply({"params": _params(model, batch)}, batch)
  logits = outputs["objectness_logits"]
  assert logits.shape == (2, 1, 16)
  inside = np.zeros(16)
  inside[[0, 1, 4, 5, 10, 11, 14, 15]] = 1.0  # the first image's two boxes
  np.testing.assert_array_equal(
      jnp.max(outputs["object_masks"][0], 0), inside)
  x = np.asarray(logits[0, 0], np.float64)
  expected = np.mean(np.logaddexp(0.0, x) - inside * x)  # sigmoid cross-entropy
  loss = losses.objectness_loss(logits, outputs["object_masks"], batch["has_region"])
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  config = _loss_config()
  config.update(caption=0.0, vqa=0.0, box=0.0, objectness=2.0)
  total, parts = losses.total_loss(outputs, batch, {}, 0, config)
  np.testing.assert_allclose(parts["objectness_loss"], loss, rtol=1e-6)
  np.testing.assert_allclose(total, 2.0 * loss, rtol=1e-6)
