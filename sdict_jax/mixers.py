"""Token mixers: thin linen modules around `spectral`, and the baselines.

Every mixer maps x [B, N, d] (with an optional validity mask [B, N]) to [B, N, d];
the model swaps them by name (`config.model.mixer`), so SDict, softmax attention
and FNet share every other line of the model.

  bidirectional: SDictMixer (1-D or 2-D atoms), AttentionMixer, FNetMixer
  causal:        CausalSDictMixer, CausalAttentionMixer, CausalFNetMixer

Causal mixers take `decode=True` for incremental decoding with a 'cache'
collection: the first call with the whole prefix fills it (prefill), then one
token per call. SDict's cache is its recurrent state (O(K·d), constant in the
position); attention's is a key/value cache.

SDict layers report their auxiliary losses with `sow` into the 'aux' collection:
'sparsity' (mean |C| over unit-norm atoms) and, in training, 'reconstruction'
(the denoising loss of SPEC §2, in closed-form expectation over the noise).
"""

import functools
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np

from sdict_jax import atom_init
from sdict_jax import sharding
from sdict_jax import spectral

Array = jax.Array


def _constant_init(values):
  values = np.asarray(values, np.float32)
  return lambda key, shape=None, dtype=jnp.float32: jnp.asarray(values, dtype)


class SDictMixer(nn.Module):
  """Bidirectional spectral-dictionary mixing (SPEC §1).

  Frequencies come from `omega_init` ([K] for 1-D, [K, 2] for 2-D atoms), or are
  passed at call time (`omega=`) when several layers share one dictionary.
  """
  omega_init: np.ndarray
  ridge: float = 1e-3
  method: str = "dense"
  recon_noise: float = 0.1

  @nn.compact
  def __call__(self, x, mask=None, *, grid=None, omega=None, filter_gate=None,
               train=False):
    """filter_gate: optional [B, K, d] multiplier of each example's gain (the
    question-conditioned filter A ⊙ σ(W q) of SDictVLM.fuse)."""
    if omega is None:
      omega = self.param("omega", _constant_init(self.omega_init))
    if self.method == "fft":
      omega = jax.lax.stop_gradient(omega)  # frozen grid atoms
    k, d = omega.shape[0], x.shape[-1]
    filters = dict(
        gain=self.param("gain", nn.initializers.ones, (k, d)),
        phase_bias=self.param("phase_bias", nn.initializers.zeros, (k, d)),
        amp=self.param("amp", nn.initializers.ones, (k,)),
        phase=self.param("phase", nn.initializers.zeros, (k,)))
    two_d = omega.ndim == 2
    method = "dense" if mask is not None and self.method == "fft" else self.method
    mix = functools.partial(spectral.sdict_mix_2d, grid=grid) if two_d else (
        spectral.sdict_mix)
    # Per sequence and channel: each device mixes its own block of batch and
    # channels, nothing crosses devices (the residual's partial sums are added).
    per_sequence = P("batch") if mask is not None else P()
    if filter_gate is not None and method == "fft":
      raise ValueError("A per-example filter gate needs model.sdict_method='dense'.")

    def mix_local(x, gain, phase_bias, omega, amp, phase, mask, gate):
      gain = gain if gate is None else gain * gate  # [K, d] or [B, K, d]
      return mix(x, omega, ridge=self.ridge, mask=mask, method=method,
                 return_fit=True, gain=gain, phase_bias=phase_bias, amp=amp,
                 phase=phase)

    y, fit = sharding.local_map(
        mix_local,
        (x, filters["gain"], filters["phase_bias"], omega, filters["amp"],
         filters["phase"], mask, filter_gate),
        (sharding.ACTIVATIONS, P(None, "channels"), P(None, "channels"), P(), P(),
         P(), P("batch", None), sharding.ACTIVATIONS),
        (sharding.ACTIVATIONS, spectral.Fit(
            sharding.ACTIVATIONS, sharding.SummedOverChannels(P("batch")),
            per_sequence)))
    self.sow("aux", "sparsity", jnp.mean(jnp.abs(fit.coefficients)))
    if train:
      # The denoising loss of SPEC §2 in expectation over the noise (exact, and
      # free: no second projection of a noisy copy).
      valid = None if mask is None else mask[..., None]
      count = x.shape[-2] if mask is None else jnp.maximum(mask.sum(-1), 1.0)
      valid_x = x.astype(jnp.float32) if valid is None else x * valid
      mean_square = jnp.sum(valid_x**2, (-2, -1)) / (count * x.shape[-1])
      # The noise is added, not learned: no gradient through its scale (and
      # none of sqrt's infinite slope at 0 for an all-padding sequence).
      noise_std = self.recon_noise * jnp.sqrt(jax.lax.stop_gradient(mean_square))
      self.sow("aux", "reconstruction", spectral.expected_denoising_loss(
          x, fit, noise_std=noise_std, mask=mask))
    return y


