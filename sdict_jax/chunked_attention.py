"""Memory-efficient softmax attention: online softmax over key chunks.

The same function as `jax.nn.dot_product_attention` (layout [B, T, H, D], scale
1/sqrt(D), `is_causal` aligned top-left, a key padding mask), computed one
(query chunk × key chunk) block at a time with a running max and normaliser
(Milakov & Gimelshein 2018; Rabe & Staats 2021; FlashAttention). Nothing of
size T×S is ever materialised, in the forward or the backward pass:

  forward   per query chunk, a loop over key chunks carrying (max m, sum l,
            accumulator); saves only the output and the log-sum-exp per query.
  backward  a custom VJP that recomputes each block's probabilities from the
            saved log-sum-exp (p = exp(s − lse)) and accumulates dq, dk, dv.

Memory is O((T + S)·H·D + B·H·chunk²) instead of O(B·H·T·S). Under `is_causal`
blocks wholly above the diagonal are skipped (about half the work). It is the
memory-fair attention baseline of `python -m sdict_jax.bench mixers`.

A query row with no valid key at all (possible only when a padding mask hides
every key it may see) is not meaningful in either implementation and may differ.
"""

import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp

from sdict_jax import numerics

Array = jax.Array
# Finite, so that a fully masked block gives exp(0) rather than exp(−inf + inf).
_MASKED = -1e30


