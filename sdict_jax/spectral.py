"""The spectral dictionary (SDict) token mixer, as pure JAX functions (SPEC §1, §4).

A sequence x ∈ R^{N×d} is projected by ridge least squares onto a small dictionary
of K complex-exponential atoms Φ[n, k] = exp(i ω_k n) / sqrt(N), each coefficient is
filtered (gain, phase bias, per-atom amplitude and phase), and the result is
synthesised back: SDict(x) = Re(Φ · diag(a e^{iψ}) · (A ⊙ e^{iΘ} ⊙ C)).

Everything real is done in real arithmetic: the real span of the atoms is
{cos ω_k n, sin ω_k n}, so the dictionary used for least squares is the real
N×2K matrix B = [cos θ | sin θ] / sqrt(N). Its real coefficients (p, q) give the
complex coefficient C = p − i q, whose modulus is the atom's amplitude in x and
whose argument is its phase.

Three implementations give the same numbers at different cost:
  dense  real GEMMs against B, closed-form (Dirichlet) Gram, one 2K×2K SPD
         inverse shared by the whole batch: O(N·K·d + K³), exact for any ω.
  fft    atoms on the DFT grid of the current length (ω = 2π m / N): the Gram is
         diagonal and the operator is rfft → multiply the K atoms' bins by their
         filter and all others by 0 → irfft: O(d · N log N). No gradient reaches ω
         (frozen grid atoms).
  pinv   the literal reference, jnp.linalg.pinv of the explicit dictionary.

The same code serves 1-D sequences (grid = (N,)) and 2-D patch grids
(grid = (H, W), position (u, v) in row-major order, atom phase ω_u u + ω_v v).
"""

import math
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from sdict_jax import numerics

Array = jax.Array
METHODS = ("dense", "fft", "pinv")


class Fit(NamedTuple):
  """What the least-squares analysis knows besides the output, at no extra cost.

  coefficients: C = p − iq [..., K, d] (before the filter).
  residual: ‖x − Re(Φ C)‖² per sequence [...] (the reconstruction error).
  noise_gain: tr(((G + ρI)⁻¹ G)²) per sequence (or scalar): white noise of
    variance σ² per entry leaks σ²·d·noise_gain energy through the projector.
  """
  coefficients: Array
  residual: Array
  noise_gain: Array


# ---------------------------------------------------------------------------
# The dictionary and its Gram matrix.
# ---------------------------------------------------------------------------


def grid_coordinates(grid: Sequence[int]) -> Array:
  """Integer coordinates [N, len(grid)] of a row-major grid, as float32."""
  axes = [jnp.arange(n, dtype=jnp.float32) for n in grid]
  mesh = jnp.meshgrid(*axes, indexing="ij")
  return jnp.stack([m.reshape(-1) for m in mesh], axis=-1)


def atom_phases(omega: Array, grid: Sequence[int]) -> Array:
  """θ[n, k] = <ω_k, position_n>: [N, K]; omega is [K, len(grid)]."""
  return grid_coordinates(grid) @ omega.astype(jnp.float32).T


def real_dictionary(omega: Array, grid: Sequence[int]) -> Array:
  """B = [cos θ | sin θ] / sqrt(N): [N, 2K], the real span of the atoms.

  Phases are reduced exactly in units of π before the sine and cosine, so an
  atom at ω = π (or 0) gets an exactly zero sine column. A float32 sin(π·n)
  would be ~1e-6 instead, and the ridge solve would amplify that noise by 1/ρ.
  """
  half_turns = atom_phases(omega / jnp.pi, grid)  # θ / π
  half_turns = half_turns - 2 * jnp.round(half_turns / 2)  # in [−1, 1]
  # Reflect |r| > ½ about ±1 so that r = ±1 maps to exactly 0.
  reflect = jnp.abs(half_turns) > 0.5
  reduced = jnp.where(reflect, jnp.sign(half_turns) - half_turns, half_turns)
  cos = jnp.where(reflect, -1.0, 1.0) * jnp.cos(jnp.pi * reduced)
  sin = jnp.sin(jnp.pi * reduced)
  return jnp.concatenate([cos, sin], -1) / math.sqrt(math.prod(grid))


