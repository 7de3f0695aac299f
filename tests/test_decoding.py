"""Decoding: the searches on a synthetic language model whose answers are known,
and incremental decoding against full recomputation on tiny SDict-VLMs."""

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdict_jax import decoding
from sdict_jax import model as model_lib

BOS, EOS = 1, 2


# ---------------------------------------------------------------------------
# A second-order Markov language model behind the step interface. Its next-token
# logits depend on the token fed AND on the one before, which only the cache
# remembers: beam search gets it right only if it reorders the cache.
# ---------------------------------------------------------------------------


def markov_decoder(table, batch):
  """(first logits, cache, step_fn) of logits table[previous, current] [V, V, V]."""
  table = jnp.asarray(table, jnp.float32)
  cache = {"previous": jnp.zeros(batch, jnp.int32),  # context before BOS: token 0
           "calls": jnp.zeros((), jnp.int32)}  # a shared scalar, like attention's index

  def step_fn(cache, tokens, position):
    del position
    logits = table[cache["previous"], tokens]
    return logits, {"previous": tokens, "calls": cache["calls"] + 1}

  first_logits, cache = step_fn(cache, jnp.full(batch, BOS, jnp.int32), 0)
  return first_logits, cache, step_fn


def log_softmax(x):
  x = np.asarray(x, np.float64)
  return x - np.log(np.sum(np.exp(x - x.max(-1, keepdims=True)), -1,
                           keepdims=True)) - x.max(-1, keepdims=True)


def sequence_logprob(table, tokens):
  logprobs = log_softmax(table)
  context, total = (0, BOS), 0.0
  for token in tokens:
    total += logprobs[context][token]
    context = (context[1], token)
  return total


def all_hypotheses(vocab, max_len):
  """Every complete hypothesis: ends in EOS, or reaches max_len."""
  words = [v for v in range(vocab) if v != EOS]
  for length in range(1, max_len + 1):
    for body in itertools.product(words, repeat=length - 1):
      yield body + (EOS,)
      if length == max_len:
        yield from (body + (last,) for last in words)


def best_hypothesis(table, max_len, alpha):
  score = lambda h: sequence_logprob(table, h) / ((5 + len(h)) / 6) ** alpha
  best = max(all_hypotheses(table.shape[0], max_len), key=score)
  return best, score(best)


def greedy_reference(table, max_len):
  logprobs, context, tokens = log_softmax(table), (0, BOS), []
  while len(tokens) < max_len and (not tokens or tokens[-1] != EOS):
    tokens.append(int(np.argmax(logprobs[context])))
    context = (context[1], tokens[-1])
  return tuple(tokens)


def strip(row):
  row = [int(t) for t in row]
  return tuple(row[:row.index(EOS) + 1]) if EOS in row else tuple(row)


def random_table(seed, vocab=5, sharpness=2.0):
  return np.random.default_rng(seed).normal(size=(vocab, vocab, vocab)) * sharpness


@functools.partial(jax.jit, static_argnames=("max_len", "beam_width", "alpha", "batch"))
def markov_beam(table, *, max_len, beam_width, alpha, batch=1):
  return decoding.beam_search(*markov_decoder(table, batch), eos_id=EOS,
                              max_len=max_len, beam_width=beam_width,
                              length_penalty=alpha)


@functools.partial(jax.jit, static_argnames=("max_len", "alpha", "batch"))
def markov_greedy(table, *, max_len, alpha=0.0, batch=1):
  return decoding.greedy_search(*markov_decoder(table, batch), eos_id=EOS,
                                max_len=max_len, length_penalty=alpha)


@functools.partial(jax.jit, static_argnames=("max_len", "top_p", "temperature",
                                             "batch"))
def markov_nucleus(table, rng, *, max_len, top_p, temperature, batch):
  return decoding.nucleus_sampling(*markov_decoder(table, batch), rng, eos_id=EOS,
                                   max_len=max_len, top_p=top_p,
                                   temperature=temperature, length_penalty=0.0)


