"""Properties of the SDict operator (SPEC §1): each test is named for what it proves."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdict_jax import spectral

ATOL = 2e-5  # float32, signals of unit scale


def _normal(seed, shape):
  return jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float32)


def _filter_params(seed, k, d):
  return dict(gain=1 + 0.3 * _normal(seed, (k, d)),
              phase_bias=_normal(seed + 1, (k, d)),
              amp=1 + 0.2 * _normal(seed + 2, (k,)),
              phase=_normal(seed + 3, (k,)))


def _close(a, b, atol=ATOL):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=0)


# Distinct, non-conjugate DFT bins, including both self-conjugate edges (0, N/2)
# and atoms given as negative frequencies or beyond Nyquist.
GRID_BINS_1D = [0, 1, 3, 7, 10, 31, 32, -5, 40]


@pytest.mark.parametrize("n", [64, 100])
def test_fft_dense_pinv_agree_on_grid_1d(n):
  bins = [b for b in GRID_BINS_1D if 2 * abs(b) <= n and b != 32] + [n // 2]
  omega = 2 * jnp.pi * jnp.asarray(bins, jnp.float32) / n
  assert spectral.is_on_grid(omega, (n,))
  x = _normal(0, (3, n, 8))
  params = _filter_params(1, len(bins), 8)
  ys = {m: spectral.sdict_mix(x, omega, method=m, **params)
        for m in spectral.METHODS}
  _close(ys["dense"], ys["pinv"], atol=1e-4)
  _close(ys["fft"], ys["pinv"], atol=1e-4)


def test_fft_dense_pinv_agree_on_grid_2d():
  grid = (6, 8)
  bins = np.array([[0, 1], [1, 2], [3, 0], [5, 4], [0, 4], [3, 7], [2, 0],
                   [3, 4], [0, 0]])
  omega = 2 * jnp.pi * jnp.asarray(bins / np.array(grid), jnp.float32)
  assert spectral.is_on_grid(omega, grid)
  x = _normal(0, (2, 48, 5))
  params = _filter_params(2, len(bins), 5)
  ys = {m: spectral.sdict_mix_2d(x, omega, grid=grid, method=m, **params)
        for m in spectral.METHODS}
  _close(ys["dense"], ys["pinv"], atol=1e-4)
  _close(ys["fft"], ys["pinv"], atol=1e-4)


@pytest.mark.parametrize("filters", ["none", "per_atom", "all"])
@pytest.mark.parametrize("grid", [(64,), (6, 8)])
def test_fft_matches_dense_with_gradients_for_every_filter(filters, grid):
  # The fft path turns the filters into one multiplier on the spectrum; its
  # gradients reach x and every filter parameter as the dense path's do.
  if len(grid) == 1:
    bins = np.array(GRID_BINS_1D)[:, None]  # with both edges, -5 and 40 > N/2
  else:
    bins = np.array([[0, 1], [1, 2], [3, 0], [5, 4], [0, 4], [3, 7], [0, 0]])
  omega = 2 * jnp.pi * jnp.asarray(bins / np.array(grid), jnp.float32)
  assert spectral.is_on_grid(omega, grid)
  params = _filter_params(3, len(bins), 5)
  chosen = {"none": {}, "per_atom": {k: params[k] for k in ("amp", "phase")},
            "all": params}[filters]
  x = _normal(4, (2, math.prod(grid), 5))

  def loss(x, chosen, method):
    y = spectral.sdict_mix_2d(x, omega, grid=grid, method=method, **chosen)
    return jnp.sum(jnp.sin(3 * y))

  values = {m: jax.value_and_grad(loss, argnums=(0, 1))(x, chosen, m)
            for m in ("dense", "fft")}
  (dense_value, dense_grads), (fft_value, fft_grads) = values["dense"], values["fft"]
  np.testing.assert_allclose(fft_value, dense_value, rtol=1e-4)
  for dense_grad, fft_grad in zip(jax.tree.leaves(dense_grads),
                                  jax.tree.leaves(fft_grads)):
    _close(fft_grad, dense_grad, atol=2e-3)


@pytest.mark.parametrize("ridge", [1e-3, 1e-1])
def test_dense_matches_pinv_off_grid(ridge):
  omega = jnp.array([0.13, 0.52, 0.9, 1.7, 2.2, 2.95], jnp.float32)
  x = _normal(3, (2, 50, 4))
  params = _filter_params(4, 6, 4)
  _close(spectral.sdict_mix(x, omega, ridge=ridge, **params),
         spectral.sdict_mix(x, omega, ridge=ridge, method="pinv", **params))


def test_2d_operator_matches_brute_force_float64():
  """An independent float64 construction: complex atoms, lstsq, Re(Φ W C)."""
  grid, k, d, ridge = (5, 7), 4, 3, 1e-3
  omega = np.array([[0.3, 1.1], [1.4, -0.6], [2.5, 0.2], [0.9, 2.8]])
  x = np.asarray(_normal(5, (grid[0] * grid[1], d)), np.float64)
  params = {key: np.asarray(v, np.float64)
            for key, v in _filter_params(6, k, d).items()}
  u, v = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
  theta = u.reshape(-1, 1) * omega[:, 0] + v.reshape(-1, 1) * omega[:, 1]
  phi = np.exp(1j * theta) / np.sqrt(theta.shape[0])  # unit-norm atoms
  real = np.concatenate([phi.real, phi.imag], 1)  # span{cos, sin}
  coef = np.linalg.solve(real.T @ real + ridge * np.eye(2 * k), real.T @ x)
  c = coef[:k] - 1j * coef[k:]  # Re(Φ C) = real @ coef
  w = (params["amp"][:, None] * params["gain"] *
       np.exp(1j * (params["phase_bias"] + params["phase"][:, None])))
  expected = np.real(phi @ (w * c))
  got = spectral.sdict_mix_2d(jnp.asarray(x, jnp.float32),
                              jnp.asarray(omega, jnp.float32), grid=grid,
                              ridge=ridge,
                              **{k_: jnp.asarray(v_, jnp.float32)
                                 for k_, v_ in params.items()})
  _close(got, expected, atol=5e-5)


def _projector(x, omega, **kw):
  return spectral.sdict_mix(x, omega, ridge=1e-7, **kw)


def test_projector_is_idempotent():
  omega = jnp.array([0.2, 0.6, 1.3, 2.0, 2.7], jnp.float32)
  x = _normal(7, (2, 128, 6))
  once = _projector(x, omega)
  _close(_projector(once, omega), once, atol=1e-4)


def test_projector_is_identity_on_its_span():
  omega = jnp.array([0.2, 0.6, 1.3, 2.0, 2.7], jnp.float32)
  n = jnp.arange(128, dtype=jnp.float32)[:, None]
  weights = _normal(8, (2, 5, 3))
  phases = _normal(9, (5, 3))
  x = sum(weights[:, k][:, None, :] * jnp.cos(omega[k] * n + phases[k])
          for k in range(5))
  _close(_projector(x, omega), x, atol=1e-4)


@pytest.mark.parametrize("seed", range(4))
def test_energy_never_grows(seed):
  omega = jax.random.uniform(jax.random.PRNGKey(seed), (12,), minval=0.01,
                             maxval=jnp.pi)
  x = _normal(seed, (3, 40, 4))
  for ridge in [1e-6, 1e-3, 1.0]:
    y = spectral.sdict_mix(x, omega, ridge=ridge)
    assert jnp.all(jnp.sum(y**2, (-2, -1)) <= jnp.sum(x**2, (-2, -1)) + 1e-4)


@pytest.mark.parametrize("grid", [(37,), (6, 9)])
def test_closed_form_gram_equals_explicit(grid):
  k = 7
  omega = jax.random.uniform(jax.random.PRNGKey(1), (k, len(grid)),
                             minval=-jnp.pi, maxval=jnp.pi)
  omega = omega.at[3].set(omega[2])  # a collision, and one near-collision
  omega = omega.at[4].set(omega[2] + 1e-4)
  theta = spectral.atom_phases(omega, grid)
  phi = jnp.exp(1j * theta) / jnp.sqrt(theta.shape[0])
  _close(spectral.dirichlet_gram(omega, grid), phi.conj().T @ phi, atol=1e-5)
  basis = spectral.real_dictionary(omega, grid)
  _close(spectral.real_gram(omega, grid), basis.T @ basis, atol=1e-5)


def _omega_grad(omega, n, method="dense"):
  x = _normal(10, (2, n, 3))
  loss = lambda w: jnp.sum(spectral.sdict_mix(x, w, method=method) ** 2)
  return jax.jit(jax.grad(loss))(omega)


def test_gradients_finite_when_atoms_collide():
  omega = jnp.array([0.5, 0.5, 1.0, 1.0 + 1e-7, 2.0, jnp.pi, jnp.pi])
  grad = _omega_grad(omega, 64)
  assert jnp.all(jnp.isfinite(grad))
  # Also through the closed-form Gram on its own at an exact collision.
  gram_grad = jax.grad(lambda w: jnp.sum(spectral.real_gram(
      w[:, None], (64,))**2))(omega)
  assert jnp.all(jnp.isfinite(gram_grad))


def test_gradients_finite_when_sequence_shorter_than_dictionary():
  omega = jnp.linspace(0.1, jnp.pi, 16)
  for n in [1, 3, 7]:
    assert jnp.all(jnp.isfinite(_omega_grad(omega, n)))


def test_dirichlet_gradient_is_exact_near_collision():
  n = 50
  exact = jax.grad(lambda d: jnp.real(jnp.mean(
      jnp.exp(1j * d * jnp.arange(n)))))
  closed = jax.grad(lambda d: jnp.real(spectral.dirichlet_kernel(d, n)))
  for delta in [0.0, 1e-5, 1e-3, 0.3]:
    np.testing.assert_allclose(closed(delta), exact(delta), rtol=1e-3)


@pytest.mark.parametrize("method", ["dense", "pinv"])
def test_padding_changes_no_valid_output(method):
  omega = jnp.array([0.3, 0.8, 1.9, 2.6], jnp.float32)
  lengths = jnp.array([40, 17, 64])
  mask = jnp.arange(64)[None, :] < lengths[:, None]
  x = _normal(11, (3, 64, 5))
  garbage = jnp.where(mask[..., None], x, 1e3 * _normal(12, x.shape))
  y = spectral.sdict_mix(x, omega, mask=mask, method=method)
  _close(spectral.sdict_mix(garbage, omega, mask=mask, method=method), y)
  assert jnp.all(jnp.where(mask[..., None], 0.0, y) == 0)
  # A valid prefix of length L behaves as the unpadded sequence of length L.
  _close(y[1, :17], spectral.sdict_mix(x[1, :17], omega, method=method))


def test_one_parameter_set_runs_at_any_length():
  omega = jnp.linspace(0.05, jnp.pi, 24)
  params = _filter_params(13, 24, 8)
  for n in [16, 100, 1024]:
    y = jax.jit(lambda x: spectral.sdict_mix(x, omega, **params))(
        _normal(n, (1, n, 8)))
    assert y.shape == (1, n, 8) and jnp.all(jnp.isfinite(y))


def test_coefficients_recover_amplitude_and_phase():
  omega = jnp.array([0.4, 1.2, 2.5], jnp.float32)
  n = jnp.arange(256, dtype=jnp.float32)[:, None]
  x = 2.0 * jnp.cos(1.2 * n + 0.7)
  c = spectral.sdict_coefficients(x, omega, ridge=1e-7)[:, 0] / jnp.sqrt(256.)
  np.testing.assert_allclose(jnp.abs(c), [0, 2.0, 0], atol=1e-2)
  np.testing.assert_allclose(jnp.angle(c[1]), 0.7, atol=1e-2)


def test_reconstruction_loss_zero_on_span_and_one_on_orthogonal():
  omega = jnp.array([2 * jnp.pi * 3 / 64], jnp.float32)
  n = jnp.arange(64, dtype=jnp.float32)[:, None]
  inside = jnp.cos(omega[0] * n)
  outside = jnp.cos(2 * jnp.pi * 9 / 64 * n)
  assert spectral.reconstruction_loss(inside, omega, ridge=1e-7) < 1e-5
  np.testing.assert_allclose(
      spectral.reconstruction_loss(outside, omega, ridge=1e-7), 1.0,
      atol=1e-4)


def test_phase_bias_shifts_the_atom_in_token_space():
  """Θ_k = −ω_k τ delays the reconstruction by τ tokens (locality)."""
  n, tau = 64, 5
  bins = jnp.arange(1, 32)
  omega = 2 * jnp.pi * bins / n
  x = _normal(14, (n, 1))
  x = x - x.mean()  # inside span: all bins but DC and Nyquist
  x = spectral.sdict_mix(x, omega, ridge=1e-7)
  shifted = spectral.sdict_mix(x, omega, ridge=1e-7,
                               phase_bias=-(omega * tau)[:, None])
  _close(shifted, jnp.roll(x, tau, axis=0), atol=1e-4)


def _causal_params(k=6, d=4):
  omega = jnp.linspace(0.1, 3.0, k)
  decay = jnp.linspace(0.01, 0.5, k)
  gain = _normal(15, (k, d)) + 1j * _normal(16, (k, d))
  return omega, decay, gain, _normal(17, (d,))


@pytest.mark.parametrize("method", ["fft", "direct"])
def test_causal_sdict_output_ignores_the_future(method):
  omega, decay, gain, skip = _causal_params()
  x = _normal(18, (2, 50, 4))
  y = spectral.causal_sdict(x, omega, decay, gain, skip=skip, method=method)
  for t in [0, 13, 49]:
    bumped = x.at[:, t].add(10.0)
    y2 = spectral.causal_sdict(bumped, omega, decay, gain, skip=skip, method=method)
    _close(y2[:, :t], y[:, :t])
    assert jnp.abs(y2[:, t] - y[:, t]).max() > 1e-2


@pytest.mark.parametrize("length", [40, 130])  # direct and FFT under 'auto'
def test_causal_streaming_equals_parallel(length):
  omega, decay, gain, skip = _causal_params()
  x = _normal(19, (2, length, 4))
  parallel = spectral.causal_sdict(x, omega, decay, gain, skip=skip)
  state = spectral.causal_sdict_init(2, omega, 4)
  outputs = []
  for t in range(length):
    state, y_t = spectral.causal_sdict_step(state, x[:, t], omega, decay,
                                            gain, skip=skip)
    outputs.append(y_t)
  _close(jnp.stack(outputs, 1), parallel, atol=1e-4)
  # Prefill of the whole prompt gives the same state as one step per token.
  _close(spectral.causal_sdict_prefill(x, omega, decay), state, atol=1e-4)


def test_direct_and_fft_causal_convolutions_agree_with_gradients():
  omega, decay, gain, skip = _causal_params()
  x = _normal(20, (2, 33, 4))
  outputs = {}
  for method in ("fft", "direct"):
    loss = lambda x, gain: jnp.sum(jnp.sin(spectral.causal_sdict(
        x, omega, decay, gain, skip=skip, method=method)))
    outputs[method] = (spectral.causal_sdict(x, omega, decay, gain, method=method),
                       *jax.grad(loss, (0, 1))(x, gain))
  for fft_value, direct_value in zip(outputs["fft"], outputs["direct"]):
    _close(direct_value, fft_value, atol=1e-4)


def test_spd_inverse_and_its_gradient():
  a = _normal(21, (3, 6, 6))
  matrix = a @ jnp.swapaxes(a, -1, -2) + 0.5 * jnp.eye(6)
  _close(spectral.spd_inverse(matrix) @ matrix, jnp.broadcast_to(jnp.eye(6), (3, 6, 6)),
         atol=1e-4)
  # Symmetric perturbations only: the inverse is defined on SPD matrices.
  loss = lambda m: jnp.sum(jnp.sin(spectral.spd_inverse((m + jnp.swapaxes(m, -1, -2)) / 2)))
  expected = jax.grad(lambda m: jnp.sum(jnp.sin(jnp.linalg.inv(
      (m + jnp.swapaxes(m, -1, -2)) / 2))))(matrix)
  _close(jax.grad(loss)(matrix), expected, atol=1e-4)


def test_fft_method_rejects_a_mask():
  with pytest.raises(ValueError, match="dense"):
    spectral.sdict_mix(jnp.ones((8, 2)), jnp.array([0.5]), method="fft",
                       mask=jnp.ones(8))


def test_unknown_method_is_named():
  with pytest.raises(ValueError, match="choose one of"):
    spectral.sdict_mix(jnp.ones((8, 2)), jnp.array([0.5]), method="fast")


@pytest.mark.parametrize("method,masked", [("dense", False), ("dense", True),
                                           ("fft", False), ("pinv", True)])
def test_fit_residual_equals_explicit_reconstruction_error(method, masked):
  n = 64
  omega = 2 * jnp.pi * jnp.array([0, 3, 7, 12, 32], jnp.float32) / n
  x = _normal(20, (3, n, 4))
  mask = (jnp.arange(n)[None] < jnp.array([[64], [50], [9]])) if masked else None
  _, fit = spectral.sdict_mix(x, omega, mask=mask, method=method,
                              return_fit=True)
  for b in range(3):
    valid = n if mask is None else int(mask[b].sum())
    explicit = spectral.reconstruction_loss(x[b, :valid], omega) * jnp.sum(
        x[b, :valid]**2)
    np.testing.assert_allclose(fit.residual[b], explicit, rtol=2e-3, atol=1e-3)


@pytest.mark.parametrize("method", ["dense", "fft"])
def test_expected_denoising_loss_matches_monte_carlo(method):
  n, sigma = 64, 0.3
  omega = 2 * jnp.pi * jnp.array([1, 3, 7, 12], jnp.float32) / n
  x = _normal(21, (2, n, 8))
  _, fit = spectral.sdict_mix(x, omega, method=method, return_fit=True)
  exact_clean = spectral.expected_denoising_loss(x, fit, noise_std=0.0)
  np.testing.assert_allclose(exact_clean,
                             spectral.reconstruction_loss(x, omega), rtol=1e-4)
  expected = spectral.expected_denoising_loss(x, fit, noise_std=sigma)
  samples = [spectral.reconstruction_loss(
      x, omega, noise=sigma * _normal(100 + i, x.shape)) for i in range(200)]
  np.testing.assert_allclose(expected, np.mean(samples), rtol=1e-2)