def dirichlet_kernel(delta: Array, n: int) -> Array:
  """(1/n) Σ_{t<n} exp(i δ t) = e^{iδ(n−1)/2} sin(nδ/2) / (n sin(δ/2)).

  The kernel is 2π-periodic, so δ is first wrapped to (−π, π]; near δ = 0 (two
  atoms colliding) the ratio is replaced by its Taylor series so that values and
  gradients stay finite and exact.
  """
  delta = delta - 2 * jnp.pi * jnp.round(delta / (2 * jnp.pi))
  half = delta / 2
  near_zero = jnp.abs(n * half) < 1e-2
  safe_half = jnp.where(near_zero, 1.0, half)
  ratio = jnp.sin(n * safe_half) / (n * jnp.sin(safe_half))
  ratio = jnp.where(near_zero, 1 - (n * n - 1) * half * half / 6, ratio)
  return ratio * jnp.exp(1j * half * (n - 1))


def dirichlet_gram(omega: Array, grid: Sequence[int]) -> Array:
  """Complex Gram ΦᴴΦ [K, K] in closed form: G_jk = Π_axes D(ω_k − ω_j)."""
  return _separable_kernel(omega[None, :, :] - omega[:, None, :], grid)


def real_gram(omega: Array, grid: Sequence[int]) -> Array:
  """BᵀB [2K, 2K] in closed form, from the Dirichlet kernel at ω_k ∓ ω_j.

  cos·cos = ½ Re(D(Δ) + D(Σ)), sin·sin = ½ Re(D(Δ) − D(Σ)),
  cos_j·sin_k = ½ Im(D(Σ) + D(Δ)), with Δ = ω_k − ω_j and Σ = ω_k + ω_j.
  """
  diff = dirichlet_gram(omega, grid)
  total = _separable_kernel(omega[None, :, :] + omega[:, None, :], grid)
  cos_cos = 0.5 * jnp.real(diff + total)
  sin_sin = 0.5 * jnp.real(diff - total)
  cos_sin = 0.5 * jnp.imag(total + diff)
  top = jnp.concatenate([cos_cos, cos_sin], 1)
  bottom = jnp.concatenate([cos_sin.T, sin_sin], 1)
  return jnp.concatenate([top, bottom], 0)


def _separable_kernel(delta: Array, grid: Sequence[int]) -> Array:
  """Π_axis D_{grid[axis]}(delta[..., axis]): sums over a grid factorise."""
  kernel = jnp.ones(delta.shape[:-1], jnp.complex64)
  for axis, n in enumerate(grid):
    kernel = kernel * dirichlet_kernel(delta[..., axis], n)
  return kernel


# ---------------------------------------------------------------------------
# Analysis: ridge least squares for the real coefficients u = [p; q].
# ---------------------------------------------------------------------------