def test_beam_finds_the_likelier_caption_that_greedy_misses():
  # After BOS: A 0.5, B 0.4, EOS 0.1. After A the next token is a toss-up
  # (EOS 0.34), after B it is EOS 0.9: greedy takes A EOS (P = 0.17), the best
  # caption is B EOS (P = 0.36).
  a, b, rest = 3, 4, 1e-6
  probs = np.full((5, 5, 5), rest)
  probs[:, BOS, [a, b, EOS]] = [0.5, 0.4, 0.1]
  probs[:, a, [EOS, a, b]] = [0.34, 0.33, 0.33]
  probs[:, b, [EOS, a, b]] = [0.9, 0.05, 0.05]
  table = np.log(probs / probs.sum(-1, keepdims=True))
  greedy_tokens, greedy_score = markov_greedy(table, max_len=4)
  beam_tokens, beam_scores = markov_beam(table, max_len=4, beam_width=2, alpha=0.0)
  assert strip(greedy_tokens[0]) == (a, EOS) == greedy_reference(table, 4)
  assert strip(beam_tokens[0, 0]) == (b, EOS)
  np.testing.assert_allclose(greedy_score[0], np.log(0.5 * 0.34), rtol=1e-4)
  np.testing.assert_allclose(beam_scores[0, 0], np.log(0.4 * 0.9), rtol=1e-4)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_exhaustive_beam_search_finds_the_best_normalised_score(alpha):
  # With W >= V^L no extension is ever pruned, so the beam must return the
  # brute-force optimum of logprob / ((5 + len) / 6)^α over every hypothesis.
  vocab, max_len = 4, 4
  for seed in range(4):
    table = random_table(seed, vocab)
    tokens, scores = markov_beam(table, max_len=max_len,
                                 beam_width=vocab ** max_len, alpha=alpha)
    best, best_score = best_hypothesis(table, max_len, alpha)
    assert strip(tokens[0, 0]) == best, seed
    np.testing.assert_allclose(scores[0, 0], best_score, rtol=1e-4)
    assert np.all(np.diff(np.asarray(scores[0])) <= 1e-6), "not sorted best first"


def test_length_penalty_changes_which_caption_wins():
  # The optimum moves to longer captions as α grows, on at least one of these LMs
  # (so the exhaustive test above really exercises the normalisation).
  changed = [best_hypothesis(random_table(seed, 4), 4, 0.0)[0] !=
             best_hypothesis(random_table(seed, 4), 4, 2.0)[0] for seed in range(4)]
  assert any(changed)


def test_beam_width_one_is_greedy():
  for seed in range(6):
    table = random_table(seed, 6, sharpness=1.0)
    greedy_tokens, greedy_scores = markov_greedy(table, max_len=6)
    beam_tokens, beam_scores = markov_beam(table, max_len=6, beam_width=1, alpha=0.0)
    assert strip(greedy_tokens[0]) == greedy_reference(table, 6)
    np.testing.assert_array_equal(beam_tokens[:, 0], greedy_tokens)
    np.testing.assert_allclose(beam_scores[:, 0], greedy_scores, rtol=1e-5)


def test_captions_are_zero_after_eos():
  table = random_table(3, 6)
  tokens, _ = markov_beam(table, max_len=6, beam_width=3, alpha=0.6)
  for row in np.asarray(tokens).reshape(-1, 6):
    if EOS in row.tolist():
      assert not row[row.tolist().index(EOS) + 1:].any()


def test_reorder_cache_gathers_rows_and_keeps_scalars():
  cache = {"state": jnp.arange(6).reshape(3, 2), "index": jnp.int32(7)}
  reordered = decoding.reorder_cache(cache, jnp.array([2, 2, 0]))
  np.testing.assert_array_equal(reordered["state"], [[4, 5], [4, 5], [0, 1]])
  assert reordered["index"] == 7
  with pytest.raises(ValueError, match="batch-major"):
    decoding.reorder_cache({"table": jnp.zeros((4, 2))}, jnp.array([0, 1, 2]))


def test_nucleus_logits_keeps_the_smallest_set_reaching_top_p():
  logits = jnp.log(jnp.array([0.05, 0.5, 0.15, 0.3]))
  kept = lambda p: set(np.flatnonzero(np.isfinite(decoding.nucleus_logits(logits, p))))
  assert kept(0.0) == {1}
  assert kept(0.5) == {1}
  assert kept(0.8) == {1, 3}
  assert kept(0.81) == {1, 2, 3}
  assert kept(1.0) == {0, 1, 2, 3}