def chunked_attention(query: Array, key: Array, value: Array, *,
                      key_mask: Optional[Array] = None, is_causal: bool = False,
                      scale: Optional[float] = None,
                      chunk_size: int = 512) -> Array:
  """softmax(q kᵀ · scale + masks) v, chunk by chunk: [B, T, H, D].

  query [B, T, H, D], key and value [B, S, H, D]; key_mask [B, S] (True = valid
  key); is_causal: query t sees keys s ≤ t. Lengths need not divide chunk_size
  (inputs are padded and the padding masked out).
  """
  if query.ndim != 4 or key.shape != value.shape or key.ndim != 4:
    raise ValueError(f"Expected query [B, T, H, D] and key = value [B, S, H, D]; got "
                     f"{query.shape}, {key.shape}, {value.shape}.")
  batch, q_len, _, depth = query.shape
  k_len = key.shape[1]
  if key_mask is not None and key_mask.shape != (batch, k_len):
    raise ValueError(f"key_mask must be [B, S] = {(batch, k_len)}, got "
                     f"{key_mask.shape}.")
  scale = 1.0 / math.sqrt(depth) if scale is None else float(scale)
  chunk = min(chunk_size, max(q_len, k_len))
  padded = lambda n: -(-n // chunk) * chunk
  valid = (jnp.ones((batch, k_len), bool) if key_mask is None
           else key_mask.astype(bool))
  valid = jnp.pad(valid, ((0, 0), (0, padded(k_len) - k_len)))
  bias = jnp.where(valid, 0.0, _MASKED).astype(jnp.float32)

  def heads_first(x, length):  # [B, L, H, D] -> [B, H, L_padded, D]
    x = jnp.pad(x, ((0, 0), (0, padded(length) - length), (0, 0), (0, 0)))
    return x.transpose(0, 2, 1, 3)

  out = _attention(heads_first(query, q_len), heads_first(key, k_len),
                   heads_first(value, k_len), bias, is_causal, scale, chunk)
  return out.transpose(0, 2, 1, 3)[:, :q_len]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _attention(q, k, v, bias, causal, scale, chunk):
  return _forward(q, k, v, bias, causal, scale, chunk)[0]


def _block_logits(q_block, k_block, bias_block, i, j, causal, scale, chunk):
  """Scaled, masked logits [B, H, chunk, chunk] of query chunk i, key chunk j."""
  s = numerics.einsum_f32("bhqd,bhkd->bhqk", q_block, k_block) * scale
  s = s + bias_block[:, None, None, :]
  if causal:
    query_pos = i * chunk + jnp.arange(chunk)
    key_pos = j * chunk + jnp.arange(chunk)
    s = jnp.where(key_pos[None, :] <= query_pos[:, None], s, _MASKED)
  return s


def _chunk(x, index, chunk, axis=2):
  return jax.lax.dynamic_slice_in_dim(x, index * chunk, chunk, axis)


def _key_chunks_seen(i, num_key_chunks, causal):
  # Chunks are square, so query chunk i sees key chunks 0..i under causality.
  return jnp.minimum(i + 1, num_key_chunks) if causal else num_key_chunks


def _forward(q, k, v, bias, causal, scale, chunk):
  b, h, t, d = q.shape
  num_key_chunks = k.shape[2] // chunk

  def one_query_chunk(i):
    q_block = _chunk(q, i, chunk)

    def visit(j, carry):
      running_max, total, acc = carry
      s = _block_logits(q_block, _chunk(k, j, chunk), _chunk(bias, j, chunk, 1),
                        i, j, causal, scale, chunk)
      new_max = jnp.maximum(running_max, s.max(-1))
      p = jnp.exp(s - new_max[..., None])
      correction = jnp.exp(running_max - new_max)
      total = total * correction + p.sum(-1)
      acc = acc * correction[..., None] + numerics.einsum_f32(
          "bhqk,bhkd->bhqd", p.astype(v.dtype), _chunk(v, j, chunk))
      return new_max, total, acc

    init = (jnp.full((b, h, chunk), _MASKED, jnp.float32),
            jnp.zeros((b, h, chunk), jnp.float32),
            jnp.zeros((b, h, chunk, d), jnp.float32))
    running_max, total, acc = jax.lax.fori_loop(
        0, _key_chunks_seen(i, num_key_chunks, causal), visit, init)
    return (acc / total[..., None]).astype(q.dtype), running_max + jnp.log(total)

  out, lse = jax.lax.map(one_query_chunk, jnp.arange(t // chunk))
  # [chunks, B, H, chunk, ...] -> [B, H, T, ...]
  out = jnp.moveaxis(out, 0, 2).reshape(b, h, t, d)
  lse = jnp.moveaxis(lse, 0, 2).reshape(b, h, t)
  return out, lse


def _attention_fwd(q, k, v, bias, causal, scale, chunk):
  out, lse = _forward(q, k, v, bias, causal, scale, chunk)
  return out, (q, k, v, bias, out, lse)


def _attention_bwd(causal, scale, chunk, residuals, d_out):
  """FlashAttention-2 backward: one pass over key chunks, dq accumulated."""
  q, k, v, bias, out, lse = residuals
  num_query_chunks = q.shape[2] // chunk
  # Σ_d dO·O per query: the softmax Jacobian's diagonal correction.
  delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), -1)

  def one_key_chunk(d_query, j):
    k_block, v_block = _chunk(k, j, chunk), _chunk(v, j, chunk)
    bias_block = _chunk(bias, j, chunk, 1)

    def visit(i, carry):
      d_query, d_key, d_value = carry
      q_block, do_block = _chunk(q, i, chunk), _chunk(d_out, i, chunk)
      s = _block_logits(q_block, k_block, bias_block, i, j, causal, scale, chunk)
      p = jnp.exp(s - _chunk(lse, i, chunk)[..., None])
      d_value = d_value + numerics.einsum_f32(
          "bhqk,bhqd->bhkd", p.astype(do_block.dtype), do_block)
      dp = numerics.einsum_f32("bhqd,bhkd->bhqk", do_block, v_block)
      ds = p * (dp - _chunk(delta, i, chunk)[..., None]) * scale
      d_key = d_key + numerics.einsum_f32("bhqk,bhqd->bhkd", ds, q_block)
      dq_block = _chunk(d_query, i, chunk) + numerics.einsum_f32(
          "bhqk,bhkd->bhqd", ds, k_block)
      d_query = jax.lax.dynamic_update_slice_in_dim(d_query, dq_block, i * chunk, 2)
      return d_query, d_key, d_value

    zeros = jnp.zeros(k_block.shape, jnp.float32)
    first = j if causal else 0  # earlier query chunks cannot see key chunk j
    d_query, d_key, d_value = jax.lax.fori_loop(
        first, num_query_chunks, visit, (d_query, zeros, zeros))
    return d_query, (d_key, d_value)

  d_query, (d_key, d_value) = jax.lax.scan(
      one_key_chunk, jnp.zeros(q.shape, jnp.float32), jnp.arange(k.shape[2] // chunk))
  b, h, s, d = k.shape
  regroup = lambda x: jnp.moveaxis(x, 0, 2).reshape(b, h, s, d).astype(k.dtype)
  return (d_query.astype(q.dtype), regroup(d_key), regroup(d_value),
          jnp.zeros_like(bias))


_attention.defvjp(_attention_fwd, _attention_bwd)
