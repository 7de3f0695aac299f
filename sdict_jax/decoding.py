"""Caption decoding: greedy, beam search and nucleus sampling (SPEC §3).

The search algorithms are written against one step interface,

  step_fn(cache, tokens [B], position) -> (next-token logits [B, V], cache),

started by a prefill that returns the logits of the first caption token and the
cache. Two implementations of it:
  incremental  the decode=True model, one token per call with its 'cache'
               collection: SDict's recurrent state (O(K·d) per token, whatever
               the position), attention's key/value cache;
  recompute    re-runs the causal decoder over a token buffer at every step:
               any mixer (the fnet baseline has no cache), O(L²).
The cache is any pytree whose leaves are batch-major, except scalars (e.g.
attention's write 'index'), which all rows share; beam search reorders it with
`reorder_cache`.

Every search returns tokens [B, max_len]: the generated caption, EOS included,
0 after it (beam search: [B, W, max_len], best first), and its score, the
log-probability normalised by the GNMT length penalty
  score = log P(tokens) / ((5 + length) / 6) ** length_penalty,
where length counts the tokens up to and including EOS. All of it jits: the
loops are `lax.while_loop`s that stop when every row has finished.

Forced tokens (`forced_decoder`, the `forced` argument of `decode_captions`) make
every search emit given tokens at given positions, e.g. a prompt
"question: … answer:" right after BOS for zero-shot VQA: the step interface's
logits there become a one-hot choice, so the same loops decode prompted
continuations.
"""

import dataclasses
import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Cache = Any
StepFn = Callable[[Cache, Array, Array], tuple[Array, Cache]]

# Log-probability of beams that do not exist (yet); finite, so sums stay finite.
_IMPOSSIBLE = -1e9
METHODS = ("greedy", "beam", "nucleus")


# ---------------------------------------------------------------------------
# The step interface for SDictVLM: incremental and by recomputation.
# ---------------------------------------------------------------------------


def init_cache(decode_model: nn.Module, params, prefix, prefix_mask, max_len: int):
  """Zeros of the decoding cache for this prefix and maximum caption length."""
  del params  # the cache's shapes do not depend on the parameters' values
  batch = prefix.shape[0]
  shapes = jax.eval_shape(
      functools.partial(decode_model.init, method=decode_model.caption_logits),
      jax.random.PRNGKey(0), jnp.zeros((batch, max_len), jnp.int32),
      jnp.arange(max_len), prefix, prefix_mask)
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes.get("cache", {}))


def prefill(decode_model, params, prefix, prefix_mask, bos_id: int, max_len: int):
  """Runs prefix ⊕ [BOS]: (logits of the first caption token [B, V], cache)."""
  cache = init_cache(decode_model, params, prefix, prefix_mask, max_len)
  bos = jnp.full((prefix.shape[0], 1), bos_id, jnp.int32)
  logits, variables = decode_model.apply(
      {"params": params, "cache": cache}, bos, jnp.arange(1), prefix, prefix_mask,
      method=decode_model.caption_logits, mutable=["cache"])
  return logits[:, -1], variables["cache"]


def step(decode_model, params, cache, tokens, position):
  """One token per sequence [B] at `position`: (next-token logits [B, V], cache)."""
  logits, variables = decode_model.apply(
      {"params": params, "cache": cache}, tokens[:, None], position[None],
      method=decode_model.caption_logits, mutable=["cache"])
  return logits[:, -1], variables["cache"]


def incremental_decoder(decode_model, params, prefix, prefix_mask, *, bos_id: int,
                        max_len: int) -> tuple[Array, Cache, StepFn]:
  """(first logits, cache, step_fn) of a decode=True model (sdict, attention)."""
  logits, cache = prefill(decode_model, params, prefix, prefix_mask, bos_id, max_len)
  step_fn = lambda cache, tokens, position: step(decode_model, params, cache, tokens,
                                                 jnp.asarray(position))
  return logits, cache, step_fn


