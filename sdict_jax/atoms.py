r"""What the atoms learned: frequencies, usage, spectra, word alignment, pruning.

  python -m sdict_jax.atoms --workdir runs/shapes --out runs/shapes/atoms \
      [--config configs/shapes.py --config.model.width=...] [--ks 4,8,16]

writes one PNG per figure below and summary.json (the numbers behind them) for
the newest checkpoint in --workdir. The config is the run's config.json unless
--config (with the run's --config.* overrides) names it.
colabs/explore_atoms.ipynb shows the same interactively.

Analysis functions are pure functions of (model, params, batch); figures are
matplotlib `Figure`s built without pyplot (no global state, no display side
effects), so notebooks `display` them and the CLI saves them.

  sdict_layers           learned and initial frequencies of every SDict layer
  mixer_inputs           each layer's mixer input on a batch (capture_intermediates)
  atom_usage, dead_atoms mean |C| per atom; dead: usage < threshold · layer median
  vision_atom_images     each vision atom's filtered 2-D pattern and log |FFT| (Fig. 2)
  word_alignment         share of a fusion atom's coefficients due to each caption word
  reconstruction_errors  ‖x − Re(ΦC)‖² / ‖x‖² per layer
Pruning to the top-k atoms and its accuracy/compute curve: atom_pruning.py.
"""

import functools
import json
import os
import sys
import typing

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from matplotlib import figure as mpl_figure
import ml_collections
import numpy as np

from sdict_jax import atom_init
from sdict_jax import atom_pruning
from sdict_jax import model as model_lib
from sdict_jax import restore
from sdict_jax import sharding
from sdict_jax import spectral
from sdict_jax.data import pipeline
from sdict_jax.data import sources

KINDS = ("vision", "text", "fusion", "decoder")


# ---------------------------------------------------------------------------
# Restoring a run and building held-out batches.
# ---------------------------------------------------------------------------


def restore_run(workdir: str, config: typing.Optional[ml_collections.ConfigDict] = None):
  """(restore.Restored, validation bundle, config) of the newest checkpoint.

  config: the one the run was trained with (it fixes the shapes); None reads
  the run's config.json.
  """
  config = restore.load_config(workdir) if config is None else config
  bundle = sources.load(config.data, "validation")
  run = restore.load(workdir, config, bundle, sharding.make_mesh(config.mesh))
  return run, bundle, config


def heldout_batch(bundle, config, num_examples: int, start: int = 0) -> dict:
  """Model batch (numpy) of source examples [start, start + num_examples)."""
  encoder = pipeline.ExampleEncoder(
      tokenizer=bundle.tokenizer,
      answer_index={a: i for i, a in enumerate(bundle.answer_vocab)},
      image_size=config.data.image_size, max_text_len=config.data.max_text_len,
      max_caption_len=config.data.max_caption_len)
  stop = min(start + num_examples, len(bundle.source))
  examples = [encoder.eval_example((i, bundle.source[i])) for i in range(start, stop)]
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


# ---------------------------------------------------------------------------
# The dictionaries: learned and initial frequencies.
# ---------------------------------------------------------------------------


class Layer(typing.NamedTuple):
  """One SDict layer: its frequencies now and at initialisation, and its mixer."""
  name: str  # the block's name in SDictVLM: 'vision_0', 'fusion_1', 'decoder_0', ...
  kind: str  # 'vision' (2-D atoms, ω [K, 2]), 'text', 'fusion', 'decoder' (ω [K])
  omega: np.ndarray
  initial: np.ndarray
  mixer: dict  # the mixer's parameters (numpy)


def initial_frequencies(model: model_lib.SDictVLM) -> dict[str, np.ndarray]:
  """ω at initialisation per layer kind, exactly as SDictVLM.setup makes them."""
  k, grid = model.num_atoms, tuple(model.pretrain_grid)
  return {"vision": atom_init.radial_grid_frequencies(model.num_vision_atoms, grid),
          "text": atom_init.mel_frequencies(k),
          "fusion": atom_init.fusion_frequencies(k, k, grid),
          "decoder": atom_init.mel_frequencies(k)}