def _analysis(x, omega, grid, *, ridge, mask, method):
  """Least squares for u = [p; q] [..., 2K, d] (float32), with what it used.

  Returns (u, rows, residual, noise_gain): rows [..., N, 2K] is the dictionary
  each sequence sees (B, its padding rows zeroed and its atoms renormalised);
  residual and noise_gain as in Fit.

  Every product is batched over the sequences, even where the dictionary or the
  inverse is shared: XLA's CPU dot then multiplies row-major operands as they
  lie, where a shared [N, 2K] operand costs a transpose of x, the coefficients
  and y on the way in and out (and again in the backward pass). Broadcasting
  B and the inverse costs far less than those copies (one fusion layer, fwd+bwd:
  77 → 44–65 ms masked, 74 → 35 ms unmasked; docs/experiments.md, session 9).
  """
  basis = real_dictionary(omega, grid)  # [N, 2K], float32
  batch = x.shape[:-2]
  x32 = x.astype(jnp.float32)
  eye = jnp.eye(basis.shape[-1], dtype=jnp.float32)
  if mask is None:
    rows = jnp.broadcast_to(basis, batch + basis.shape)
    operand = x
    gram = basis.T @ basis if method == "pinv" else real_gram(omega, grid)
    energy = jnp.sum(x32**2, (-2, -1))
  else:
    # A mask changes the dictionary per example: rows of padding are zero and
    # the atoms are renormalised to unit norm over the valid positions.
    mask = mask.astype(jnp.float32)
    scale = jnp.sqrt(math.prod(grid) / jnp.maximum(mask.sum(-1), 1.0))
    rows = basis * (mask * scale[..., None])[..., None]
    operand = x32
    gram = jnp.einsum("...nj,...nk->...jk", rows, rows)
    energy = jnp.sum((x32 * mask[..., None])**2, (-2, -1))
  rhs = numerics.einsum_f32("...nk,...nd->...kd", rows.astype(operand.dtype), operand)
  # Atoms at ω ∈ {0, π} (per axis) have an identically zero sine column and so
  # no sine coefficient; the ridge solve would leave rounding noise there, which
  # a phase filter would rotate into the cosine channel.
  vanishes = jnp.all(basis == 0, axis=0)[:, None]  # [2K, 1]
  if method == "pinv":
    u = jnp.where(vanishes, 0.0, _pinv_solve(rows, x32, ridge))
    leakage = jnp.linalg.solve(gram + ridge * eye, gram)
    gram_u = jnp.einsum("...jk,...kd->...jd", gram, u)
  else:
    # One inverse M = (G + ρI)⁻¹ (shared by the batch without a mask, one per
    # example with one) serves the coefficients and the leakage MG = I − ρM.
    # Its GEMMs beat XLA's CPU triangular solves, which loop over the batch and
    # over batch × d right-hand sides.
    inverse = spd_inverse(gram + ridge * eye)
    leakage = eye - ridge * inverse
    inverse = jnp.where(vanishes, 0.0, inverse)  # those rows give u = 0
    inverse = jnp.broadcast_to(inverse, batch + inverse.shape[-2:])
    u = jnp.einsum("...jk,...kd->...jd", inverse, rhs)
    # The fast paths solve (G + ρI)u = Bᵀx, so Gu = Bᵀx − ρu costs no GEMM;
    # the reference keeps the literal product.
    gram_u = rhs - ridge * u
  # ‖x − Bu‖² = ‖x‖² − 2uᵀBᵀx + uᵀGu: the residual from K-space quantities.
  residual = jnp.maximum(
      energy - jnp.sum(u * (2 * rhs - gram_u), (-2, -1)), 0.0)
  noise_gain = jnp.sum(leakage * jnp.swapaxes(leakage, -1, -2), (-2, -1))
  return u, rows, residual, noise_gain


@jax.custom_vjp
def spd_inverse(matrix: Array) -> Array:
  """Inverse of symmetric positive definite matrices [..., n, n] via Cholesky.

  The gradient is the exact −M ḡ M (two GEMMs) rather than the derivative of
  the factorisation, whose triangular solves dominate on CPU.
  """
  factor = jnp.linalg.cholesky(matrix)
  eye = jnp.broadcast_to(jnp.eye(matrix.shape[-1], dtype=matrix.dtype), matrix.shape)
  factor_inverse = jax.lax.linalg.triangular_solve(factor, eye, left_side=True,
                                                   lower=True)
  return jnp.swapaxes(factor_inverse, -1, -2) @ factor_inverse


def _spd_inverse_forward(matrix):
  inverse = spd_inverse(matrix)
  return inverse, inverse


def _spd_inverse_backward(inverse, cotangent):
  return (-inverse @ cotangent @ inverse,)


spd_inverse.defvjp(_spd_inverse_forward, _spd_inverse_backward)


