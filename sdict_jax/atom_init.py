"""Initial atom frequencies (SPEC §2).

Text atoms are mel-spaced in (0, π]: dense at low frequencies, where the
slowly-varying structure of language lives, sparse towards the alternation rate π.
Vision atoms are the lowest radial frequencies of the pre-training patch grid,
on its DFT grid, so that an `fft` model can freeze them. The fusion dictionary is
the union of both, the 2-D atoms rewritten as 1-D frequencies in raster order.
"""

import math

import numpy as np


def _hz_to_mel(f):
  return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m):
  return 700.0 * (10.0**(m / 2595.0) - 1.0)


def mel_frequencies(num_atoms: int, max_hz: float = 8000.0) -> np.ndarray:
  """K frequencies in (0, π], equally spaced on the mel scale: float32 [K].

  ω = π · f / max_hz, so π plays the role of the Nyquist rate of a speech-like
  signal sampled at 2·max_hz (the mel curvature is what matters, not max_hz).
  """
  mels = np.linspace(0.0, _hz_to_mel(max_hz), num_atoms + 1)[1:]
  return (np.pi * _mel_to_hz(mels) / max_hz).astype(np.float32)


def radial_grid_frequencies(num_atoms: int, grid: tuple[int, int]) -> np.ndarray:
  """The K lowest radial 2-D DFT frequencies of a grid: float32 [K, 2].

  One atom per conjugate pair (the real span of ±ω is the same), from the DC
  atom outwards by |ω|; ties broken deterministically. Atoms are distinct and
  on the grid, so `sdict_mix_2d(..., method="fft")` applies at this grid.
  """
  rows, cols = grid
  candidates = []
  for a in range(-(rows - 1) // 2, rows // 2 + 1):
    for b in range(0, cols // 2 + 1):
      if b == 0 and a < 0 or (2 * b == cols and a < 0):
        continue  # the conjugate of an atom already listed
      w = (2 * np.pi * a / rows, 2 * np.pi * b / cols)
      candidates.append((math.hypot(*w), abs(a) + b, a, b, w))
  if num_atoms > len(candidates):
    raise ValueError(f"A {rows}x{cols} patch grid has only {len(candidates)} distinct "
                     f"real 2-D frequencies; lower model.num_atoms to at most that.")
  candidates.sort(key=lambda c: c[:4])
  return np.array([c[-1] for c in candidates[:num_atoms]], np.float32)


def raster_frequencies(omega_2d: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
  """1-D frequencies [K] that follow 2-D atoms along a raster (row-major) scan.

  A token at raster index n = u·W + v has phase ω_u u + ω_v v. A 1-D atom of
  frequency ω_v + ω_u / W advances by ω_v along a row and, for on-grid ω_v, by
  exactly ω_u from one row to the next. Folded into [0, π] (real span).
  """
  omega = omega_2d[:, 1] + omega_2d[:, 0] / grid[1]
  omega = np.mod(omega, 2 * np.pi)
  return np.where(omega > np.pi, 2 * np.pi - omega, omega).astype(np.float32)


def fusion_frequencies(num_text: int, num_vision: int,
                       grid: tuple[int, int]) -> np.ndarray:
  """The union of text atoms and the raster equivalents of vision atoms: [K_t + K_v]."""
  return np.concatenate([mel_frequencies(num_text),
                         raster_frequencies(radial_grid_frequencies(num_vision, grid),
                                            grid)])