def sdict_layers(model: model_lib.SDictVLM, params) -> list[Layer]:
  """Every SDict layer, in the order vision, text, fusion, decoder."""
  if model.mixer != "sdict":
    raise ValueError(f"This model mixes with {model.mixer!r}, which has no atoms; "
                     f"atom analysis needs model.mixer='sdict'.")
  initial = initial_frequencies(model)
  counts = {"vision": model.vision_layers, "text": model.text_layers,
            "fusion": model.fusion_layers, "decoder": model.decoder_layers}
  layers = []
  for kind in KINDS:
    for i in range(counts[kind]):
      name = f"{kind}_{i}"
      mixer = jax.tree.map(np.asarray, dict(params[name]["mixer"]))
      # Tied vision atoms live outside the blocks, in params['vision_omega'].
      omega = mixer["omega"] if "omega" in mixer else np.asarray(params["vision_omega"])
      layers.append(Layer(name, kind, omega, initial[kind], mixer))
  return layers


def frequency_drift(layer: Layer) -> np.ndarray:
  """|ω − ω₀| per atom [K] (Euclidean over (ω_u, ω_v) for vision atoms)."""
  delta = (layer.omega - layer.initial).reshape(len(layer.omega), -1)
  return np.linalg.norm(delta, axis=-1)


# ---------------------------------------------------------------------------
# Mixer inputs, captured on a batch.
# ---------------------------------------------------------------------------


class MixerInput(typing.NamedTuple):
  """What one layer's mixer saw: x [B, N, d], mask [B, N] (or None), patch grid."""
  x: jax.Array
  mask: typing.Optional[jax.Array]
  grid: typing.Optional[tuple[int, int]]


def _analysis_pass(module, batch, text, with_decoder):
  """Fuses the image with `text` (answering), then, with_decoder, runs the caption
  decoder (teacher forced) after the text-free prefix. Returns (answers, prefix mask)."""
  vision = module.encode_image(batch["image"])
  fused, mask = module.fuse(vision, text)
  answers = jnp.argmax(module.answer_logits(fused, mask, vision.shape[1]), -1)
  if not with_decoder:
    return answers, None
  prefix, prefix_mask = module.fuse(vision, text[:, :0])  # captioning: no text
  module.caption_logits(batch["caption_in"], jnp.arange(batch["caption_in"].shape[1]),
                        prefix, prefix_mask)
  return answers, prefix_mask


def _is_mixer_input(module, method_name):
  # A block's mixer input is its pre-norm's output; the causal mixer mixes the
  # output of its 'value' projection.
  del method_name
  return module.name in ("norm_mix", "value")


