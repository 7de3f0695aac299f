"""The chunked (online-softmax) attention is XLA's softmax attention, in less memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdict_jax.chunked_attention import chunked_attention


def _inputs(batch, q_len, k_len, heads, depth, seed=0):
  keys = jax.random.split(jax.random.PRNGKey(seed), 4)
  q = jax.random.normal(keys[0], (batch, q_len, heads, depth))
  k = jax.random.normal(keys[1], (batch, k_len, heads, depth))
  v = jax.random.normal(keys[2], (batch, k_len, heads, depth))
  cotangent = jax.random.normal(keys[3], (batch, q_len, heads, depth))
  return q, k, v, cotangent


def _value_and_grads(attention, q, k, v, cotangent):
  loss = lambda q, k, v: jnp.sum(attention(q, k, v) * cotangent)
  out = attention(q, k, v)
  return out, jax.grad(loss, argnums=(0, 1, 2))(q, k, v)


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_values_and_grads_equal_xla_attention(is_causal, padded):
  # 70 tokens in chunks of 16: a ragged last chunk, so the internal padding
  # and the causal diagonal both cross chunk boundaries.
  q, k, v, cotangent = _inputs(2, 70, 70, 3, 8)
  key_mask = (jnp.arange(70)[None] < jnp.array([[45], [70]])) if padded else None
  xla_mask = None if key_mask is None else key_mask[:, None, None, :]
  reference = lambda q, k, v: jax.nn.dot_product_attention(
      q, k, v, mask=xla_mask, is_causal=is_causal)
  chunked = lambda q, k, v: chunked_attention(
      q, k, v, key_mask=key_mask, is_causal=is_causal, chunk_size=16)
  expected, expected_grads = _value_and_grads(reference, q, k, v, cotangent)
  got, got_grads = _value_and_grads(chunked, q, k, v, cotangent)
  np.testing.assert_allclose(got, expected, atol=2e-5, rtol=0)
  for name, g, e in zip("qkv", got_grads, expected_grads):
    np.testing.assert_allclose(g, e, atol=2e-5, rtol=0, err_msg=f"d{name}")


def test_cross_attention_with_different_lengths_equals_xla():
  q, k, v, cotangent = _inputs(1, 20, 53, 2, 4, seed=1)
  key_mask = jnp.arange(53)[None] < 40
  reference = lambda q, k, v: jax.nn.dot_product_attention(
      q, k, v, mask=key_mask[:, None, None, :])
  chunked = lambda q, k, v: chunked_attention(q, k, v, key_mask=key_mask,
                                              chunk_size=8)
  expected, expected_grads = _value_and_grads(reference, q, k, v, cotangent)
  got, got_grads = _value_and_grads(chunked, q, k, v, cotangent)
  np.testing.assert_allclose(got, expected, atol=2e-5, rtol=0)
  for g, e in zip(got_grads, expected_grads):
    np.testing.assert_allclose(g, e, atol=2e-5, rtol=0)


def test_custom_scale_is_applied_like_xla():
  q, k, v, _ = _inputs(1, 33, 33, 1, 8, seed=2)
  expected = jax.nn.dot_product_attention(q, k, v, scale=0.05)
  got = chunked_attention(q, k, v, scale=0.05, chunk_size=8)
  np.testing.assert_allclose(got, expected, atol=2e-5, rtol=0)


def _temp_bytes(attention, n):
  x = jnp.zeros((1, n, 1, 32))
  loss = lambda q, k, v: jnp.sum(attention(q, k, v))
  compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(x, x, x).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_training_memory_grows_linearly_not_quadratically():
  # Quadrupling N quadruples the chunked fwd+bwd temporaries (no N×N array),
  # where XLA's attention grows 16× with its N×N logits.
  chunked = lambda q, k, v: chunked_attention(q, k, v, chunk_size=128)
  chunked_growth = _temp_bytes(chunked, 2048) / _temp_bytes(chunked, 512)
  xla_growth = (_temp_bytes(jax.nn.dot_product_attention, 2048) /
                _temp_bytes(jax.nn.dot_product_attention, 512))
  assert chunked_growth < 6, chunked_growth
  assert xla_growth > 10, xla_growth
  assert _temp_bytes(chunked, 2048) * 10 < _temp_bytes(
      jax.nn.dot_product_attention, 2048)


def test_mismatched_key_mask_is_a_clear_error():
  q, k, v, _ = _inputs(2, 8, 8, 1, 4)
  with pytest.raises(ValueError, match="key_mask must be"):
    chunked_attention(q, k, v, key_mask=jnp.ones((2, 9), bool))
