"""Question conditioning of the fusion: the filter gate (model.question_gate, paper
§8.3) and FiLM of every fusion token (model.question_film)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdict_jax import model as model_lib

_COLOUR_A, _COLOUR_B = 11, 12  # two token ids standing for two colour words


def _model(**kw):
  kw = dict(vocab_size=40, num_answers=7, width=32, num_atoms=6, patch_size=8,
            pretrain_grid=(4, 4), vision_layers=1, text_layers=1, fusion_layers=2,
            decoder_layers=1, num_heads=2, max_caption_len=16) | kw
  return model_lib.SDictVLM(**kw)


def _batch(colour):
  rng = np.random.default_rng(0)
  batch = model_lib.dummy_batch(2, 32, 8, 10, 7)
  batch["image"] = jnp.asarray(rng.random((2, 32, 32, 3)), jnp.float32)
  # "how many <colour> objects": only the colour word differs between batches.
  batch["question"] = jnp.asarray([[5, 6, colour, 7, 0, 0, 0, 0]] * 2)
  batch["refexp"] = jnp.asarray([[8, 9, 0, 0, 0, 0, 0, 0]] * 2)
  return batch


def _randomise(params, prefix="question_gate", scale=0.5):
  """Gates and FiLM start as the identity (zero kernels); give the modules named
  `prefix`* the weights training would."""
  keys = iter(jax.random.split(jax.random.PRNGKey(3), 64))
  return {name: (jax.tree.map(lambda p: scale * jax.random.normal(next(keys), p.shape),
                              sub) if name.startswith(prefix) else sub)
          for name, sub in params.items()}


def _fused_image_tokens(model, params, batch):
  def fuse(m, b):
    vision = m.encode_image(b["image"])
    fused, _ = m.fuse(vision, b["question"])
    return fused[:, 1:1 + vision.shape[1]]
  return model.apply({"params": params}, batch, method=fuse)


def test_gate_at_init_is_the_papers_plain_concatenation():
  gated, plain = _model(question_gate=True), _model()
  batch = _batch(_COLOUR_A)
  params = gated.init(jax.random.PRNGKey(0), batch)["params"]
  assert {n for n in params if n.startswith("question_gate")} == {
      "question_gate_0", "question_gate_1"}
  plain_params = {n: p for n, p in params.items() if not n.startswith("question_gate")}
  np.testing.assert_allclose(gated.apply({"params": params}, batch)["answer_logits"],
                             plain.apply({"params": plain_params}, batch)["answer_logits"],
                             rtol=1e-6, atol=1e-6)


def test_colour_word_changes_every_image_token_through_the_gate():
  model = _model(question_gate=True)
  params = _randomise(model.init(jax.random.PRNGKey(0), _batch(_COLOUR_A))["params"])
  tokens_a = _fused_image_tokens(model, params, _batch(_COLOUR_A))
  tokens_b = _fused_image_tokens(model, params, _batch(_COLOUR_B))
  # Every image token of every example moves when only the colour word changes.
  change = jnp.linalg.norm(tokens_a - tokens_b, axis=-1)
  assert bool(jnp.all(change > 1e-3 * jnp.linalg.norm(tokens_a, axis=-1)))
  logits_a = model.apply({"params": params}, _batch(_COLOUR_A))["answer_logits"]
  logits_b = model.apply({"params": params}, _batch(_COLOUR_B))["answer_logits"]
  assert float(jnp.max(jnp.abs(logits_a - logits_b))) > 1e-4


@pytest.mark.parametrize("option,module", [("question_gate", "question_gate_0"),
                                           ("question_film", "question_film_0")])
def test_gradients_are_finite_and_reach_the_conditioning(option, module):
  model = _model(**{option: True})
  batch = _batch(_COLOUR_A)
  params = model.init(jax.random.PRNGKey(0), batch)["params"]
  grads = jax.grad(lambda p: jnp.sum(model.apply({"params": p}, batch)[
      "answer_logits"]**2))(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads[module])) > 0


@pytest.mark.parametrize("mixer", ["attention", "fnet"])
def test_baselines_have_no_gate(mixer):
  params = _model(mixer=mixer, question_gate=True).init(
      jax.random.PRNGKey(0), _batch(_COLOUR_A))["params"]
  assert not any(n.startswith("question_gate") for n in params)


# -- FiLM (model.question_film) -------------------------------------------------


def _without_films(params):
  return {n: p for n, p in params.items() if not n.startswith("question_film")}


@pytest.mark.parametrize("mixer", ["sdict", "attention", "fnet"])
def test_film_at_init_is_the_model_without_it(mixer):
  with_film, without = _model(mixer=mixer, question_film=True), _model(mixer=mixer)
  batch = _batch(_COLOUR_A)
  params = with_film.init(jax.random.PRNGKey(0), batch)["params"]
  assert {n for n in params if n.startswith("question_film")} == {
      "question_film_0", "question_film_1"}
  out = with_film.apply({"params": params}, batch)
  ref = without.apply({"params": _without_films(params)}, batch)
  for name in ("answer_logits", "box", "caption_logits"):
    np.testing.assert_allclose(out[name], ref[name], rtol=1e-6, atol=1e-6)


def test_colour_word_reaches_every_image_token_without_token_mixing():
  """With the fusion mixer's output zeroed, the only path from the question to an
  image token is FiLM: every image token must still change with the colour word."""
  model = _model(question_film=True)
  params = _randomise(model.init(jax.random.PRNGKey(0), _batch(_COLOUR_A))["params"],
                      prefix="question_film")
  for i in range(2):  # no token mixing in the fusion blocks: the SDict gain is 0
    mixer = dict(params[f"fusion_{i}"]["mixer"])
    mixer["gain"] = jnp.zeros_like(mixer["gain"])
    params[f"fusion_{i}"] = dict(params[f"fusion_{i}"], mixer=mixer)

  def image_tokens(b):
    def fuse(m, b):
      vision = m.encode_image(b["image"])
      return m.fuse(vision, b["question"])[0][:, 1:1 + vision.shape[1]]
    return model.apply({"params": params}, b, method=fuse)

  tokens_a, tokens_b = image_tokens(_batch(_COLOUR_A)), image_tokens(_batch(_COLOUR_B))
  change = jnp.linalg.norm(tokens_a - tokens_b, axis=-1)
  assert bool(jnp.all(change > 1e-2 * jnp.linalg.norm(tokens_a, axis=-1)))
  # Without FiLM the same zero-gain model's image tokens do not see the question.
  plain = _model()
  plain_params = _without_films(params)
  fuse = lambda m, b: m.fuse(m.encode_image(b["image"]), b["question"])[0][:, 1:17]
  np.testing.assert_allclose(
      plain.apply({"params": plain_params}, _batch(_COLOUR_A), method=fuse),
      plain.apply({"params": plain_params}, _batch(_COLOUR_B), method=fuse), atol=1e-6)


def test_caption_prefix_has_no_question_and_ignores_film():
  model = _model(question_film=True)
  params = model.init(jax.random.PRNGKey(0), _batch(_COLOUR_A))["params"]
  caption = lambda p: model.apply({"params": p}, _batch(_COLOUR_A))["caption_logits"]
  np.testing.assert_array_equal(caption(params),
                                caption(_randomise(params, prefix="question_film")))
