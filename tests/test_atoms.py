"""Atom analysis and pruning (issue #8): each test is named for what it proves."""

import io
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
from matplotlib import image as mpl_image
import numpy as np
import pytest

from configs import shapes as shapes_config
from sdict_jax import atom_pruning
from sdict_jax import atoms
from sdict_jax import checkpointing
from sdict_jax import spectral
from sdict_jax import train
from sdict_jax.data import sources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 8


def tiny_config(**model_overrides):
  config = shapes_config.get_config()
  config.data.image_size = 32
  config.data.eval_examples = 8
  config.model.update(dict(width=16, num_atoms=K, vision_atoms=None, vision_layers=1,
                           text_layers=1, fusion_layers=1, decoder_layers=1) |
                      model_overrides)
  config.train.update(steps=2, batch_size=2)
  config.eval.update(num_examples=4, batch_size=4, max_decode_len=6)
  return config


def apply(model, params, batch):
  return jax.jit(lambda p, b: model.apply({"params": p}, b))(params, batch)


def init_params(model, batch, seed=0):
  rng = jax.random.PRNGKey(seed)
  return jax.jit(model.init)({"params": rng, "noise": rng}, batch)["params"]


@pytest.fixture(scope="module")
def tiny():
  """A freshly initialised tiny SDict model, its data and a held-out batch."""
  config = tiny_config()
  bundle = sources.load(config.data, "validation")
  model = train.build_model(config, bundle)
  batch = jax.tree.map(jnp.asarray, atoms.heldout_batch(bundle, config, 4))
  params = init_params(model, batch)
  inputs, answers = atoms.mixer_inputs(model, params, batch)
  return dict(config=config, bundle=bundle, model=model, batch=batch, params=params,
              layers=atoms.sdict_layers(model, params), inputs=inputs, answers=answers)


# ---------------------------------------------------------------------------
# Analysis.
# ---------------------------------------------------------------------------


def test_initial_frequencies_are_those_of_a_fresh_model(tiny):
  layers = tiny["layers"]
  assert [l.name for l in layers] == ["vision_0", "text_0", "fusion_0", "decoder_0"]
  for layer in layers:
    np.testing.assert_array_equal(layer.omega, layer.initial)
    assert np.all(atoms.frequency_drift(layer) == 0)
  assert layers[0].omega.shape == (K, 2) and layers[2].omega.shape == (2 * K,)


def test_drift_is_the_distance_moved_by_each_atom(tiny):
  layer = tiny["layers"][0]
  moved = layer._replace(omega=layer.omega + np.array([0.3, 0.4], np.float32))
  np.testing.assert_allclose(atoms.frequency_drift(moved), 0.5, rtol=1e-6)


def test_mixer_inputs_have_the_layouts_the_mixers_see(tiny):
  inputs, batch, config = tiny["inputs"], tiny["batch"], tiny["config"]
  grid = (4, 4)  # 32 / 8
  text_len, caption_len = config.data.max_text_len, config.data.max_caption_len
  assert inputs["vision_0"].x.shape == (4, 16, 16) and inputs["vision_0"].grid == grid
  np.testing.assert_array_equal(inputs["text_0"].mask, batch["question"] > 0)
  assert inputs["fusion_0"].x.shape == (4, 1 + 16 + text_len, 16)
  np.testing.assert_array_equal(inputs["fusion_0"].mask[:, 17:], batch["question"] > 0)
  assert inputs["decoder_0"].x.shape == (4, 1 + 16 + caption_len, 16)
  np.testing.assert_array_equal(inputs["decoder_0"].mask[:, 17:],
                                batch["caption_in"] > 0)
  assert tiny["answers"].shape == (4,)


def test_an_atom_absent_from_the_input_is_dead():
  n, omega = 32, 2 * np.pi * np.array([1, 3, 5, 7], np.float32) / 32
  layer = atoms.Layer("text_0", "text", omega, omega, {})
  t = np.arange(n)[:, None]
  x = (np.cos(omega[0] * t) * np.array([1.0, -2.0]) +
       np.sin(omega[2] * t + 0.4) * np.array([0.5, 1.5]))[None].astype(np.float32)
  usage = atoms.atom_usage([layer], {"text_0": atoms.MixerInput(
      jnp.asarray(x), None, None)}, ridge=1e-4)["text_0"]
  np.testing.assert_array_equal(atoms.dead_atoms(usage, 0.1), [False, True, False, True])
  assert usage[1] < 1e-3 * usage[0]