def _pinv_solve(basis, x, ridge):
  """The literal reference: pinv([B; √ρ I]) [x; 0] = (BᵀB + ρI)⁻¹ Bᵀ x."""
  def one(basis_2d, x_2d):
    two_k = basis_2d.shape[-1]
    augmented = jnp.concatenate(
        [basis_2d, jnp.sqrt(ridge) * jnp.eye(two_k, dtype=jnp.float32)], 0)
    padded = jnp.concatenate([x_2d, jnp.zeros((two_k, x_2d.shape[-1]))], 0)
    return jnp.linalg.pinv(augmented) @ padded

  batch_shape = x.shape[:-2]
  x_flat = x.reshape((-1,) + x.shape[-2:])
  if basis.ndim == 2:
    u = jax.vmap(lambda xi: one(basis, xi))(x_flat)
  else:
    u = jax.vmap(one)(basis.reshape((-1,) + basis.shape[-2:]), x_flat)
  return u.reshape(batch_shape + u.shape[-2:])


def _split(u):
  k = u.shape[-2] // 2
  return u[..., :k, :], u[..., k:, :]


# ---------------------------------------------------------------------------
# Spectral filter and synthesis.
# ---------------------------------------------------------------------------


def spectral_filter(gain=None, phase_bias=None, amp=None, phase=None):
  """W = a e^{iψ} · A e^{iΘ} as (real, imag) [K or K×d], or None for identity."""
  if gain is None and phase_bias is None and amp is None and phase is None:
    return None
  magnitude = 1.0
  angle = 0.0
  if gain is not None:
    magnitude = magnitude * gain
  if amp is not None:
    magnitude = magnitude * amp[:, None]
  if phase_bias is not None:
    angle = angle + phase_bias
  if phase is not None:
    angle = angle + phase[:, None]
  magnitude = jnp.asarray(magnitude, jnp.float32)
  angle = jnp.asarray(angle, jnp.float32)
  return magnitude * jnp.cos(angle), magnitude * jnp.sin(angle)


def _apply_filter(p, q, weights):
  """(p, q) of C = p − iq, mapped to those of W·C, all in real arithmetic."""
  if weights is None:
    return p, q
  w_re, w_im = weights
  return w_re * p + w_im * q, w_re * q - w_im * p


def _check(x, omega, grid, method, mask):
  if method not in METHODS:
    raise ValueError(f"method={method!r}; choose one of {METHODS}.")
  n = math.prod(grid)
  if x.shape[-2] != n:
    raise ValueError(
        f"x has {x.shape[-2]} tokens but the grid {tuple(grid)} has {n}.")
  if omega.ndim != 2 or omega.shape[-1] != len(grid):
    raise ValueError(f"omega must be [K, {len(grid)}], got {omega.shape}.")
  if mask is not None and mask.shape[-1] != n:
    raise ValueError(f"mask has length {mask.shape[-1]}, expected {n}.")
  if method == "fft" and mask is not None:
    raise ValueError("method='fft' needs an unpadded sequence (its frame is "
                     "tight only over the full grid); use method='dense' with "
                     "a mask.")


def _mix(x, omega, grid, *, gain, phase_bias, amp, phase, ridge, mask, method):
  _check(x, omega, grid, method, mask)
  weights = spectral_filter(gain, phase_bias, amp, phase)
  if method == "fft":
    return _fft_mix(x, omega, grid, weights, ridge)
  u, rows, residual, noise_gain = _analysis(
      x, omega, grid, ridge=ridge, mask=mask, method=method)
  p, q = _split(u)
  analysed = p - 1j * q
  p, q = _apply_filter(p, q, weights)
  coefficients = jnp.concatenate([p, q], -2).astype(x.dtype)
  y = numerics.einsum_f32("...nk,...kd->...nd", rows.astype(x.dtype), coefficients)
  return y.astype(x.dtype), Fit(analysed, residual, noise_gain)


