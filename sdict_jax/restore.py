"""A trained run from its workdir: config, model and parameters (evaluate, predict).

A training run leaves in its workdir
  config.json           the experiment config (config.to_json()),
  checkpoints/<step>/   Orbax checkpoints of {'params', 'opt_state', 'step'}.
`load(workdir, config, bundle)` rebuilds the model and restores the newest
readable checkpoint's parameters onto this machine's devices, whatever mesh
saved them. Nothing in the workdir is written or moved: a run that is still
training can be evaluated.

The config comes from config.json unless --config names a file. So that
`--config.x=y` overrides also work on the saved config, `with_saved_config(argv)`
turns `--workdir W` into `--config=<this file>:W`, which ml_collections loads
through `get_config(W)` below.
"""

import dataclasses
import json
import os
from typing import Any

from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import orbax.checkpoint as ocp

from sdict_jax import checkpointing
from sdict_jax import decoding
from sdict_jax import model as model_lib
from sdict_jax import sharding
from sdict_jax import train

CONFIG_FILE = "config.json"
_TRAIN_HINT = ("train one with `python -m sdict_jax.train --config configs/shapes.py "
               "--workdir {workdir}`, or pass the --workdir of a finished run")


class RestoreError(ValueError):
  """The workdir cannot provide a model; the message names the problem and the fix."""


def checkpoint_directory(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def _manager(workdir: str) -> ocp.CheckpointManager:
  return checkpointing.read_only_manager(checkpoint_directory(workdir))


def checkpoint_steps(workdir: str) -> list[int]:
  """Steps of the complete checkpoints in the workdir (none: [])."""
  return checkpointing.steps_in(checkpoint_directory(workdir))


def require_checkpoint(workdir: str) -> list[int]:
  """The checkpoint steps; RestoreError if the workdir has none."""
  if not os.path.isdir(workdir):
    raise RestoreError(f"--workdir {workdir} does not exist: "
                       f"{_TRAIN_HINT.format(workdir=workdir)}.")
  steps = checkpoint_steps(workdir)
  if not steps:
    raise RestoreError(f"--workdir {workdir} holds no checkpoint (nothing in "
                       f"{checkpoint_directory(workdir)}): "
                       f"{_TRAIN_HINT.format(workdir=workdir)}.")
  return steps


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a training run saved in <workdir>/config.json."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise RestoreError(f"{path} does not exist, so the run's config is unknown. Pass "
                       f"the config file the run was trained with: --config "
                       f"configs/<experiment>.py (plus the same --config.x=y "
                       f"overrides).")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def get_config(workdir: str) -> ml_collections.ConfigDict:
  """ml_collections entry point: `--config=sdict_jax/restore.py:<workdir>`."""
  return load_config(workdir)


def _flag_value(argv: list[str], name: str):
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      return arg.split("=", 1)[1]
    if arg == f"--{name}" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def with_saved_config(argv: list[str]) -> list[str]:
  """argv with `--config=<restore.py>:<workdir>` added when --config is absent
  and the workdir has a config.json, so `--config.x=y` overrides apply to it."""
  has_config = any(a == "--config" or a.startswith("--config=") for a in argv)
  workdir = _flag_value(argv, "workdir")
  if has_config or not workdir or ":" in workdir or not os.path.isfile(
      os.path.join(workdir, CONFIG_FILE)):
    return argv
  return [argv[0], f"--config={os.path.abspath(__file__)}:{workdir}", *argv[1:]]


# ---------------------------------------------------------------------------
# Command-line flags shared by evaluate and predict.
# ---------------------------------------------------------------------------