def test_decoder_activity_is_the_size_of_each_atoms_recurrent_term():
  rng = np.random.default_rng(0)
  b, n, k, d = 2, 6, 3, 4
  value = rng.normal(size=(b, n, d)).astype(np.float32)
  mask = np.ones((b, n), np.float32)
  mask[1, 4:] = 0
  omega = np.array([0.2, 1.0, 2.5], np.float32)
  raw_decay = np.array([-1.0, 0.0, 1.0], np.float32)
  gain_re, gain_im = (rng.normal(size=(k, d)).astype(np.float32) for _ in range(2))
  layer = atoms.Layer("decoder_0", "decoder", omega, omega, dict(
      omega=omega, decay=raw_decay, gain_re=gain_re, gain_im=gain_im))
  activity = atoms.atom_activity([layer], {"decoder_0": atoms.MixerInput(
      jnp.asarray(value), jnp.asarray(mask), None)}, ridge=1e-3)["decoder_0"]
  # The recurrence s ← λ s + v_t, term_t = G ⊙ s, one step at a time.
  rate = np.exp(-np.log1p(np.exp(raw_decay)) + 1j * omega)[:, None]
  expected = np.zeros((b, k))
  for i in range(b):
    state = np.zeros((k, d), complex)
    for t in range(n):
      state = rate * state + value[i, t] * mask[i, t]
      expected[i] += mask[i, t] * np.abs((gain_re + 1j * gain_im) * state).mean(-1)
    expected[i] /= mask[i].sum()
  np.testing.assert_allclose(activity, expected, rtol=2e-4)


def test_token_shares_sum_to_one_and_find_the_token_that_built_the_atom(tiny):
  layer = tiny["layers"][2]  # fusion_0
  inputs = tiny["inputs"]["fusion_0"]
  shares = atoms.token_shares(layer, inputs, 1e-3)
  np.testing.assert_allclose(shares.sum(-1), 1.0, atol=2e-3)
  padded = np.asarray(inputs.mask) == 0
  assert np.all(np.abs(shares.transpose(0, 2, 1)[padded]) < 1e-6)
  # A sequence that is zero except at one token: that token is the whole atom.
  x = np.zeros((1, 10, 3), np.float32)
  x[0, 6] = [1.0, -2.0, 0.5]
  one_token = atoms.MixerInput(jnp.asarray(x), jnp.ones((1, 10)), None)
  shares = atoms.token_shares(layer._replace(omega=layer.omega[:3]), one_token, 1e-3)
  np.testing.assert_allclose(shares[0, :, 6], 1.0, atol=1e-4)


def test_word_alignment_covers_the_most_frequent_caption_words(tiny):
  alignment, words, counts = atoms.word_alignment(
      tiny["model"], tiny["params"], tiny["batch"], tiny["bundle"].tokenizer,
      max_words=6)
  assert alignment.shape == (2 * K, len(words)) and 0 < len(words) <= 6
  assert np.all(np.isfinite(alignment))
  assert list(counts) == sorted(counts, reverse=True)
  captions = " ".join(tiny["bundle"].tokenizer.decode(c.tolist())
                      for c in np.asarray(tiny["batch"]["caption_out"]))
  assert all(w in captions.split() for w in words)


def test_vision_atom_spectrum_peaks_at_the_atoms_frequency(tiny):
  layer = tiny["layers"][0]
  grid = (8, 8)
  omega = 2 * np.pi * np.array([[1, 2], [3, 0]], np.float32) / 8
  mixer = {k: v[:2] for k, v in layer.mixer.items()}
  patterns, spectra = atoms.vision_atom_images(
      layer._replace(omega=omega, mixer=mixer), grid)
  assert patterns.shape == spectra.shape == (2, 8, 8)
  for atom, (u, v) in enumerate([(1, 2), (3, 0)]):
    peaks = {tuple(p) for p in np.argwhere(spectra[atom] > spectra[atom].max() - 1e-3)}
    assert peaks == {(4 + u, 4 + v), (4 - u, 4 - v)}


