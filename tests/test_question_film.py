"""The question broadcast to every fusion token (model.question_film, FiLM)."""

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


def _trained_films(params, scale=0.5):
  """FiLM starts as the identity (zero kernels); give it the weights training would."""
  keys = iter(jax.random.split(jax.random.PRNGKey(3), 64))
  return {name: (jax.tree.map(lambda p: scale * jax.random.normal(next(keys), p.shape),
                              sub) if name.startswith("question_film") else sub)
          for name, sub in params.items()}


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
  params = _trained_films(model.init(jax.random.PRNGKey(0), _batch(_COLOUR_A))["params"])
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
  np.testing.assert_array_equal(caption(params), caption(_trained_films(params)))


def test_film_gradients_are_finite_and_reach_it():
  model = _model(question_film=True)
  batch = _batch(_COLOUR_A)
  params = model.init(jax.random.PRNGKey(0), batch)["params"]
  grads = jax.grad(lambda p: jnp.sum(model.apply({"params": p}, batch)[
      "answer_logits"]**2))(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  assert float(jnp.max(jnp.abs(grads["question_film_0"]["scale_shift"]["kernel"]))) > 0