def recompute_decoder(model, params, prefix, prefix_mask, *, bos_id: int,
                      max_len: int) -> tuple[Array, Cache, StepFn]:
  """(first logits, cache, step_fn) re-running a decode=False model each step.

  The cache is the input buffer [B, max_len] (BOS, then the tokens fed so far,
  zeros after) with the prefix; the logits at position t depend on the buffer up
  to t only, so the zeros ahead do not matter.
  """
  batch = prefix.shape[0]
  buffer = jnp.zeros((batch, max_len), jnp.int32).at[:, 0].set(bos_id)

  def logits_at(cache, position):
    logits = model.apply({"params": params}, cache["buffer"], jnp.arange(max_len),
                         cache["prefix"], cache["prefix_mask"],
                         method=model.caption_logits)
    return jax.lax.dynamic_index_in_dim(logits, position, 1, keepdims=False)

  def step_fn(cache, tokens, position):
    buffer = jax.lax.dynamic_update_slice_in_dim(
        cache["buffer"], tokens[:, None].astype(jnp.int32), position, 1)
    cache = {**cache, "buffer": buffer}
    return logits_at(cache, position), cache

  cache = {"buffer": buffer, "prefix": prefix, "prefix_mask": prefix_mask}
  return logits_at(cache, 0), cache, step_fn


