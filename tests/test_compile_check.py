"""`python -m sdict_jax.compile_check` lowers train.py's real step for fake devices,
and its memory estimate follows the batch the training run would feed it."""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def compile_check(*overrides):
  """Bytes per device by name, from the command's printout."""
  env = dict(os.environ, PYTHONPATH=REPO)
  env.pop("XLA_FLAGS", None)  # --devices sets the fake device count
  result = subprocess.run(
      [sys.executable, "-m", "sdict_jax.compile_check", "--config=configs/tiny.py",
       "--devices=2", "--config.mesh.data=2", *overrides],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "on 2 cpu devices" in result.stdout, result.stdout
  memory = dict(re.findall(r"^\s+(\w+)\s+[\d.]+ GB\s+\(([\d,]+) bytes\)$",
                           result.stdout, re.M))
  assert set(memory) == {"arguments", "outputs", "temporaries", "aliased", "total"}
  return {name: int(size.replace(",", "")) for name, size in memory.items()}


@pytest.mark.slow  # two compilations
def test_memory_counts_every_question_of_an_image():
  one = compile_check()
  four = compile_check("--config.data.questions_per_image=4")
  assert 0 < one["total"] < 1e9  # the tiny model
  # Four questions per image: a larger batch argument and four fusion passes'
  # activations, traced from the same example batch train.py builds.
  assert four["arguments"] > one["arguments"]
  assert four["temporaries"] > one["temporaries"]
