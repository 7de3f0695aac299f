"""Caption decoding from fused prefixes.

Incremental decoding runs the caption decoder one token per call with a 'cache':
the SDict decoder's cache is its recurrent state (O(K·d) per token, whatever the
position), attention's a key/value cache. `incremental=False` re-runs the causal
decoder over the whole buffer at every step instead: any mixer, O(L²).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


def init_cache(decode_model: nn.Module, params, prefix, prefix_mask, max_len: int):
  """Zeros of the decoding cache for this prefix and maximum caption length."""
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


def _finish(tokens, eos_id):
  """Zeroes everything after the first EOS (kept) of each row."""
  after_eos = jnp.cumsum(tokens == eos_id, axis=1) - (tokens == eos_id) > 0
  return jnp.where(after_eos, 0, tokens)


def greedy(decode_model, params, prefix, prefix_mask, *, bos_id: int, eos_id: int,
           max_len: int) -> jax.Array:
  """Greedy captions [B, max_len] (EOS included, 0 after it), incrementally."""
  logits, cache = prefill(decode_model, params, prefix, prefix_mask, bos_id, max_len)

  def body(carry, position):
    logits, cache = carry
    token = jnp.argmax(logits, -1).astype(jnp.int32)
    logits, cache = step(decode_model, params, cache, token, position)
    return (logits, cache), token

  # Tokens 1..max_len−1 are fed back at positions 1..max_len−1; the last is not.
  (logits, _), tokens = jax.lax.scan(body, (logits, cache), jnp.arange(1, max_len))
  last = jnp.argmax(logits, -1).astype(jnp.int32)[:, None]
  return _finish(jnp.concatenate([tokens.T, last], 1), eos_id)


def greedy_full(model, params, prefix, prefix_mask, *, bos_id: int, eos_id: int,
                max_len: int) -> jax.Array:
  """Greedy captions by re-running the decoder on the whole buffer each step.

  Valid for any causal decoder (the fnet baseline has no cache): the logits at
  position t depend on the buffer up to t only.
  """
  batch = prefix.shape[0]
  buffer = jnp.zeros((batch, max_len), jnp.int32).at[:, 0].set(bos_id)

  def body(t, buffer):
    logits = model.apply({"params": params}, buffer, jnp.arange(max_len), prefix,
                         prefix_mask, method=model.caption_logits)
    token = jnp.argmax(logits[:, t], -1).astype(jnp.int32)
    return jax.lax.dynamic_update_slice_in_dim(buffer, token[:, None],
                                               jnp.minimum(t + 1, max_len - 1), 1)

  buffer = jax.lax.fori_loop(0, max_len - 1, body, buffer)
  last = model.apply({"params": params}, buffer, jnp.arange(max_len), prefix,
                     prefix_mask, method=model.caption_logits)[:, -1]
  tokens = jnp.concatenate([buffer[:, 1:], jnp.argmax(last, -1)[:, None]], 1)
  return _finish(tokens.astype(jnp.int32), eos_id)