class CausalSDictMixer(nn.Module):
  """Gated causal SDict: y = W_o[(h * W_v x) ⊙ W_g x] with a damped-atom kernel h.

  Training runs the long convolution (FFT of size 2N); decoding runs the
  equivalent recurrence, O(K·d) per token whatever the position.
  """
  num_atoms: int
  decode: bool = False

  @nn.compact
  def __call__(self, x, mask=None, *, train=False):
    d, k = x.shape[-1], self.num_atoms
    omega = self.param("omega", _constant_init(atom_init.mel_frequencies(k)))
    # α = softplus(raw) from 1/64 to 1/2 token⁻¹ at init: a spread of memories.
    raw_decay = np.log(np.expm1(np.geomspace(1 / 64, 0.5, k)))
    decay = jax.nn.softplus(self.param("decay", _constant_init(raw_decay)))
    gain_init = nn.initializers.normal(1.0 / np.sqrt(k))
    gain = (self.param("gain_re", gain_init, (k, d)) +
            1j * self.param("gain_im", gain_init, (k, d)))
    skip = self.param("skip", nn.initializers.ones, (d,))
    dense = functools.partial(nn.Dense, d, use_bias=False, dtype=x.dtype)
    value, gate = dense(name="value")(x), dense(name="gate")(x)
    if mask is not None:
      value = value * mask[..., None]
    if not self.decode:
      # With the batch split over devices, the direct convolution's kernel
      # gradient would be an N²·d all-reduce (a sum over the batch of the
      # Toeplitz matrix's cotangent); the FFT's is N·d.
      method = "fft" if sharding.batch_is_split() else "auto"
      mixed = sharding.local_map(  # per sequence and channel, as above
          lambda value, omega, decay, gain, skip: spectral.causal_sdict(
              value, omega, decay, gain, skip=skip, method=method),
          (value, omega, decay, gain, skip),
          (sharding.ACTIVATIONS, P(), P(), P(None, "channels"), P("channels")),
          sharding.ACTIVATIONS)
    else:
      mixed = self._decode(value, omega, decay, gain, skip)
    return dense(name="out")(mixed * gate)

  def _decode(self, value, omega, decay, gain, skip):
    state = self.variable("cache", "state", spectral.causal_sdict_init,
                          value.shape[0], omega, value.shape[-1])
    if value.shape[1] > 1:  # prefill with the whole prompt
      state.value = spectral.causal_sdict_prefill(value, omega, decay)
      return spectral.causal_sdict(value, omega, decay, gain, skip=skip)
    state.value, y = spectral.causal_sdict_step(state.value, value[:, 0], omega,
                                                decay, gain, skip=skip)
    return y[:, None]


class AttentionMixer(nn.Module):
  """Softmax self-attention (XLA's dot_product_attention), bidirectional."""
  num_heads: int

  @nn.compact
  def __call__(self, x, mask=None, *, train=False, **unused):
    q, k, v = _qkv(x, self.num_heads)
    attn_mask = None if mask is None else (mask[:, None, None, :] > 0)
    y = jax.nn.dot_product_attention(q, k, v, mask=attn_mask)
    return _merge_heads(y, x.shape[-1])