def mixer_inputs(model: model_lib.SDictVLM, params, batch: dict,
                 text: typing.Optional[jax.Array] = None, with_decoder: bool = True):
  """({layer name: MixerInput}, predicted answer ids [B]) on a model batch.

  The vision, text and fusion layers see the image fused with `text` (default:
  the batch's questions), which the model also answers; the decoder layers (if
  with_decoder) see the teacher-forced caption after the text-free fused prefix,
  as in captioning.
  """
  text = batch["question"] if text is None else text
  (answers, prefix_mask), variables = _capture(model, params, batch, text, with_decoder)
  captured = variables["intermediates"]
  grid = (batch["image"].shape[1] // model.patch_size,
          batch["image"].shape[2] // model.patch_size)
  text_mask = (text > 0).astype(jnp.float32)
  fusion_mask = jnp.concatenate(
      [jnp.ones((text.shape[0], 1 + grid[0] * grid[1])), text_mask], 1)
  inputs = {}
  for name in captured:
    kind = name.rsplit("_", 1)[0]
    if kind == "decoder":
      decoder_mask = jnp.concatenate(
          [prefix_mask, (batch["caption_in"] > 0).astype(jnp.float32)], 1)
      inputs[name] = MixerInput(captured[name]["mixer"]["value"]["__call__"][0],
                                decoder_mask, None)
      continue
    # Fusion runs twice (with the text, then without for captioning): the first.
    x = captured[name]["norm_mix"]["__call__"][0]
    mask = {"vision": None, "text": text_mask, "fusion": fusion_mask}[kind]
    inputs[name] = MixerInput(x, mask, grid if kind == "vision" else None)
  return inputs, np.asarray(answers)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _capture(model, params, batch, text, with_decoder):
  return model.apply({"params": params}, batch, text, with_decoder, method=_analysis_pass,
                     capture_intermediates=_is_mixer_input, mutable=["intermediates"])


# ---------------------------------------------------------------------------
# Usage, dead atoms, reconstruction.
# ---------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("ridge", "grid"))
def _mean_abs_coefficients(x, mask, omega, *, ridge, grid):
  """Mean over channels of |C_kc| per example: [B, K]."""
  coefficients = spectral.sdict_coefficients(x, omega, ridge=ridge, mask=mask, grid=grid)
  return jnp.mean(jnp.abs(coefficients), -1)


@jax.jit
def _causal_activity(value, mask, omega, raw_decay, gain_re, gain_im):
  """Mean over valid tokens and channels of |G_kc s_kc(t)| per example: [B, K]."""
  n = value.shape[1]
  lag = jnp.arange(n)[:, None] - jnp.arange(n)[None, :]
  log_rate = -jax.nn.softplus(raw_decay) + 1j * omega  # log λ_k
  powers = jnp.where((lag >= 0)[..., None],
                     jnp.exp(jnp.maximum(lag, 0)[..., None] * log_rate), 0)  # [N, N, K]
  gain = gain_re + 1j * gain_im

  def one(args):
    v, m = args
    state = jnp.einsum("tsk,sd->tkd", powers, (v * m[:, None]).astype(jnp.complex64))
    return jnp.einsum("t,tk->k", m, jnp.mean(jnp.abs(gain * state), -1)) / jnp.sum(m)

  return jax.lax.map(one, (value, mask))


def atom_activity(layers: list[Layer], inputs: dict[str, MixerInput],
                  ridge: float) -> dict[str, np.ndarray]:
  """How strongly each atom is present in each example: {layer: [B, K]}.

  Bidirectional layers: mean over channels of |C_kc|, the least-squares
  coefficient of the (unit-norm) atom k in the example's mixer input.
  Decoder layers fit nothing; their output is y_t = Re Σ_k G_kc s_kc(t) with
  the recurrent state s_k(t) = Σ_{τ≤t} λ_k^{t−τ} v_τ, and the activity is the
  mean over valid tokens and channels of |G_kc s_kc(t)|, atom k's term.
  """
  activity = {}
  for layer in layers:
    inp = inputs[layer.name]
    if layer.kind == "decoder":
      m = layer.mixer
      values = _causal_activity(inp.x, inp.mask, m["omega"], m["decay"], m["gain_re"],
                                m["gain_im"])
    else:
      values = _mean_abs_coefficients(inp.x, inp.mask, jnp.asarray(layer.omega),
                                       ridge=ridge, grid=inp.grid)
    activity[layer.name] = np.asarray(values)
  return activity


def atom_usage(layers: list[Layer], inputs: dict[str, MixerInput],
               ridge: float) -> dict[str, np.ndarray]:
  """Per-atom usage [K] of every layer: `atom_activity` averaged over examples.

  For the SDict layers this is mean |C| over examples and channels.
  """
  return {n: a.mean(0) for n, a in atom_activity(layers, inputs, ridge).items()}


def dead_atoms(usage: np.ndarray, threshold: float = 0.1) -> np.ndarray:
  """Atoms whose usage is below threshold × the layer's median usage: bool [K]."""
  usage = np.asarray(usage)
  return usage < threshold * np.median(usage)


def reconstruction_errors(layers: list[Layer], inputs: dict[str, MixerInput],
                          ridge: float) -> dict[str, float]:
  """‖x − Re(ΦC)‖² / ‖x‖² of each bidirectional layer's input (no noise).

  The fraction of the mixer input outside the span of its atoms; the causal
  decoder fits nothing and is left out.
  """
  return {layer.name: float(_reconstruction_loss(
      inputs[layer.name].x, jnp.asarray(layer.omega), ridge=ridge,
      mask=inputs[layer.name].mask, grid=inputs[layer.name].grid))
          for layer in layers if layer.kind != "decoder"}


_reconstruction_loss = jax.jit(spectral.reconstruction_loss,
                               static_argnames=("ridge", "grid"))


# ---------------------------------------------------------------------------
# Vision atoms as 2-D patterns (the paper's Fig. 2).
# ---------------------------------------------------------------------------


def vision_atom_images(layer: Layer, grid: tuple[int, int]):
  """(patterns, log_spectra), both [K, H, W], of a vision layer's atoms on `grid`.

  Atom k's filtered pattern is Re(w_k exp(i(ω_u u + ω_v v))), with the complex
  filter w_k = a_k A_kc e^{i(ψ_k + Θ_kc)} of the channel c the atom drives most
  (largest |A_kc|). Its spectrum is log |FFT2| of the pattern, zero frequency at
  the centre: two peaks at ±ω on the DFT grid, spread (leakage) when a learned
  frequency has moved off the grid.
  """
  m = layer.mixer
  k = len(layer.omega)
  channel = np.argmax(np.abs(m["gain"]), axis=1)
  rows = np.arange(k)
  weight = (m["amp"] * m["gain"][rows, channel] *
            np.exp(1j * (m["phase"] + m["phase_bias"][rows, channel])))
  phases = np.asarray(spectral.atom_phases(jnp.asarray(layer.omega), grid))  # [N, K]
  patterns = np.real(weight[None, :] * np.exp(1j * phases)).T.reshape(k, *grid)
  spectra = np.abs(np.fft.fftshift(np.fft.fft2(patterns), axes=(-2, -1)))
  floor = 1e-3 * spectra.max(axis=(-2, -1), keepdims=True) + 1e-12
  return patterns, np.log10(spectra + floor)


# ---------------------------------------------------------------------------
# Fusion atoms and caption words.
# ---------------------------------------------------------------------------


def caption_words(batch: dict, eos_id: int, max_len: int) -> np.ndarray:
  """The reference caption's word ids [B, L] (no BOS/EOS, 0 = pad)."""
  words = np.asarray(batch["caption_out"])[:, :max_len]
  return np.where(words == eos_id, 0, words).astype(np.int32)


def token_shares(layer: Layer, inputs: MixerInput, ridge: float) -> np.ndarray:
  """share [B, K, N]: the part of atom k's coefficients due to token n.

  Analysis is linear, C_k = Σ_n M_kn x_n (M from the ridge least squares, for
  this example's mask), so token n's share of atom k is
      s_kn = Re Σ_c conj(C_kc) M_kn x_nc / Σ_c |C_kc|²,
  the projection of its contribution onto the atom's coefficient vector.
  Shares sum to 1 over the tokens; a negative share is a token that cancels
  part of the atom.
  """
  return np.asarray(_token_shares(inputs.x, inputs.mask, jnp.asarray(layer.omega),
                                  ridge=ridge))


@functools.partial(jax.jit, static_argnames=("ridge",))
def _token_shares(x, mask, omega, *, ridge):
  x = x.astype(jnp.float32)
  batch, n = x.shape[:2]
  eye = jnp.broadcast_to(jnp.eye(n, dtype=jnp.float32), (batch, n, n))
  analysis = spectral.sdict_coefficients(eye, omega, ridge=ridge, mask=mask)  # M [B,K,N]
  coeffs = jnp.einsum("bkn,bnd->bkd", analysis, x)
  energy = jnp.sum(jnp.abs(coeffs)**2, -1, keepdims=True)
  projected = jnp.einsum("bkd,bnd->bkn", jnp.conj(coeffs), x)
  return jnp.real(analysis * projected) / jnp.maximum(energy, 1e-12)


def word_alignment(model: model_lib.SDictVLM, params, batch: dict, tokenizer, *,
                   layer: str = "fusion_0", max_words: int = 24):
  """(alignment [K, W], words [W], counts [W]): atom × caption-word alignment.

  Each example's reference caption is fused with its image in place of the
  question; alignment[k, w] is the mean over the occurrences of word w of that
  token's share of fusion atom k (`token_shares`): how much of atom k's
  coefficients the word accounts for. The `max_words` most frequent words are kept.
  Rows follow the fusion dictionary: K text atoms, then K vision atoms.
  """
  words = caption_words(batch, tokenizer.eos_id, model.max_text_len)
  if not np.any(words):
    raise ValueError("The batch has no reference captions (its source has none), so "
                     "there are no caption words to align atoms with.")
  inputs, _ = mixer_inputs(model, params, batch, text=jnp.asarray(words),
                           with_decoder=False)
  (fusion,) = [l for l in sdict_layers(model, params) if l.name == layer]
  shares = token_shares(fusion, inputs[layer], model.ridge)
  text_shares = shares[:, :, -words.shape[1]:]  # text tokens end the sequence
  ids, counts = np.unique(words[words > 0], return_counts=True)
  order = np.argsort(-counts, kind="stable")[:max_words]
  ids, counts = ids[order], counts[order]
  alignment = np.stack([text_shares.transpose(0, 2, 1)[words == w].mean(0)
                        for w in ids], axis=1)
  return alignment, [tokenizer.decode([int(w)]) for w in ids], counts


# ---------------------------------------------------------------------------
# Figures.
# ---------------------------------------------------------------------------


def _panels(count: int, ncols: int, size=(3.2, 2.6)):
  ncols = min(ncols, count)
  nrows = -(-count // ncols)
  fig = mpl_figure.Figure(figsize=(size[0] * ncols, size[1] * nrows),
                          layout="constrained")
  axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
  for ax in axes[count:]:
    ax.set_axis_off()
  return fig, axes


def plot_frequency_drift(layers: list[Layer]) -> mpl_figure.Figure:
  """Initial (open) and learned (filled) frequencies of every layer."""
  fig, axes = _panels(len(layers), 4)
  for ax, layer in zip(axes, layers):
    drift = frequency_drift(layer)
    if layer.kind == "vision":
      ax.scatter(layer.initial[:, 1], layer.initial[:, 0], facecolors="none",
                 edgecolors="gray", s=18, label="initial")
      ax.scatter(layer.omega[:, 1], layer.omega[:, 0], s=10, color="C0", label="learned")
      for a, b in zip(layer.initial, layer.omega):
        ax.plot([a[1], b[1]], [a[0], b[0]], color="C0", lw=0.6)
      ax.set_xlabel("ω_v (rad / patch)")
      ax.set_ylabel("ω_u (rad / patch)")
    else:
      index = np.arange(len(layer.omega))
      ax.scatter(index, layer.initial, facecolors="none", edgecolors="gray", s=18,
                 label="initial")
      ax.scatter(index, layer.omega, s=10, color="C0", label="learned")
      ax.vlines(index, layer.initial, layer.omega, color="C0", lw=0.6)
      ax.set_xlabel("atom")
      ax.set_ylabel("ω (rad / token)")
    ax.set_title(f"{layer.name}: mean |Δω| = {drift.mean():.3f}", fontsize=9)
  axes[0].legend(fontsize=7)
  return fig


def plot_usage(usage: dict[str, np.ndarray], threshold: float = 0.1) -> mpl_figure.Figure:
  """Usage per atom and layer; dead atoms (below threshold × median) in red."""
  fig, axes = _panels(len(usage), 4)
  for ax, (name, values) in zip(axes, usage.items()):
    dead = dead_atoms(values, threshold)
    ax.bar(np.arange(len(values)), values, color=np.where(dead, "C3", "C0"))
    ax.axhline(threshold * np.median(values), color="C3", ls="--", lw=0.8)
    ax.set_title(f"{name}: {dead.sum()} dead of {len(values)}", fontsize=9)
    ax.set_xlabel("atom")
    ax.set_ylabel("usage")
  return fig


def plot_vision_atoms(patterns: np.ndarray, spectra: np.ndarray,
                      title: str = "", ncols: int = 8) -> mpl_figure.Figure:
  """Each atom's filtered pattern (top) above its log |FFT| (bottom)."""
  k = len(patterns)
  ncols = min(ncols, k)
  blocks = -(-k // ncols)
  fig = mpl_figure.Figure(figsize=(1.3 * ncols, 2.6 * blocks), layout="constrained")
  axes = fig.subplots(2 * blocks, ncols, squeeze=False)
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  for atom in range(blocks * ncols):
    row, col = 2 * (atom // ncols), atom % ncols
    if atom >= k:
      axes[row, col].set_axis_off()
      axes[row + 1, col].set_axis_off()
      continue
    limit = np.abs(patterns[atom]).max() + 1e-12
    axes[row, col].imshow(patterns[atom], cmap="RdBu_r", vmin=-limit, vmax=limit)
    axes[row, col].set_title(f"atom {atom}", fontsize=7)
    axes[row + 1, col].imshow(spectra[atom], cmap="magma")
  if title:
    fig.suptitle(title, fontsize=10)
  return fig


def plot_word_alignment(alignment: np.ndarray, words: list[str],
                        title: str = "") -> mpl_figure.Figure:
  """Heatmap of atom × word shares (red: the word builds the atom up)."""
  fig = mpl_figure.Figure(figsize=(0.35 * len(words) + 2.5, 0.14 * len(alignment) + 2),
                          layout="constrained")
  ax = fig.subplots()
  limit = np.abs(alignment).max() + 1e-12
  image = ax.imshow(alignment, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto",
                    interpolation="nearest")
  ax.set_xticks(np.arange(len(words)), words, rotation=90, fontsize=8)
  ax.set_ylabel("fusion atom (text-initialised, then vision-initialised)")
  ax.axhline(len(alignment) / 2 - 0.5, color="k", lw=0.6)
  fig.colorbar(image, ax=ax, label="share of the atom's coefficients")
  ax.set_title(title or "atom × caption-word alignment", fontsize=10)
  return fig


def plot_example_activity(image: np.ndarray, caption: str,
                          activity: dict[str, np.ndarray]) -> mpl_figure.Figure:
  """The image and, per layer, mean |C| of each atom on it."""
  names = list(activity)
  fig = mpl_figure.Figure(figsize=(11, 1.3 * len(names) + 1), layout="constrained")
  grid = fig.add_gridspec(len(names), 2, width_ratios=(1, 2.2))
  ax = fig.add_subplot(grid[:, 0])
  ax.imshow(np.clip(image, 0, 1))
  ax.set_title(caption, fontsize=9, wrap=True)
  ax.set_axis_off()
  for row, name in enumerate(names):
    ax = fig.add_subplot(grid[row, 1])
    values = activity[name]
    ax.bar(np.arange(len(values)), values, color="C1")
    top = np.argsort(-values)[:3]
    ax.set_ylabel(name, fontsize=8)
    ax.set_title("top atoms " + ", ".join(map(str, top)), fontsize=8, loc="right")
    ax.tick_params(labelsize=7)
  return fig


def plot_reconstruction(errors: dict[str, float]) -> mpl_figure.Figure:
  fig = mpl_figure.Figure(figsize=(1 + 0.8 * len(errors), 3), layout="constrained")
  ax = fig.subplots()
  ax.bar(list(errors), list(errors.values()), color="C2")
  ax.set_ylabel("‖x − Re(ΦC)‖² / ‖x‖²")
  ax.set_title("reconstruction error of each layer's input", fontsize=10)
  ax.tick_params(axis="x", rotation=45)
  return fig


def plot_tradeoff(rows: list[dict]) -> mpl_figure.Figure:
  """VQA accuracy and CIDEr against atoms kept (left) and forward GFLOPs (right)."""
  fig = mpl_figure.Figure(figsize=(10, 3.6), layout="constrained")
  for ax, key, label in zip(fig.subplots(1, 2), ("k", "gflops"),
                            ("atoms kept per K", "forward GFLOPs / example")):
    x = [r[key] for r in rows]
    ax.plot(x, [r.get("vqa_accuracy", np.nan) for r in rows], "o-", color="C0")
    ax.set_ylabel("VQA accuracy", color="C0")
    twin = ax.twinx()
    twin.plot(x, [r.get("cider", np.nan) for r in rows], "s--", color="C1")
    twin.set_ylabel("CIDEr", color="C1")
    ax.set_xlabel(label)
  fig.suptitle("top-k atoms by usage: held-out accuracy vs compute", fontsize=10)
  return fig


# ---------------------------------------------------------------------------
# Everything at once (the CLI and the notebook).
# ---------------------------------------------------------------------------


def describe_example(batch: dict, answers: np.ndarray, bundle, index: int) -> str:
  """'Q: <question>\nA (model): <answer>' for example `index` of a batch."""
  question = bundle.tokenizer.decode(np.asarray(batch["question"][index]).tolist())
  answer = bundle.answer_vocab[int(answers[index])] if bundle.answer_vocab else "?"
  return f"Q: {question}\nA (model): {answer}"


def default_ks(num_atoms: int) -> list[int]:
  """K, K/2, K/4, ... down to at least 1 (at most 5 values), increasing."""
  ks = [num_atoms]
  while len(ks) < 5 and ks[-1] > 1:
    ks.append(max(1, ks[-1] // 2))
  return sorted(set(ks))


def figures(model, decode_model, params, bundle, config, *, num_examples: int = 64,
            example: int = 0, ks=None, threshold: float = 0.1):
  """({file stem: Figure}, summary dict) of every analysis of this issue."""
  batch = jax.tree.map(jnp.asarray, heldout_batch(bundle, config, num_examples))
  layers = sdict_layers(model, params)
  inputs, answers = mixer_inputs(model, params, batch)
  activity = atom_activity(layers, inputs, model.ridge)
  usage = {name: a.mean(0) for name, a in activity.items()}
  errors = reconstruction_errors(layers, inputs, model.ridge)
  figs = {"frequency_drift": plot_frequency_drift(layers),
          "atom_usage": plot_usage(usage, threshold),
          "reconstruction": plot_reconstruction(errors)}
  grid = tuple(model.pretrain_grid)
  for layer in layers:
    if layer.kind == "vision":
      figs[f"vision_atoms_{layer.name}"] = plot_vision_atoms(
          *vision_atom_images(layer, grid), title=f"{layer.name}: pattern / log |FFT|")
  if np.any(np.asarray(batch["has_caption"])):
    alignment, words, _ = word_alignment(model, params, batch, bundle.tokenizer)
    figs["word_alignment"] = plot_word_alignment(alignment, words)
  figs["example_atoms"] = plot_example_activity(
      np.asarray(batch["image"][example]),
      describe_example(batch, answers, bundle, example),
      {name: a[example] for name, a in activity.items()})
  ks = default_ks(model.num_atoms) if ks is None else ks
  rows = atom_pruning.accuracy_vs_atoms(model, decode_model, params, usage, ks, bundle,
                                        config)
  figs["accuracy_vs_atoms"] = plot_tradeoff(rows)
  summary = {"usage": {n: u.tolist() for n, u in usage.items()},
             "dead_atoms": {n: np.flatnonzero(dead_atoms(u, threshold)).tolist()
                            for n, u in usage.items()},
             "frequency_drift": {l.name: float(frequency_drift(l).mean())
                                 for l in layers},
             "reconstruction_error": errors, "accuracy_vs_atoms": rows}
  return figs, summary


# ---------------------------------------------------------------------------
# CLI.
# ---------------------------------------------------------------------------


def _define_flags():
  """The CLI's own flags, defined only when run as a program (importing this module
  defines none). --config and --workdir are sdict_jax.train's, imported."""
  flags.DEFINE_string("out", None, "Folder for the PNGs and summary.json.")
  flags.DEFINE_integer("num_examples", 64, "Held-out examples for usage and alignment.")
  flags.DEFINE_list("ks", None, "Atoms kept per K in the pruning sweep "
                    "(default: K, K/2, K/4, ...).")
  flags.DEFINE_float("threshold", 0.1, "Dead atom: usage below this × the layer median.")
  flags.DEFINE_integer("example", 0, "Held-out example whose atoms are shown.")


def main(argv):
  del argv
  args = flags.FLAGS
  if args.out is None:
    raise app.UsageError("Pass --workdir <a training run> and --out <folder>.")
  try:
    workdir, config = restore.workdir_and_config_from_flags()
    run, bundle, config = restore_run(workdir, config)
  except restore.RestoreError as error:
    sys.exit(f"ERROR: {error}")
  ks = None if args.ks is None else [int(k) for k in args.ks]
  figs, summary = figures(run.model, run.decode_model, run.params, bundle, config,
                          num_examples=args.num_examples, example=args.example, ks=ks,
                          threshold=args.threshold)
  os.makedirs(args.out, exist_ok=True)
  for stem, fig in figs.items():
    fig.savefig(os.path.join(args.out, f"{stem}.png"), dpi=110)
  with open(os.path.join(args.out, "summary.json"), "w") as f:
    json.dump({"step": int(run.step), **summary}, f, indent=1)
  print(f"Step {run.step}: wrote {len(figs)} figures and summary.json to {args.out}")


if __name__ == "__main__":
  _define_flags()
  sys.argv = restore.with_saved_config(sys.argv)
  app.run(main)