def test_nucleus_with_vanishing_top_p_is_greedy():
  table = random_table(5, 6, sharpness=1.0)
  greedy_tokens, _ = markov_greedy(table, max_len=6, batch=8)
  sampled, _ = markov_nucleus(table, jax.random.PRNGKey(0), max_len=6, top_p=1e-6,
                              temperature=1.5, batch=8)
  np.testing.assert_array_equal(sampled, greedy_tokens)


def test_nucleus_samples_stay_inside_the_tempered_nucleus():
  table, top_p, temperature = random_table(7, 6, sharpness=1.0), 0.6, 0.7
  tokens, scores = markov_nucleus(table, jax.random.PRNGKey(1), max_len=6,
                                  top_p=top_p, temperature=temperature, batch=256)
  tempered = np.exp(log_softmax(table / temperature))
  emitted = {}
  for row, score in zip(np.asarray(tokens), np.asarray(scores)):
    caption, context = strip(row), (0, BOS)
    for token in caption:
      probs = tempered[context]
      order = np.argsort(-probs)
      size = np.searchsorted(np.cumsum(probs[order]), top_p) + 1
      assert token in order[:size], (context, token, order[:size])
      emitted.setdefault(context, set()).add(token)
      context = (context[1], token)
    # The score is the model's own (temperature 1) log-probability, α = 0.
    np.testing.assert_allclose(score, sequence_logprob(table, caption), rtol=1e-4)
  assert any(len(tokens) > 1 for tokens in emitted.values()), "never sampled"


# ---------------------------------------------------------------------------
# Tiny SDict-VLMs: incremental decoding (cache) against full recomputation.
# ---------------------------------------------------------------------------

VOCAB, MAX_LEN, WIDTH = 24, 8, 32


def tiny_models(mixer):
  make = functools.partial(
      model_lib.SDictVLM, vocab_size=VOCAB, num_answers=4, mixer=mixer, width=WIDTH,
      num_atoms=8, patch_size=8, pretrain_grid=(4, 4), vision_layers=1,
      text_layers=1, fusion_layers=1, decoder_layers=1, num_heads=2,
      max_text_len=8, max_caption_len=MAX_LEN)
  model, decode_model = make(), make(decode=True)
  # Only the caption decoder's parameters: decoding never runs the encoders.
  init = jax.jit(functools.partial(model.init, method=model.caption_logits))
  params = init(jax.random.PRNGKey(0), jnp.zeros((1, MAX_LEN), jnp.int32),
                jnp.arange(MAX_LEN), *tiny_prefix(1))["params"]
  # Sharper next-token distributions than at init, so no argmax is a near-tie.
  params["decoder_norm"]["scale"] = params["decoder_norm"]["scale"] * 20.0
  return model, decode_model, params


def tiny_prefix(batch=3, length=5):
  prefix = jax.random.normal(jax.random.PRNGKey(2), (batch, length, WIDTH))
  mask = jnp.ones((batch, length)).at[1, -2:].set(0.0)  # a padded prefix row
  return prefix, mask