def forced_decoder(first_logits: Array, cache: Cache, step_fn: StepFn,
                   forced: Array) -> tuple[Array, Cache, StepFn]:
  """The step interface with tokens forced: (first logits, cache, step_fn).

  `forced` [B, max_len] holds, per row, the token every search must emit at each
  output position (output t is fed back as the decoder input at position t + 1),
  and 0 (PAD, never emitted) where the search chooses freely. At a forced position
  the logits become log-one-hot: the forced token costs log 1 = 0, so a score is
  the log-probability of the free tokens given the forced ones (the length in the
  GNMT penalty still counts both). Rows may be forced to different lengths; the
  logits may have k·B rows (beam search's B·W, beams of a row contiguous).
  """
  forced = jnp.asarray(forced, jnp.int32)

  def force(logits, position):
    token = jax.lax.dynamic_index_in_dim(forced, position, 1, keepdims=False)
    token = jnp.repeat(token, logits.shape[0] // forced.shape[0])
    one_hot = jnp.where(jnp.arange(logits.shape[-1]) == token[:, None], 0.0,
                        _IMPOSSIBLE).astype(logits.dtype)
    return jnp.where((token > 0)[:, None], one_hot, logits)

  def forced_step(cache, tokens, position):
    logits, cache = step_fn(cache, tokens, position)
    return force(logits, position), cache

  return force(first_logits, 0), cache, forced_step


# ---------------------------------------------------------------------------
# Search algorithms on the step interface.
# ---------------------------------------------------------------------------


def length_normalised(logprob: Array, length: Array, length_penalty: float) -> Array:
  """GNMT: logprob / ((5 + length) / 6) ** α; α = 0 leaves logprob unchanged."""
  return logprob / ((5.0 + length) / 6.0) ** length_penalty


def nucleus_logits(logits: Array, top_p: float) -> Array:
  """Logits with every token outside the top-p nucleus set to -inf.

  The nucleus is the smallest set of most likely tokens whose probability
  reaches top_p; it always holds the most likely token, so top_p = 0 is greedy.
  Tokens tied with the least likely member are kept too.
  """
  probs = jax.nn.softmax(logits.astype(jnp.float32), -1)
  sorted_probs = jnp.sort(probs, -1)[..., ::-1]
  mass_before = jnp.cumsum(sorted_probs, -1) - sorted_probs
  size = jnp.maximum(jnp.sum(mass_before < top_p, -1, keepdims=True), 1)
  threshold = jnp.take_along_axis(sorted_probs, size - 1, -1)
  return jnp.where(probs >= threshold, logits, -jnp.inf)


def _single_path(first_logits, cache, step_fn, pick, *, eos_id, max_len,
                 length_penalty):
  """One token per row and step, chosen by pick(logits, t); shared by greedy and
  sampling. Finished rows emit 0 (and feed 0, which no other row sees)."""
  batch = first_logits.shape[0]

  def emit(carry, logits, t):
    tokens, finished, logprob, length = carry
    token = jnp.where(finished, 0, pick(logits, t)).astype(jnp.int32)
    token_logprob = jnp.take_along_axis(jax.nn.log_softmax(logits.astype(jnp.float32)),
                                        token[:, None], -1)[:, 0]
    logprob = logprob + jnp.where(finished, 0.0, token_logprob)
    length = length + (~finished).astype(jnp.int32)
    tokens = tokens.at[:, t].set(token)
    return (tokens, finished | (token == eos_id), logprob, length), token

  paths = (jnp.zeros((batch, max_len), jnp.int32), jnp.zeros(batch, bool),
           jnp.zeros(batch, jnp.float32), jnp.zeros(batch, jnp.int32))
  paths, token = emit(paths, first_logits, 0)

  def unfinished(state):
    t, paths, _, _ = state
    return (t < max_len) & ~jnp.all(paths[1])

  def body(state):
    t, paths, cache, token = state
    logits, cache = step_fn(cache, token, t)  # the token chosen at t−1 enters at t
    paths, token = emit(paths, logits, t)
    return t + 1, paths, cache, token

  _, (tokens, _, logprob, length), _, _ = jax.lax.while_loop(
      unfinished, body, (jnp.int32(1), paths, cache, token))
  return tokens, length_normalised(logprob, length, length_penalty)


def greedy_search(first_logits: Array, cache: Cache, step_fn: StepFn, *, eos_id: int,
                  max_len: int, length_penalty: float = 0.6) -> tuple[Array, Array]:
  """The most likely token at every step: (tokens [B, max_len], scores [B])."""
  pick = lambda logits, t: jnp.argmax(logits, -1)
  return _single_path(first_logits, cache, step_fn, pick, eos_id=eos_id,
                      max_len=max_len, length_penalty=length_penalty)


def nucleus_sampling(first_logits: Array, cache: Cache, step_fn: StepFn, rng: Array, *,
                     eos_id: int, max_len: int, top_p: float = 0.9,
                     temperature: float = 1.0,
                     length_penalty: float = 0.6) -> tuple[Array, Array]:
  """Samples from the top-p nucleus of softmax(logits / temperature).

  Returns (tokens [B, max_len], scores [B]); the score is the model's own
  (temperature 1, unrestricted) length-normalised log-probability of the sample,
  so that samples can be ranked against each other and against beam search.
  """
  _check_sampling(top_p, temperature)

  def pick(logits, t):
    tempered = logits.astype(jnp.float32) / temperature
    return jax.random.categorical(jax.random.fold_in(rng, t),
                                  nucleus_logits(tempered, top_p), -1)

  return _single_path(first_logits, cache, step_fn, pick, eos_id=eos_id,
                      max_len=max_len, length_penalty=length_penalty)


def reorder_cache(cache: Cache, rows: Array) -> Cache:
  """cache rows [N, ...] → rows[i] for each i; scalar leaves are shared, kept."""
  num_rows = rows.shape[0]

  def gather(leaf):
    if leaf.ndim == 0:
      return leaf
    if leaf.shape[0] != num_rows:
      raise ValueError(f"A cache leaf of shape {leaf.shape} is neither a scalar nor "
                       f"batch-major with {num_rows} rows; beam search cannot reorder "
                       f"it. Keep the batch axis first in decoding caches.")
    return jnp.take(leaf, rows, axis=0)

  return jax.tree.map(gather, cache)


def _repeat_rows(tree, times: int):
  return jax.tree.map(lambda x: jnp.repeat(x, times, axis=0) if x.ndim else x, tree)


def beam_search(first_logits: Array, cache: Cache, step_fn: StepFn, *, eos_id: int,
                max_len: int, beam_width: int,
                length_penalty: float = 0.6) -> tuple[Array, Array]:
  """GNMT-style beam search: (tokens [B, W, max_len], scores [B, W]), best first.

  Each step extends the W live hypotheses by every token and keeps the 2W most
  likely extensions. Those among the first W that end in EOS (or reach max_len)
  join the W finished hypotheses, ranked by length-normalised score; the W most
  likely that do not end stay alive. The search stops when no live hypothesis
  can still beat the worst finished one (log-probabilities only fall as
  hypotheses grow). Width 1 with length_penalty 0 is greedy search.
  """
  if beam_width < 1:
    raise ValueError(f"beam_width={beam_width}; need at least 1.")
  batch, vocab = first_logits.shape
  width = beam_width
  normalised = lambda logprob, length: length_normalised(logprob, length,
                                                         length_penalty)
  # All W rows start from the one prefill; rows 1.. are placeholders (impossible).
  cache = _repeat_rows(cache, width)
  logits = jnp.repeat(first_logits, width, axis=0)
  start = {
      "alive_logprob": jnp.tile(
          jnp.array([0.0] + [_IMPOSSIBLE] * (width - 1), jnp.float32), (batch, 1)),
      "alive_tokens": jnp.zeros((batch, width, max_len), jnp.int32),
      "finished_scores": jnp.full((batch, width), _IMPOSSIBLE, jnp.float32),
      "finished_tokens": jnp.zeros((batch, width, max_len), jnp.int32),
  }

  def extend(beams, logits, t):
    """Chooses the tokens at position t: (beams, source row, token) per beam."""
    logprobs = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(
        batch, width, vocab)
    candidates = beams["alive_logprob"][..., None] + logprobs
    logprob, flat = jax.lax.top_k(candidates.reshape(batch, width * vocab), 2 * width)
    parent, token = flat // vocab, (flat % vocab).astype(jnp.int32)
    tokens = jnp.take_along_axis(beams["alive_tokens"], parent[..., None], 1)
    tokens = tokens.at[:, :, t].set(token)
    # An extension finishes only if it is among the W best (so width 1 is
    # greedy); the next W make sure W hypotheses stay alive after EOS.
    ends = ((token == eos_id) | (t == max_len - 1)) & (jnp.arange(2 * width) < width)
    pool_scores = jnp.concatenate(
        [beams["finished_scores"],
         jnp.where(ends, normalised(logprob, t + 1), _IMPOSSIBLE)], 1)
    pool_tokens = jnp.concatenate([beams["finished_tokens"], tokens], 1)
    finished_scores, keep = jax.lax.top_k(pool_scores, width)
    alive_logprob, live = jax.lax.top_k(
        jnp.where(token == eos_id, _IMPOSSIBLE, logprob), width)
    beams = {
        "alive_logprob": alive_logprob,
        "alive_tokens": jnp.take_along_axis(tokens, live[..., None], 1),
        "finished_scores": finished_scores,
        "finished_tokens": jnp.take_along_axis(pool_tokens, keep[..., None], 1),
    }
    source_row = (jnp.arange(batch)[:, None] * width +
                  jnp.take_along_axis(parent, live, 1)).reshape(-1)
    return beams, source_row, jnp.take_along_axis(token, live, 1).reshape(-1)

  def searching(state):
    t, beams = state[0], state[1]
    # The best live score any extension can reach: its log-probability can only
    # fall, and the penalty is monotone in the length, so check both ends.
    best_alive = beams["alive_logprob"][:, 0]
    reachable = jnp.maximum(normalised(best_alive, t + 1),
                            normalised(best_alive, max_len))
    settled = beams["finished_scores"][:, -1] >= reachable
    return (t < max_len) & ~jnp.all(settled)

  def body(state):
    t, beams, source_row, token, cache = state
    logits, cache = step_fn(reorder_cache(cache, source_row), token, t)
    beams, source_row, token = extend(beams, logits, t)
    return t + 1, beams, source_row, token, cache

  beams, source_row, token = extend(start, logits, 0)
  _, beams, _, _, _ = jax.lax.while_loop(
      searching, body, (jnp.int32(1), beams, source_row, token, cache))
  return beams["finished_tokens"], beams["finished_scores"]


def _check_sampling(top_p, temperature):
  if not 0.0 <= top_p <= 1.0:
    raise ValueError(f"top_p={top_p}; use a value in [0, 1] (0 is greedy).")
  if temperature <= 0:
    raise ValueError(f"temperature={temperature}; use a value > 0.")


# ---------------------------------------------------------------------------
# Captions of a model, by a chosen method.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
  """How captions are decoded (the --decode flags of evaluate and predict)."""
  method: str = "greedy"  # one of METHODS
  beam_width: int = 4
  length_penalty: float = 0.6  # GNMT α; 0 ranks by raw log-probability
  top_p: float = 0.9
  temperature: float = 1.0

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(f"Decoding method {self.method!r}: use one of {METHODS}.")
    if self.beam_width < 1:
      raise ValueError(f"beam_width={self.beam_width}; need at least 1.")
    _check_sampling(self.top_p, self.temperature)


def has_cache(model: nn.Module) -> bool:
  """Whether the model's caption decoder decodes incrementally (not fnet)."""
  return model.mixer != "fnet"


def decode_captions(model, decode_model, params, prefix, prefix_mask, *, bos_id: int,
                    eos_id: int, max_len: int,
                    options: DecodeOptions = DecodeOptions(),
                    rng: Optional[Array] = None,
                    incremental: Optional[bool] = None,
                    forced: Optional[Array] = None) -> tuple[Array, Array]:
  """Captions [B, max_len] and their scores [B] for fused prefixes [B, P, d].

  `model` is the decode=False model (recomputation), `decode_model` the
  decode=True one (incremental); `incremental` defaults to `has_cache(model)`.
  Beam search returns its best hypothesis; nucleus sampling needs `rng`.
  `forced` [B, max_len] (see `forced_decoder`): tokens every method emits at the
  given positions, 0 where it chooses; the returned tokens include them.
  """
  if forced is not None and forced.shape != (prefix.shape[0], max_len):
    raise ValueError(f"forced tokens of shape {forced.shape}; need [batch, max_len] = "
                     f"{(prefix.shape[0], max_len)} (0 where not forced).")
  incremental = has_cache(model) if incremental is None else incremental
  if incremental:
    start = incremental_decoder(decode_model, params, prefix, prefix_mask,
                                bos_id=bos_id, max_len=max_len)
  else:
    start = recompute_decoder(model, params, prefix, prefix_mask, bos_id=bos_id,
                              max_len=max_len)
  if forced is not None:
    start = forced_decoder(*start, forced)
  common = dict(eos_id=eos_id, max_len=max_len, length_penalty=options.length_penalty)
  if options.method == "greedy":
    return greedy_search(*start, **common)
  if options.method == "beam":
    tokens, scores = beam_search(*start, beam_width=options.beam_width, **common)
    return tokens[:, 0], scores[:, 0]
  if rng is None:
    raise ValueError("Nucleus sampling needs an rng key.")
  return nucleus_sampling(*start, rng, top_p=options.top_p,
                          temperature=options.temperature, **common)


def greedy(decode_model, params, prefix, prefix_mask, *, bos_id: int, eos_id: int,
           max_len: int) -> Array:
  """Greedy captions [B, max_len] (EOS included, 0 after it), incrementally."""
  start = incremental_decoder(decode_model, params, prefix, prefix_mask,
                              bos_id=bos_id, max_len=max_len)
  return greedy_search(*start, eos_id=eos_id, max_len=max_len)[0]


def greedy_full(model, params, prefix, prefix_mask, *, bos_id: int, eos_id: int,
                max_len: int) -> Array:
  """Greedy captions by re-running the (decode=False) decoder each step.

  Valid for any causal decoder (the fnet baseline has no cache): the logits at
  position t depend on the buffer up to t only.
  """
  start = recompute_decoder(model, params, prefix, prefix_mask, bos_id=bos_id,
                            max_len=max_len)
  return greedy_search(*start, eos_id=eos_id, max_len=max_len)[0]