def sdict_mix(x: Array, omega: Array, *, gain: Optional[Array] = None,
              phase_bias: Optional[Array] = None, amp: Optional[Array] = None,
              phase: Optional[Array] = None, ridge: float = 1e-3,
              mask: Optional[Array] = None, method: str = "dense",
              return_fit: bool = False):
  """SDict token mixing along axis −2 of x [..., N, d] with 1-D atoms ω [K].

  gain, phase_bias: [K, d]; amp, phase: [K]; mask: [..., N] (1 = valid).
  Padded positions neither influence valid outputs nor receive any (output 0).
  With return_fit, also returns the analysis as a `Fit` (coefficients C = p − iq
  before the filter, reconstruction residual, noise gain) at no extra cost.
  """
  y, fit = _mix(x, omega[:, None], (x.shape[-2],), gain=gain,
                phase_bias=phase_bias, amp=amp, phase=phase, ridge=ridge,
                mask=mask, method=method)
  return (y, fit) if return_fit else y


def sdict_mix_2d(x: Array, omega_xy: Array, *, grid: Sequence[int],
                 gain: Optional[Array] = None,
                 phase_bias: Optional[Array] = None,
                 amp: Optional[Array] = None, phase: Optional[Array] = None,
                 ridge: float = 1e-3, mask: Optional[Array] = None,
                 method: str = "dense", return_fit: bool = False):
  """SDict mixing over a row-major patch grid: x [..., H·W, d], ω [K, 2].

  omega_xy[:, 0] is in radians per patch along the first grid axis (rows, u),
  omega_xy[:, 1] along the second (columns, v). Otherwise as sdict_mix.
  """
  y, fit = _mix(x, omega_xy, tuple(grid), gain=gain, phase_bias=phase_bias,
                amp=amp, phase=phase, ridge=ridge, mask=mask, method=method)
  return (y, fit) if return_fit else y


# ---------------------------------------------------------------------------
# The FFT path: atoms on the DFT grid of the current length.
# ---------------------------------------------------------------------------


def grid_bins(omega: Array, grid: Sequence[int]) -> Array:
  """Nearest DFT bin of each atom: int32 [K, len(grid)], each in [0, n)."""
  sizes = jnp.asarray(grid, jnp.float32)
  bins = jnp.round(omega * sizes / (2 * jnp.pi)).astype(jnp.int32)
  return jnp.mod(bins, jnp.asarray(grid, jnp.int32))


def is_on_grid(omega: Array, grid: Sequence[int], atol: float = 1e-4) -> bool:
  """True when every atom sits on a distinct, non-conjugate DFT bin of grid.

  The fft path is exact only then (for eager checks, outside jit).
  """
  omega = jnp.asarray(omega, jnp.float32).reshape(len(omega), len(grid))
  bins = grid_bins(omega, grid)
  sizes = jnp.asarray(grid, jnp.float32)
  wrapped = omega - 2 * jnp.pi * bins / sizes
  wrapped = wrapped - 2 * jnp.pi * jnp.round(wrapped / (2 * jnp.pi))
  if not bool(jnp.all(jnp.abs(wrapped) < atol)):
    return False
  canonical = {_canonical(tuple(int(b) for b in row), grid) for row in bins}
  return len(canonical) == len(bins)


def _canonical(bin_index, grid):
  conj = tuple((-b) % n for b, n in zip(bin_index, grid))
  return min(bin_index, conj)