def test_reconstruction_error_is_the_fraction_outside_the_atoms_span(tiny):
  errors = atoms.reconstruction_errors(tiny["layers"], tiny["inputs"], 1e-3)
  assert set(errors) == {"vision_0", "text_0", "fusion_0"}
  assert all(0 < e < 1 for e in errors.values())
  # Self-conjugate atoms (DC, Nyquist) have no sine column, so the 8 vision atoms
  # span fewer than the 16 patches of the grid: some of every input is left over.
  layer, x = tiny["layers"][0], tiny["inputs"]["vision_0"].x
  full = spectral.reconstruction_loss(x, jnp.asarray(layer.omega), ridge=1e-3,
                                      grid=(4, 4))
  np.testing.assert_allclose(errors["vision_0"], full, rtol=1e-5)


def test_every_figure_draws_something(tiny):
  layers, inputs, model = tiny["layers"], tiny["inputs"], tiny["model"]
  activity = atoms.atom_activity(layers, inputs, model.ridge)
  usage = {n: a.mean(0) for n, a in activity.items()}
  alignment, words, _ = atoms.word_alignment(model, tiny["params"], tiny["batch"],
                                             tiny["bundle"].tokenizer)
  figs = [
      atoms.plot_frequency_drift(layers), atoms.plot_usage(usage),
      atoms.plot_vision_atoms(*atoms.vision_atom_images(layers[0], (4, 4))),
      atoms.plot_word_alignment(alignment, words),
      atoms.plot_example_activity(np.asarray(tiny["batch"]["image"][0]), "Q: ?",
                                  {n: a[0] for n, a in activity.items()}),
      atoms.plot_reconstruction(atoms.reconstruction_errors(layers, inputs, 1e-3)),
      atoms.plot_tradeoff([{"k": 4, "gflops": 1.0, "vqa_accuracy": 0.5, "cider": 0.2},
                           {"k": 8, "gflops": 2.0, "vqa_accuracy": 0.7, "cider": 0.4}]),
  ]
  for fig in figs:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=40)
    pixels = mpl_image.imread(io.BytesIO(buffer.getvalue()))
    assert pixels[..., :3].std() > 0.01  # not a blank canvas


# ---------------------------------------------------------------------------
# Pruning.
# ---------------------------------------------------------------------------


def test_keeping_all_atoms_reproduces_the_model(tiny):
  model, params, batch = tiny["model"], tiny["params"], tiny["batch"]
  usage = atoms.atom_usage(tiny["layers"], tiny["inputs"], model.ridge)
  pruned_model, pruned_params = atom_pruning.prune(model, params, usage, K)
  assert pruned_model.num_atoms == K
  jax.tree.map(np.testing.assert_array_equal, pruned_params, params)
  expected = apply(model, params, batch)
  got = apply(pruned_model, pruned_params, batch)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), got, expected)


