"""Where a compiled training step's time goes, op by op (`bench train --profile`).

The step runs under `jax.profiler.trace`; the trace is read back with
`jax.profiler.ProfileData` (no TensorBoard or xprof needed). On the CPU backend
every executed HLO instruction is one event on the XLA thread that ran it; its
`op_name` metadata in the compiled HLO names the model scope it came from
(`SDictVLM.fuse/fusion_0/mixer/...`), so each event is attributed to

  part:       vision encoder, text encoder, fusion, caption decoder, heads and
              losses, optimizer (the update outside the gradient's loop)
  component:  token mixing (the blocks' `mixer`), MLP matmuls, LayerNorm,
              question gate, the rest (GELU, residual adds, embeddings, ...)

What it cannot tell: times are summed over the threads that ran them (two ops
can overlap), so shares are of the ops' summed time, not of wall clock; an XLA
fusion that merges ops of two scopes is counted where its root op came from.
"""

import collections
import glob
import os
import re
import tempfile

import jax

# Scope substrings → part, checked in order (the text encoder runs inside fuse).
PART_SCOPES = (("SDictVLM.encode_text", "text encoder"),
               ("SDictVLM.encode_image", "vision encoder"),
               ("SDictVLM.fuse", "fusion"),
               ("SDictVLM.caption_logits", "caption decoder"),
               ("SDictVLM", "heads and losses"))
COMPONENT_SCOPES = (("/mixer/", "token mixing"), ("/question_gate_", "question gate"),
                    ("/question_film_", "question FiLM"), ("/mlp_in/", "MLP matmuls"),
                    ("/mlp_out/", "MLP matmuls"))
# The model's LayerNorm modules: a block's norm_mix / norm_mlp, the encoders' and
# the decoder's final vision_norm, text_norm, fusion_norm, decoder_norm.
_LAYER_NORM = re.compile(r"/(norm_mix|norm_mlp|vision_norm|text_norm|fusion_norm|"
                         r"decoder_norm)/")
_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%?([\w.\-]+) = \S+ ([\w\-]+)\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def instruction_metadata(hlo_text: str) -> dict[str, tuple[str, str]]:
  """HLO instruction name → (opcode, op_name metadata) of a compiled module."""
  metadata = {}
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.match(line)
    if match:
      op_name = _OP_NAME.search(line)
      metadata[match.group(1)] = (match.group(2), op_name.group(1) if op_name else "")
  return metadata


def classify(op_name: str) -> tuple[str, str]:
  """(part, component) of one op from its op_name."""
  part = next((p for scope, p in PART_SCOPES if scope in op_name), None)
  if part is None:  # outside the model: the loss sum in the loop, or the update
    part = "heads and losses" if "/while/" in op_name else "optimizer"
  component = next((c for scope, c in COMPONENT_SCOPES if scope in op_name), None)
  if component is None:
    component = "LayerNorm" if _LAYER_NORM.search(op_name) else "other"
  return part, component


def trace_op_times(run, steps: int, hlo_text: str) -> list[dict]:
  """Runs `run()` `steps` times under the profiler → one record per HLO op:
  {name, opcode, op_name, part, component, ms (per step)}."""
  metadata = instruction_metadata(hlo_text)
  with tempfile.TemporaryDirectory() as directory:
    with jax.profiler.trace(directory):
      for _ in range(steps):
        out = run()
      jax.block_until_ready(out)
    paths = glob.glob(os.path.join(directory, "**", "*.xplane.pb"), recursive=True)
    if not paths:
      raise RuntimeError(f"jax.profiler.trace wrote no .xplane.pb under {directory}.")
    data = jax.profiler.ProfileData.from_file(paths[0])
  nanoseconds = collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      for event in line.events:
        if event.name in metadata:  # XLA's thunks; skips runtime and Python events
          nanoseconds[event.name] += event.duration_ns
  records = []
  for name, ns in nanoseconds.items():
    opcode, op_name = metadata[name]
    part, component = classify(op_name)
    records.append({"name": name, "opcode": opcode, "op_name": op_name, "part": part,
                    "component": component, "ms": ns / 1e6 / steps})
  return sorted(records, key=lambda r: -r["ms"])


def primitive(op_name: str) -> str:
  """The JAX primitive at the end of an op_name ('.../mixer/triangular_solve')."""
  return op_name.rsplit("/", 1)[-1] or "?"


def summarise(records: list[dict], *, top: int = 8) -> dict:
  """Totals by (part, component), and the token mixing's time by primitive."""
  by_part = collections.Counter()
  mixing = collections.Counter()
  for r in records:
    by_part[(r["part"], r["component"])] += r["ms"]
    if r["component"] == "token mixing":
      mixing[primitive(r["op_name"])] += r["ms"]
  total = sum(r["ms"] for r in records)
  return {"total_ms": total,
          "by_part_component": [{"part": p, "component": c, "ms": ms}
                                for (p, c), ms in sorted(by_part.items())],
          "mixing_by_primitive": [{"primitive": k, "ms": ms}
                                  for k, ms in mixing.most_common(top)]}
