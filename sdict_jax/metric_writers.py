"""Where training reports go: metrics.jsonl, TensorBoard events, a progress bar.

`<workdir>/metrics.jsonl` holds one JSON object per logging step or evaluation:
{"step": int, "<name>": float, ...}. Tests and notebooks read it; only process 0
writes.
"""

import json
import math
import os
import sys

import jax
import tensorboardX
import tqdm


class MetricWriter:
  """Appends scalars to metrics.jsonl and TensorBoard (process 0 only)."""

  def __init__(self, workdir: str):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    if self.active:
      os.makedirs(workdir, exist_ok=True)
      self._tensorboard = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: dict):
    if not self.active:
      return
    row = {"step": int(step)}
    row.update({k: _as_json_number(v) for k, v in scalars.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    for name, value in row.items():
      if name != "step" and isinstance(value, float):  # NaN/Inf: JSON only
        self._tensorboard.add_scalar(name, value, step)
    self._tensorboard.flush()

  def close(self):
    if self.active:
      self._tensorboard.close()


def _as_json_number(value):
  value = float(value)
  return value if math.isfinite(value) else str(value)  # JSON has no NaN


def read_metrics(workdir: str) -> list[dict]:
  """Rows of metrics.jsonl; after a resume, the latest row of each (step, keys)."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def progress_bar(total: int, initial: int):
  """Terminal progress: steps/s and ETA from tqdm; loss shown as a postfix."""
  return tqdm.tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                   file=sys.stderr, disable=jax.process_index() != 0,
                   mininterval=1.0)