def test_pruning_drops_atoms_and_compute(tiny):
  model, params, batch = tiny["model"], tiny["params"], tiny["batch"]
  usage = atoms.atom_usage(tiny["layers"], tiny["inputs"], model.ridge)
  pruned_model, pruned = atom_pruning.prune(model, params, usage, K // 2)
  assert pruned["vision_0"]["mixer"]["omega"].shape == (K // 2, 2)
  assert pruned["text_0"]["mixer"]["gain"].shape == (K // 2, 16)
  assert pruned["fusion_0"]["mixer"]["omega"].shape == (K,)  # 2K atoms keep 2k
  assert pruned["decoder_0"]["mixer"]["decay"].shape == (K // 2,)
  outputs = apply(pruned_model, pruned, batch)
  assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(outputs))
  assert (atom_pruning.forward_gflops(pruned_model, pruned, batch) <
          atom_pruning.forward_gflops(model, params, batch))


@pytest.mark.parametrize("tie", [False, True])
def test_pruning_a_model_with_more_vision_atoms(tie):
  vision_atoms = 10  # every distinct real frequency of the 4x4 patch grid (K = 8)
  config = tiny_config(vision_atoms=vision_atoms, tie_vision_atoms=tie)
  bundle = sources.load(config.data, "validation")
  model = train.build_model(config, bundle)
  batch = jax.tree.map(jnp.asarray, atoms.heldout_batch(bundle, config, 2))
  params = init_params(model, batch)
  layers = atoms.sdict_layers(model, params)
  assert [l.omega.shape[0] for l in layers if l.kind == "vision"] == [vision_atoms]
  assert [l.omega.shape[0] for l in layers if l.kind == "fusion"] == [2 * K]
  inputs, _ = atoms.mixer_inputs(model, params, batch)
  usage = atoms.atom_usage(layers, inputs, model.ridge)
  pruned_model, pruned = atom_pruning.prune(model, params, usage, K // 2)
  kept = vision_atoms * (K // 2) // K  # in proportion: 5 of 10
  assert (pruned_model.num_atoms, pruned_model.vision_atoms) == (K // 2, kept)
  vision_omega = pruned["vision_omega"] if tie else pruned["vision_0"]["mixer"]["omega"]
  assert vision_omega.shape == (kept, 2)
  assert pruned["vision_0"]["mixer"]["gain"].shape == (kept, 16)
  assert pruned["fusion_0"]["mixer"]["omega"].shape == (K,)
  outputs = apply(pruned_model, pruned, batch)
  assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(outputs))


def test_pruning_keeps_the_most_used_atoms_in_order(tiny):
  model, params = tiny["model"], tiny["params"]
  rng = np.random.default_rng(1)
  usage = {l.name: rng.permutation(len(l.omega)).astype(float) for l in tiny["layers"]}
  _, pruned = atom_pruning.prune(model, params, usage, 3)
  for layer in tiny["layers"]:
    keep = len(layer.omega) * 3 // K
    expected = np.sort(np.argsort(-usage[layer.name])[:keep])
    np.testing.assert_array_equal(pruned[layer.name]["mixer"]["omega"],
                                  layer.omega[expected])


@pytest.mark.slow
def test_pruning_tied_vision_atoms_keeps_one_shared_dictionary():
  config = tiny_config(vision_layers=2, tie_vision_atoms=True)
  bundle = sources.load(config.data, "validation")
  model = train.build_model(config, bundle)
  batch = jax.tree.map(jnp.asarray, atoms.heldout_batch(bundle, config, 2))
  params = init_params(model, batch)
  layers = atoms.sdict_layers(model, params)
  usage = {l.name: np.arange(len(l.omega), dtype=float) for l in layers}
  usage["vision_1"] = usage["vision_1"][::-1] * 0.5  # the sum still favours the last
  pruned_model, pruned = atom_pruning.prune(model, params, usage, 2)
  np.testing.assert_array_equal(pruned["vision_omega"], params["vision_omega"][K - 2:])
  assert pruned["vision_1"]["mixer"]["gain"].shape == (2, 16)
  assert np.all(np.isfinite(apply(pruned_model, pruned, batch)["box"]))


def test_pruning_rejects_a_k_outside_the_dictionary(tiny):
  usage = atoms.atom_usage(tiny["layers"], tiny["inputs"], 1e-3)
  for k in (0, K + 1):
    with pytest.raises(ValueError, match="keep between 1 and"):
      atom_pruning.prune(tiny["model"], tiny["params"], usage, k)


# ---------------------------------------------------------------------------
# The command line.
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_writes_non_empty_pngs(tiny, tmp_path):
  """`python -m sdict_jax.atoms` on a workdir with a checkpoint and its config.json."""
  config = tiny["config"]
  optimizer, _ = train.make_optimizer(config.optim, config.train.steps)
  params = tiny["params"]
  state = {"params": params, "opt_state": optimizer.init(params),
           "step": jnp.asarray(3, jnp.int32)}
  workdir = tmp_path / "run"
  checkpointer = checkpointing.Checkpointer(str(workdir / "checkpoints"),
                                            async_save=False)
  checkpointer.save(3, state, force=True)
  checkpointer.close()
  (workdir / "config.json").write_text(config.to_json())
  out = tmp_path / "figures"
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  result = subprocess.run(
      [sys.executable, "-m", "sdict_jax.atoms", f"--workdir={workdir}", f"--out={out}",
       "--num_examples=4", "--ks=4,8"], cwd=REPO, env=env, capture_output=True,
      text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  expected = {"frequency_drift", "atom_usage", "reconstruction", "vision_atoms_vision_0",
              "word_alignment", "example_atoms", "accuracy_vs_atoms"}
  assert {p.stem for p in out.glob("*.png")} == expected
  for png in out.glob("*.png"):
    assert mpl_image.imread(png)[..., :3].std() > 0.01, png
  summary = json.loads((out / "summary.json").read_text())
  assert summary["step"] == 3
  assert [row["k"] for row in summary["accuracy_vs_atoms"]] == [4, 8]
  assert summary["accuracy_vs_atoms"][0]["gflops"] < summary["accuracy_vs_atoms"][1][
      "gflops"]