def define_flags():
  """--config and --workdir (train's own, as train defines them on import) and
  the decoding flags; flags already defined are kept."""
  if "config" not in flags.FLAGS:
    config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                    lock_config=True)
  definitions = {
      "workdir": lambda: flags.DEFINE_string(
          "workdir", None, "Checkpoints and metrics go here."),
      "decode": lambda: flags.DEFINE_enum(
          "decode", "greedy", decoding.METHODS, "Caption decoding method."),
      "beam_width": lambda: flags.DEFINE_integer(
          "beam_width", 4, "Beam search: hypotheses kept per step."),
      "length_penalty": lambda: flags.DEFINE_float(
          "length_penalty", 0.6, "GNMT α: scores are logprob / ((5 + length) / 6)^α."),
      "top_p": lambda: flags.DEFINE_float(
          "top_p", 0.9, "Nucleus sampling: probability mass kept."),
      "temperature": lambda: flags.DEFINE_float(
          "temperature", 1.0, "Nucleus sampling: softmax temperature."),
      "seed": lambda: flags.DEFINE_integer("seed", 0, "Nucleus sampling: random seed."),
  }
  for name, define in definitions.items():
    if name not in flags.FLAGS:
      define()


def decode_options_from_flags() -> decoding.DecodeOptions:
  f = flags.FLAGS
  return decoding.DecodeOptions(method=f.decode, beam_width=f.beam_width,
                                length_penalty=f.length_penalty, top_p=f.top_p,
                                temperature=f.temperature)


def workdir_and_config_from_flags() -> tuple[str, ml_collections.ConfigDict]:
  """The --workdir (checked to hold a checkpoint) and its config."""
  workdir = flags.FLAGS.workdir
  if not workdir:
    raise RestoreError("Pass --workdir <the directory of a training run>.")
  require_checkpoint(workdir)
  config = flags.FLAGS.config
  return workdir, config if config is not None else load_config(workdir)


# ---------------------------------------------------------------------------
# Model and parameters.
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Restored:
  model: model_lib.SDictVLM  # decode=False: encoders, heads, recomputed decoding
  decode_model: model_lib.SDictVLM  # decode=True: incremental decoding
  params: Any
  step: int


def abstract_train_state(config, model, mesh):
  """Shapes, dtypes and shardings of the train state, as train.py lays it out."""
  optimizer, _ = train.make_optimizer(config.optim, config.train.steps)
  example = model_lib.dummy_batch(1, config.data.image_size, config.data.max_text_len,
                                  config.data.max_caption_len, model.num_answers)

  def init_state(rng):
    params = model.init({"params": rng, "noise": rng}, example, train=False)["params"]
    return {"params": params, "opt_state": optimizer.init(params),
            "step": jnp.zeros((), jnp.int32)}

  shapes = jax.eval_shape(init_state, jax.random.PRNGKey(0))
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      shapes, sharding.named_shardings(shapes, mesh))


def restore_params(workdir: str, config, model, mesh):
  """(params, step) of the newest checkpoint that reads; older ones are tried
  when the newest fails (e.g. one cut short by a crash)."""
  steps = require_checkpoint(workdir)
  abstract = abstract_train_state(config, model, mesh)
  manager = _manager(workdir)
  errors = []
  try:
    for step in reversed(steps):
      try:
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract)))
      except Exception as error:  # pylint: disable=broad-except
        logging.warning("Checkpoint %d in %s is unreadable: %s", step, workdir, error)
        errors.append(f"step {step}: {type(error).__name__}: {error}")
        continue
      return restored["state"]["params"], step
  finally:
    manager.close()
  raise RestoreError(
      f"No checkpoint in {checkpoint_directory(workdir)} matches the config's model "
      f"(first error: {errors[0][:500]}). Pass the config the run was trained with "
      f"(--config, or the run's config.json).")


def load(workdir: str, config, bundle, mesh) -> Restored:
  """The run's models (built for `bundle`'s vocabularies) and newest parameters."""
  model = train.build_model(config, bundle)
  decode_model = train.build_model(config, bundle, decode=True)
  params, step = restore_params(workdir, config, model, mesh)
  logging.info("Restored step %d from %s", step, workdir)
  return Restored(model=model, decode_model=decode_model, params=params, step=step)
