r"""Compiles the real training step ahead of time and prints its memory per device.

  python -m sdict_jax.compile_check --config configs/sdict_1p1b.py --devices 8 \
      [--config.train.batch_size=128] [--config.mesh.fsdp=8]

With --devices N the step is compiled for N fake CPU devices (XLA's host
platform), so a laptop answers "does this model, batch and mesh fit on N
accelerators?" before any is rented. Nothing is allocated: the train state and
the batch are ShapeDtypeStructs carrying the shardings of train.py (parameters
by sharding.RULES, batch over data × fsdp, state donated), and `train.train_step`
itself is lowered and compiled. The numbers are XLA's `memory_analysis()` of the
per-device program: arguments (state + batch shard), outputs, temporaries
(activations kept for the backward pass, gradients, workspace) and their total
(minus what donation aliases). The CPU compiler schedules and fuses differently
from the GPU/TPU ones, so take the total as an estimate to within tens of per
cent, not a byte count. --devices 0 compiles for the real devices instead.
"""

import os
import sys


def _force_host_devices(argv):
  """--devices N (N > 0) → N fake CPU devices; must happen before jax is imported."""
  count = None
  for i, arg in enumerate(argv):
    if arg.startswith("--devices="):
      count = arg.split("=", 1)[1]
    elif arg == "--devices" and i + 1 < len(argv):
      count = argv[i + 1]
  count = 8 if count is None else int(count)
  if count > 0:
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={count}")


if __name__ == "__main__":
  _force_host_devices(sys.argv)

# pylint: disable=g-import-not-at-top,wrong-import-position
import functools
import math
import time
import types

from absl import app
from absl import flags
import jax

from sdict_jax import config_checks
from sdict_jax import sharding
from sdict_jax import train
from sdict_jax.data import sources

# --config (and its --config.x.y overrides) is train.py's flag.
flags.DEFINE_integer("devices", 8, "Fake CPU devices to compile for (0: the real "
                     "devices). Read before jax is imported.")


def data_sizes(config) -> tuple[int, int]:
  """(text vocabulary, VQA answers) without reading data when the config says.

  Real-data configs name them (config.data.vocab_size: the SentencePiece model's
  size; answer_vocab_size); embedded sources (shapes) are cheap to load.
  """
  if "vocab_size" in config.data:
    return config.data.vocab_size, config.data.get("answer_vocab_size", 0)
  bundle = sources.load(config.data, "train")
  return bundle.tokenizer.vocab_size, len(bundle.answer_vocab)


def build_model(config, *, decode=False):
  """train.build_model for a config, with vocabulary sizes from `data_sizes`."""
  vocab_size, num_answers = data_sizes(config)
  bundle = types.SimpleNamespace(tokenizer=types.SimpleNamespace(vocab_size=vocab_size),
                                 answer_vocab=[""] * num_answers)
  return train.build_model(config, bundle, decode=decode)


def lower_train_step(config, mesh):
  """(jax.stages.Lowered, parameter count) of train.py's update on `mesh`."""
  model = build_model(config)
  optimizer, _ = train.make_optimizer(config.optim, config.train.steps)
  base_rng = jax.random.PRNGKey(config.seed)
  vocab_size, num_answers = data_sizes(config)
  del vocab_size
  batch_shape = functools.partial(train.example_batch, config,
                                  num_answers=num_answers)
  example = batch_shape(config.train.batch_size // config.optim.accum_steps)

  init_state = train.make_init_state(model, optimizer, example)

  with jax.set_mesh(mesh):
    abstract_state = jax.eval_shape(init_state, base_rng)
    state_shardings = sharding.named_shardings(abstract_state, mesh)
    abstract_state = sharding.with_shardings(abstract_state, state_shardings)
    abstract_batch = sharding.with_shardings(
        jax.eval_shape(lambda: batch_shape(config.train.batch_size)),
        jax.tree.map(lambda _: sharding.batch_sharding(mesh), example))
    update = train.jit_train_step(model, optimizer, config, base_rng,
                                  state_shardings, mesh)
    lowered = update.lower(abstract_state, abstract_batch)
  num_params = sum(math.prod(p.shape) for p in jax.tree.leaves(abstract_state["params"]))
  return lowered, num_params


def memory_per_device(compiled) -> dict:
  """Bytes per device: arguments, outputs, temporaries, aliased and total."""
  stats = compiled.memory_analysis()
  memory = {"arguments": stats.argument_size_in_bytes,
            "outputs": stats.output_size_in_bytes,
            "temporaries": stats.temp_size_in_bytes,
            "aliased": stats.alias_size_in_bytes}
  memory["total"] = (memory["arguments"] + memory["outputs"] + memory["temporaries"] -
                     memory["aliased"])
  return memory


def main(argv):
  del argv
  config = flags.FLAGS.config
  if config is None:
    raise app.UsageError("Pass --config configs/<experiment>.py.")
  config_checks.validate(config, num_devices=jax.device_count(),
                         num_local_devices=jax.local_device_count())
  mesh = sharding.make_mesh(config.mesh)
  start = time.perf_counter()
  lowered, num_params = lower_train_step(config, mesh)
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  compiled_at = time.perf_counter()
  memory = memory_per_device(compiled)
  print(f"model: {config.model.mixer}, {num_params:,} parameters, compute "
        f"{config.train.compute_dtype}; global batch {config.train.batch_size} "
        f"(accum_steps {config.optim.accum_steps})")
  print(f"mesh: {dict(mesh.shape)} on {jax.device_count()} "
        f"{jax.devices()[0].platform} devices")
  print(f"lowered in {lowered_at - start:.0f}s, compiled in "
        f"{compiled_at - lowered_at:.0f}s")
  print("memory per device:")
  for name, size in memory.items():
    print(f"  {name:12s} {size / 1e9:9.3f} GB  ({size:,} bytes)")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
