"""Keep only the k most used atoms of every SDict layer: less compute, some accuracy.

The other atoms are dropped, not masked: their frequencies and every per-atom
filter (gain, phase bias, amplitude, phase; the decoder's decay and complex gain;
the question gate's per-atom outputs) are sliced away, so the pruned model really
runs a smaller dictionary (the dense mixer's cost is O(N·K·d + K³)). A layer
with K_l atoms keeps K_l·k / K of them (K = model.num_atoms), so the fusion
layers, whose dictionary is the union of K text and K vision atoms, keep 2k, and vision layers with
K_v = model.vision_atoms keep K_v·k / K. The pruned parameters then have exactly
the shapes of `pruned_clone(model, k)`, which runs them; only the atoms' initial
values differ, and apply never reads those.

Usage (which atoms to keep) is any per-layer score, e.g. `atoms.atom_usage` on
held-out inputs. It uses no labels, so choosing atoms on the split that is
then scored does not leak answers.
"""

import jax
import numpy as np

from sdict_jax import evaluators
from sdict_jax import model as model_lib
from sdict_jax import sharding

# Parameters of a mixer whose leading axis is the atom axis.
ATOM_PARAMS = ("omega", "gain", "phase_bias", "amp", "phase",  # SDictMixer
               "decay", "gain_re", "gain_im")  # CausalSDictMixer


def top_atoms(usage: np.ndarray, keep: int) -> np.ndarray:
  """Indices of the `keep` largest entries of usage [K], in increasing order.

  Increasing order keeps the surviving atoms in their original order, so that
  keeping all K atoms returns the parameters unchanged.
  """
  usage = np.asarray(usage)
  order = np.argsort(-usage, kind="stable")
  return np.sort(order[:keep])


def prune(model: model_lib.SDictVLM, params, usage: dict, k: int):
  """(model with k atoms per K, params keeping the top atoms by usage).

  usage: {layer name ('vision_0', ..., 'decoder_1'): scores [K_layer]}, one
  entry for every SDict layer. With tied vision atoms the vision layers share
  one dictionary, so they keep the atoms of highest total usage.
  """
  if model.mixer != "sdict":
    raise ValueError(f"Only SDict models have atoms to prune; this model's mixer is "
                     f"{model.mixer!r}.")
  num_atoms = model.num_atoms
  if not 1 <= k <= num_atoms:
    raise ValueError(f"k={k}: keep between 1 and model.num_atoms={num_atoms} atoms.")
  params = dict(params)  # shallow: untouched layers are shared, not copied
  tied = "vision_omega" in params
  if tied:
    vision_total = sum(np.asarray(u) for name, u in usage.items()
                       if name.startswith("vision_"))
    vision_keep = top_atoms(vision_total, len(vision_total) * k // num_atoms)
    params["vision_omega"] = params["vision_omega"][vision_keep]
  for name, scores in usage.items():
    if name not in params:
      raise ValueError(f"usage names layer {name!r}, which the parameters lack.")
    scores = np.asarray(scores)
    keep = (vision_keep if tied and name.startswith("vision_")
            else top_atoms(scores, len(scores) * k // num_atoms))
    mixer = dict(params[name]["mixer"])
    for key in ATOM_PARAMS:
      if key in mixer:
        if mixer[key].shape[0] != len(scores):
          raise ValueError(f"{name}/mixer/{key} has {mixer[key].shape[0]} atoms but "
                           f"usage[{name!r}] scores {len(scores)}.")
        mixer[key] = mixer[key][keep]
    params[name] = dict(params[name], mixer=mixer)
    gate = name.replace("fusion_", "question_gate_")
    if name.startswith("fusion_") and gate in params:
      # The question gate's per-atom half (Dense → [K]) follows its layer's atoms.
      per_atom = params[gate]["atoms"]
      params[gate] = dict(params[gate], atoms=dict(
          per_atom, kernel=per_atom["kernel"][:, keep], bias=per_atom["bias"][keep]))
  missing = _sdict_layer_names(model) - set(usage)
  if missing:
    raise ValueError(f"usage has no scores for layers {sorted(missing)}.")
  return pruned_clone(model, k), params


def pruned_clone(model: model_lib.SDictVLM, k: int) -> model_lib.SDictVLM:
  """`model` with k atoms per K (vision: K_v·k / K), the shapes `prune` leaves."""
  vision = model.vision_atoms
  return model.clone(num_atoms=k,
                     vision_atoms=None if vision is None else vision * k // model.num_atoms)


def _sdict_layer_names(model) -> set[str]:
  counts = {"vision": model.vision_layers, "text": model.text_layers,
            "fusion": model.fusion_layers, "decoder": model.decoder_layers}
  return {f"{kind}_{i}" for kind, n in counts.items() for i in range(n)}


def forward_gflops(model: model_lib.SDictVLM, params, batch: dict) -> float:
  """XLA's FLOP count of the multi-task forward pass, per example, in GFLOPs."""
  lowered = jax.jit(lambda p, b: model.apply({"params": p}, b)).lower(params, batch)
  cost = lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
    cost = cost[0]
  return float(cost["flops"]) / batch["image"].shape[0] / 1e9


def accuracy_vs_atoms(model, decode_model, params, usage: dict, ks, bundle, config,
                      mesh=None) -> list[dict]:
  """Held-out scores of the model pruned to each k in ks (Evaluator on `bundle`).

  Returns one row per k: {'k', 'gflops', 'vqa_accuracy', 'cider', ...} with
  every score the evaluator reports; 'gflops' is the forward pass per example.
  """
  mesh = sharding.make_mesh(config.mesh) if mesh is None else mesh
  example = model_lib.dummy_batch(1, config.data.image_size, config.data.max_text_len,
                                  config.data.max_caption_len, model.num_answers)
  rows = []
  for k in ks:
    pruned_model, pruned_params = prune(model, params, usage, k)
    evaluator = evaluators.Evaluator(pruned_model, pruned_clone(decode_model, k),
                                     bundle, config, mesh)
    scores, _ = evaluator.run(pruned_params)
    rows.append({"k": int(k), "gflops": forward_gflops(pruned_model, pruned_params,
                                                       example), **scores})
  return rows