def _fft_mix(x, omega, grid, weights, ridge):
  """rfft → multiply by the atoms' filter (zero off their bins) → irfft.

  On the DFT grid the Gram is diagonal, so analysis, filter and synthesis are one
  diagonal multiplier on the spectrum: each atom's bin gets its filtered gain and
  every other bin 0. The multiplier is built from the parameters ([bins, d], the
  same for the whole batch), so the batch's spectrum is multiplied, not gathered
  and scattered back; only the coefficients reported in the Fit are gathered.
  """
  n_total = math.prod(grid)
  rows, cols = (1, grid[0]) if len(grid) == 1 else grid
  half = cols // 2 + 1
  batch_shape, d = x.shape[:-2], x.shape[-1]
  x_grid = x.astype(jnp.float32).reshape(batch_shape + (rows, cols, d))
  # The token axes only: a 1-D grid's extra row axis would cost a length-1 FFT.
  axes = (-2,) if len(grid) == 1 else (-3, -2)
  spectrum = jnp.fft.rfftn(x_grid, axes=axes).reshape(batch_shape + (rows * half, d))

  bins = grid_bins(omega, grid)
  row_bin, col_bin = (jnp.zeros_like(bins[:, 0]), bins[:, 0]) if len(
      grid) == 1 else (bins[:, 0], bins[:, 1])
  # rfft stores only columns 0..cols/2; an atom beyond is read and written
  # through its conjugate bin (for real x, X[−m] = conj X[m]).
  flipped = col_bin > cols // 2
  row_bin = jnp.where(flipped, (-row_bin) % rows, row_bin)
  col_bin = jnp.where(flipped, (-col_bin) % cols, col_bin)
  stored = row_bin * half + col_bin
  self_conjugate = ((2 * row_bin) % rows == 0) & ((2 * col_bin) % cols == 0)
  # Diagonal of BᵀB: ½ for cos² and sin², 1 for cos² at self-conjugate bins
  # (whose sine column is identically zero).
  norm = jnp.where(self_conjugate, 1.0, 0.5)[:, None]

  # Least squares, filter W and synthesis of one atom map its bin's X to
  # W·X / (2(g + ρ)), read through the conjugate bin when flipped.
  filt = 1.0 if weights is None else weights[0] + 1j * weights[1]  # [K] or [K, d]
  if jnp.ndim(filt) == 1:
    filt = filt[:, None]
  filt = jnp.broadcast_to(filt, (omega.shape[0], d)).astype(jnp.complex64)
  per_atom = jnp.where(flipped[:, None], jnp.conj(filt), filt) / (2 * (norm + ridge))
  multiplier = jnp.zeros((rows * half, d), jnp.complex64).at[stored].add(per_atom)
  # Columns 0 and cols/2 are not mirrored by irfft: the atom's conjugate bin
  # (X[−r] = conj X[r] there) gets the conjugate multiplier.
  edge = ((col_bin == 0) | (2 * col_bin == cols))[:, None]
  mirror = ((-row_bin) % rows) * half + col_bin
  multiplier = multiplier.at[mirror].add(jnp.where(edge, jnp.conj(per_atom), 0))
  y = jnp.fft.irfftn((spectrum * multiplier).reshape(batch_shape + (rows, half, d)),
                     s=tuple(grid), axes=axes)

  gathered = spectrum[..., stored, :]
  gathered = jnp.where(flipped[:, None], jnp.conj(gathered), gathered)
  coefficient = gathered / (math.sqrt(n_total) * (norm + ridge))  # C = p − iq
  # With a diagonal Gram g: ‖x − Bu‖² = ‖x‖² − Σ |X|²/N · (2/(g+ρ) − g/(g+ρ)²).
  captured = jnp.abs(gathered)**2 / n_total * (
      2 / (norm + ridge) - norm / (norm + ridge)**2)
  residual = jnp.maximum(jnp.sum(x_grid**2, (-3, -2, -1)) -
                         jnp.sum(captured, (-2, -1)), 0.0)
  columns = jnp.where(self_conjugate, 1.0, 2.0)  # real columns per atom
  noise_gain = jnp.sum(columns * (norm[:, 0] / (norm[:, 0] + ridge))**2)
  fit = Fit(coefficient, residual, noise_gain)
  return y.reshape(batch_shape + (n_total, d)).astype(x.dtype), fit


# ---------------------------------------------------------------------------
# Coefficients and the auxiliary reconstruction loss.
# ---------------------------------------------------------------------------


def _as_nd(omega, grid, n):
  if omega.ndim == 1:
    return omega[:, None], (n,)
  if grid is None:
    raise ValueError("2-D atoms (omega [K, 2]) need grid=(H, W).")
  return omega, tuple(grid)