class CausalAttentionMixer(nn.Module):
  """Causal softmax attention with a key/value cache for decoding."""
  num_heads: int
  decode: bool = False

  @nn.compact
  def __call__(self, x, mask=None, *, train=False):
    q, k, v = _qkv(x, self.num_heads)
    batch, length = x.shape[:2]
    valid = jnp.ones((batch, length), bool) if mask is None else mask > 0
    if not self.decode:
      y = jax.nn.dot_product_attention(q, k, v, mask=valid[:, None, None, :],
                                       is_causal=True)
      return _merge_heads(y, x.shape[-1])
    # The cache is created at the full decoding length by an init call.
    keys = self.variable("cache", "keys", jnp.zeros_like, k)
    values = self.variable("cache", "values", jnp.zeros_like, v)
    key_valid = self.variable("cache", "valid", jnp.zeros_like, valid)
    index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
    start = index.value
    keys.value = jax.lax.dynamic_update_slice_in_dim(keys.value, k, start, 1)
    values.value = jax.lax.dynamic_update_slice_in_dim(values.value, v, start, 1)
    key_valid.value = jax.lax.dynamic_update_slice_in_dim(key_valid.value, valid,
                                                          start, 1)
    index.value = start + length
    query_pos = start + jnp.arange(length)
    key_pos = jnp.arange(keys.value.shape[1])
    allowed = (key_pos[None, :] <= query_pos[:, None])[None, None]
    allowed = allowed & key_valid.value[:, None, None, :]
    y = jax.nn.dot_product_attention(q, keys.value, values.value, mask=allowed)
    return _merge_heads(y, x.shape[-1])


def _qkv(x, num_heads):
  d = x.shape[-1]
  if d % num_heads:
    raise ValueError(f"model.width={d} must be divisible by model.num_heads="
                     f"{num_heads}.")
  proj = functools.partial(nn.DenseGeneral, (num_heads, d // num_heads),
                           dtype=x.dtype)
  return proj(name="query")(x), proj(name="key")(x), proj(name="value")(x)


def _merge_heads(y, d):
  return nn.DenseGeneral(d, axis=(-2, -1), dtype=y.dtype, name="out")(y)


class FNetMixer(nn.Module):
  """FNet: Re(FFT over tokens and channels); parameter-free."""

  @nn.compact
  def __call__(self, x, mask=None, *, train=False, **unused):
    if mask is not None:
      x = x * mask[..., None].astype(x.dtype)
    y = jnp.real(jnp.fft.fft2(x.astype(jnp.float32), axes=(-2, -1)))
    return (y / np.sqrt(x.shape[-2])).astype(x.dtype)


class CausalFNetMixer(nn.Module):
  """FNet made causal: the real DFT matrix over tokens, lower-triangular part.

  Parameter-free like FNet; y_t = Σ_{s≤t} cos(2π t s / N) x_s, then the DFT over
  channels. It has no cache: decoding recomputes the prefix (O(N²) per token).
  """
  decode: bool = False

  @nn.compact
  def __call__(self, x, mask=None, *, train=False):
    if self.decode:
      raise ValueError("The fnet baseline has no incremental decoder; decode it "
                       "by recomputation: decoding.decode_captions(..., "
                       "incremental=False) or decoding.greedy_full.")
    n = x.shape[-2]
    if mask is not None:
      x = x * mask[..., None].astype(x.dtype)
    t = np.arange(n)
    matrix = np.tril(np.cos(2 * np.pi * np.outer(t, t) / n)) / np.sqrt(
        np.arange(1, n + 1))[:, None]
    y = jnp.einsum("ts,bsd->btd", jnp.asarray(matrix, jnp.float32),
                   x.astype(jnp.float32))
    return jnp.real(jnp.fft.fft(y, axis=-1)).astype(x.dtype)


MIXERS = ("sdict", "attention", "fnet")


def bidirectional(kind: str, *, omega_init, ridge, method, recon_noise,
                  num_heads) -> Callable[..., nn.Module]:
  """A constructor (name=...) for one bidirectional mixer of the given kind."""
  if kind == "sdict":
    return functools.partial(SDictMixer, omega_init=omega_init, ridge=ridge,
                             method=method, recon_noise=recon_noise)
  if kind == "attention":
    return functools.partial(AttentionMixer, num_heads=num_heads)
  if kind == "fnet":
    return FNetMixer
  raise ValueError(f"Unknown mixer {kind!r}; set model.mixer to one of {MIXERS}.")


def causal(kind: str, *, num_atoms, num_heads,
           decode: bool) -> Callable[..., nn.Module]:
  if kind == "sdict":
    return functools.partial(CausalSDictMixer, num_atoms=num_atoms, decode=decode)
  if kind == "attention":
    return functools.partial(CausalAttentionMixer, num_heads=num_heads,
                             decode=decode)
  if kind == "fnet":
    return functools.partial(CausalFNetMixer, decode=decode)
  raise ValueError(f"Unknown mixer {kind!r}; set model.mixer to one of {MIXERS}.")