@functools.lru_cache(maxsize=None)
def decoded(mixer):
  """Everything the tests below compare, for one mixer (cached: compiled once)."""
  model, decode_model, params = tiny_models(mixer)
  prefix, mask = tiny_prefix()
  teacher = jax.random.randint(jax.random.PRNGKey(3), (3, MAX_LEN), 3, VOCAB)
  teacher = teacher.at[:, 0].set(BOS)

  @jax.jit
  def logits(params):
    """Teacher-forced logits [B, L, V]: one full pass, and prefill + steps."""
    full = model.apply({"params": params}, teacher, jnp.arange(MAX_LEN), prefix,
                       mask, method=model.caption_logits)
    first, cache, step_fn = decoding.incremental_decoder(
        decode_model, params, prefix, mask, bos_id=BOS, max_len=MAX_LEN)

    def one_step(cache, position):
      logits, cache = step_fn(cache, teacher[:, position], position)
      return cache, logits

    _, stepped = jax.lax.scan(one_step, cache, jnp.arange(1, MAX_LEN))
    return full, jnp.concatenate([first[:, None], stepped.transpose(1, 0, 2)], 1)

  def captions(options, incremental):
    return jax.jit(lambda params: decoding.decode_captions(
        model, decode_model, params, prefix, mask, bos_id=BOS, eos_id=EOS,
        max_len=MAX_LEN, options=options, incremental=incremental,
        rng=jax.random.PRNGKey(4)))(params)

  greedy = decoding.DecodeOptions(length_penalty=0.0)
  beam = decoding.DecodeOptions("beam", beam_width=3, length_penalty=0.6)
  out = {"logits": logits(params),
         "greedy_incremental": captions(greedy, True),
         "greedy_recompute": captions(greedy, False),
         "beam_incremental": captions(beam, True),
         "beam_recompute": captions(beam, False),
         "beam1": captions(dataclasses.replace(greedy, method="beam", beam_width=1),
                           True),
         "nucleus0": captions(dataclasses.replace(greedy, method="nucleus",
                                                  top_p=0.0), True)}
  return jax.tree.map(np.asarray, out)


@pytest.mark.slow  # compiles 7 decoders per mixer (shared by the three)
@pytest.mark.parametrize("mixer", ["sdict", "attention"])
def test_incremental_logits_match_full_recompute(mixer):
  full, incremental = decoded(mixer)["logits"]
  np.testing.assert_allclose(incremental, full, atol=2e-3, rtol=1e-3)


@pytest.mark.slow  # compiles 7 decoders per mixer (shared by the three)
@pytest.mark.parametrize("mixer", ["sdict", "attention"])
def test_incremental_and_recomputed_captions_agree(mixer):
  out = decoded(mixer)
  for method in ("greedy", "beam"):
    tokens, scores = out[f"{method}_incremental"]
    np.testing.assert_array_equal(tokens, out[f"{method}_recompute"][0])
    np.testing.assert_allclose(scores, out[f"{method}_recompute"][1], rtol=1e-4)
  assert len({tuple(row) for row in out["greedy_incremental"][0]}) > 1, "degenerate"


@pytest.mark.slow  # compiles 7 decoders per mixer (shared by the three)
@pytest.mark.parametrize("mixer", ["sdict", "attention"])
def test_beam_one_and_nucleus_zero_are_greedy_on_the_model(mixer):
  out = decoded(mixer)
  for name in ("beam1", "nucleus0"):
    np.testing.assert_array_equal(out[name][0], out["greedy_incremental"][0])
    np.testing.assert_allclose(out[name][1], out["greedy_incremental"][1], rtol=1e-5)


def test_fnet_decodes_by_recomputation():
  model, decode_model, params = tiny_models("fnet")
  prefix, mask = tiny_prefix()
  assert not decoding.has_cache(model)

  @jax.jit
  def run(params):
    decode = functools.partial(decoding.decode_captions, model, decode_model, params,
                               prefix, mask, bos_id=BOS, eos_id=EOS, max_len=MAX_LEN)
    return (decode(options=decoding.DecodeOptions(length_penalty=0.0)),
            decode(options=decoding.DecodeOptions("beam", beam_width=1,
                                                  length_penalty=0.0)),
            decoding.greedy_full(model, params, prefix, mask, bos_id=BOS,
                                 eos_id=EOS, max_len=MAX_LEN))

  (greedy_tokens, greedy_scores), (beam_tokens, beam_scores), old_greedy = run(params)
  assert greedy_tokens.shape == (3, MAX_LEN)
  np.testing.assert_array_equal(beam_tokens, greedy_tokens)
  np.testing.assert_allclose(beam_scores, greedy_scores, rtol=1e-5)
  np.testing.assert_array_equal(old_greedy, greedy_tokens)


def test_decode_options_reject_bad_values():
  with pytest.raises(ValueError, match="greedy"):
    decoding.DecodeOptions("sample")
  with pytest.raises(ValueError, match="top_p"):
    decoding.DecodeOptions("nucleus", top_p=1.5)
  with pytest.raises(ValueError, match="temperature"):
    decoding.DecodeOptions("nucleus", temperature=0.0)