def sdict_coefficients(x: Array, omega: Array, *, ridge: float = 1e-3,
                       mask: Optional[Array] = None,
                       grid: Optional[Sequence[int]] = None) -> Array:
  """Complex least-squares coefficients C = p − iq: [..., K, d] (complex64)."""
  omega, grid = _as_nd(omega, grid, x.shape[-2])
  _check(x, omega, grid, "dense", mask)
  _, fit = _mix(x, omega, grid, gain=None, phase_bias=None, amp=None,
                phase=None, ridge=ridge, mask=mask, method="dense")
  return fit.coefficients


def reconstruction_loss(x: Array, omega: Array, *, ridge: float = 1e-3,
                        mask: Optional[Array] = None,
                        noise: Optional[Array] = None,
                        grid: Optional[Sequence[int]] = None) -> Array:
  """Mean over sequences of ‖x − Re(Φ C)‖² / ‖x‖², C fitted to x + noise.

  With noise this is the denoising objective of SPEC §2: the atoms must explain
  the clean signal from a corrupted view of it.
  """
  noisy = x if noise is None else x + noise
  omega_nd, grid_nd = _as_nd(omega, grid, x.shape[-2])
  recon, _ = _mix(noisy, omega_nd, grid_nd, gain=None, phase_bias=None,
                  amp=None, phase=None, ridge=ridge, mask=mask, method="dense")
  error = (x - recon).astype(jnp.float32)
  x32 = x.astype(jnp.float32)
  if mask is not None:
    error = error * mask[..., None]
    x32 = x32 * mask[..., None]
  ratio = jnp.sum(error**2, (-2, -1)) / (jnp.sum(x32**2, (-2, -1)) + 1e-6)
  return jnp.mean(ratio)


def expected_denoising_loss(x: Array, fit: Fit, *, noise_std,
                            mask: Optional[Array] = None) -> Array:
  """E over ε ~ N(0, σ²) of reconstruction_loss(x, noise=ε), in closed form.

  E‖x − P(x + ε)‖² = ‖x − Px‖² + σ²·d·tr(((G + ρI)⁻¹G)²): the residual and the
  noise gain come with the layer's own analysis (`return_fit=True`), so the
  auxiliary loss costs no second projection. noise_std: σ per sequence [...]
  or scalar.
  """
  x32 = x.astype(jnp.float32)
  if mask is not None:
    x32 = x32 * mask[..., None]
  energy = jnp.sum(x32**2, (-2, -1))
  leaked = jnp.square(noise_std) * x.shape[-1] * fit.noise_gain
  return jnp.mean((fit.residual + leaked) / (energy + 1e-6))


# ---------------------------------------------------------------------------
# The causal variant: damped atoms as a long convolution or a recurrence.
# ---------------------------------------------------------------------------


def _complex_gain(gain):
  gain = jnp.asarray(gain)
  if jnp.iscomplexobj(gain):
    return jnp.real(gain).astype(jnp.float32), jnp.imag(gain).astype(
        jnp.float32)
  return gain.astype(jnp.float32), jnp.zeros_like(gain, jnp.float32)


def causal_kernel(omega: Array, decay: Array, gain: Array,
                  length: int) -> Array:
  """h[t, c] = Re Σ_k G_kc λ_k^t with λ_k = exp(−α_k + iω_k): [length, d]."""
  t = jnp.arange(length, dtype=jnp.float32)[:, None]
  envelope = jnp.exp(-decay.astype(jnp.float32) * t)
  phase = omega.astype(jnp.float32) * t
  gain_re, gain_im = _complex_gain(gain)
  return (envelope * jnp.cos(phase)) @ gain_re - (
      envelope * jnp.sin(phase)) @ gain_im


# Up to this length the causal convolution is a direct Toeplitz product; beyond
# it, an FFT. `python -m sdict_jax.bench mixers` on 2 CPU cores (d = 128,
# forward + backward) put the crossover near 100 tokens: direct 3-5x faster at
# N = 32-89, FFT 2x faster at N = 128 and 27x at 512.
DIRECT_CONVOLUTION_MAX_LENGTH = 96


def causal_sdict(x: Array, omega: Array, decay: Array, gain: Array, *,
                 skip: Optional[Array] = None, method: str = "auto") -> Array:
  """y = h * x (+ skip ⊙ x), causal along axis −2 of x [..., N, d].

  decay is α ≥ 0 [K] (the atoms' damping), gain G is [K, d], real or complex.
  method 'fft': a zero-padded FFT of size 2N, so the convolution is linear, not
  circular: y_t depends on x_{≤t} only. Cost O(d · N log N).
  method 'direct': the lower-triangular Toeplitz matrix of h applied per
  channel, O(d · N²) time and N²·d memory: faster for short sequences.
  'auto' picks direct up to DIRECT_CONVOLUTION_MAX_LENGTH tokens.
  """
  n = x.shape[-2]
  if method == "auto":
    method = "direct" if n <= DIRECT_CONVOLUTION_MAX_LENGTH else "fft"
  if method not in ("fft", "direct"):
    raise ValueError(f"method={method!r}; choose 'auto', 'fft' or 'direct'.")
  kernel = causal_kernel(omega, decay, gain, n)
  x32 = x.astype(jnp.float32)
  if method == "direct":
    lag = jnp.arange(n)[:, None] - jnp.arange(n)[None, :]  # t − s
    toeplitz = jnp.where(lag[..., None] >= 0, kernel[jnp.maximum(lag, 0)], 0.0)
    y = jnp.einsum("tsc,...sc->...tc", toeplitz, x32)
  else:
    spectrum = jnp.fft.rfft(x32, 2 * n, axis=-2) * jnp.fft.rfft(
        kernel, 2 * n, axis=0)
    y = jnp.fft.irfft(spectrum, 2 * n, axis=-2)[..., :n, :]
  if skip is not None:
    y = y + skip * x32
  return y.astype(x.dtype)


def causal_sdict_init(batch, omega: Array, d: int) -> Array:
  """Zero recurrent state s [*batch, K, d] (complex64) for streaming decoding."""
  batch = (batch,) if isinstance(batch, int) else tuple(batch)
  return jnp.zeros(batch + (omega.shape[0], d), jnp.complex64)


def causal_sdict_step(state: Array, x_t: Array, omega: Array, decay: Array,
                      gain: Array, *, skip: Optional[Array] = None):
  """One token of the recurrence: s ← λ s + x_t, y_t = Re Σ_k G_kc s_kc.

  x_t is [..., d]; cost O(K·d) whatever the position. Returns (state, y_t).
  """
  rate = jnp.exp(-decay.astype(jnp.float32) + 1j * omega.astype(jnp.float32))
  state = rate[:, None] * state + x_t[..., None, :].astype(jnp.float32)
  gain_re, gain_im = _complex_gain(gain)
  y = jnp.sum(gain_re * jnp.real(state) - gain_im * jnp.imag(state), axis=-2)
  if skip is not None:
    y = y + skip * x_t.astype(jnp.float32)
  return state, y.astype(x_t.dtype)


def causal_sdict_prefill(x: Array, omega: Array, decay: Array) -> Array:
  """State after consuming x [..., N, d]: s_k = Σ_t λ_k^{N−1−t} x_t.

  Equal to N calls of causal_sdict_step, as one GEMM (prompt prefill).
  """
  n = x.shape[-2]
  age = jnp.arange(n - 1, -1, -1, dtype=jnp.float32)[:, None]
  powers = jnp.exp(age * (-decay.astype(jnp.float32) +
                          1j * omega.astype(jnp.float32)))  # [N, K]
  return jnp.einsum("nk,...nd->...kd", powers,
                    x.astype(jnp.float32).astype(jnp.complex64))
