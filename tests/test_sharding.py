"""Sharded training is the same computation: every mesh gives the same losses, the
state is created sharded, the tensor-parallel mixer moves no activations, and a
checkpoint restores onto another mesh and device count and continues identically.

The training runs happen in two subprocesses (one per core) with 8 fake CPU devices
each: XLA reads the device count once, at start-up, and this pytest process keeps
its own devices. They split the meshes (`python tests/test_sharding.py OUT.json 0|1` by hand).
"""

import functools
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESHES = {  # name: (data, fsdp, tensor)
    "one_device": (1, 1, 1),
    "data": (8, 1, 1),
    "data_fsdp": (2, 4, 1),
    "data_fsdp_tensor": (2, 2, 2),
}
STEPS, SAVE_AFTER = 4, 2
# Two workers, one per core: their meshes, and checkpoints of the first mesh of a
# pair restored onto the second (8 devices -> 1, 1 -> 8, and 8 -> 8 re-meshed).
WORKERS = ((("one_device", "data_fsdp_tensor"),
            (("data_fsdp_tensor", "one_device"), ("one_device", "data_fsdp_tensor"))),
           (("data", "data_fsdp"), (("data", "data_fsdp"),)))
# XLA's slower optimisation passes buy nothing for these tiny programs.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
# Losses of different meshes differ by their summation order alone; with the question
# gate (configs/shapes.py's default) four steps move them apart by up to 1.1e-5.
RTOL = 3e-5


def tiny_config():
  """configs/tiny.py (width 32, one block of each kind, 32 px), 8 examples a step."""
  from sdict_jax import config_files
  config = config_files.get_config(os.path.join(ROOT, "configs", "tiny.py"))
  config.train.update(batch_size=8, steps=10)
  # Adam's first updates are nearly sign(gradient): a parameter whose gradient is
  # at rounding level moves by ±lr depending on the mesh's summation order. At
  # 1e-3 that keeps four steps' losses within 1e-5 (at 1e-2: 3e-5), while they
  # still fall by 10 %. The filters' larger step (filter_lr_mult) would undo that:
  # at 100 × 1e-3 their rounding-level differences move the losses by 3e-5.
  config.optim.update(warmup_steps=1, lr=1e-3, filter_lr_mult=1.0)
  return config


# ----------------------------------------------------------------- the worker


def _collective_sizes(hlo_text: str) -> list[int]:
  """Elements moved by each cross-device collective of a compiled HLO module."""
  sizes = []
  pattern = re.compile(r"=\s*(\(?[^=]*?\)?)\s+(all-reduce|all-gather|all-to-all|"
                       r"reduce-scatter|collective-permute)(-start)?\(")
  for line in hlo_text.splitlines():
    match = pattern.search(line)
    # replica_groups={{0},{1},…}: a collective over axes of size 1 moves nothing.
    if match and not re.search(r"replica_groups=\{\{\d+\}(,\{\d+\})*\}", line):
      shapes = re.findall(r"\[([\d,]*)\]", match.group(1))
      sizes.append(max(int(np.prod([int(s) for s in dims.split(",") if s]))
                       for dims in shapes))
  return sizes


def _mixer_collectives(mesh):
  """Largest collective (elements) in the forward + backward pass of each SDict
  operator with channels split over 'tensor', and one device's activation slice."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec as P
  from sdict_jax import atom_init
  from sdict_jax import mixers
  from sdict_jax import sharding
  from sdict_jax import spectral

  # d ≫ 2K, as in any real model: per-sequence Gram-sized arrays (B·2K·2K, the
  # cotangent of a masked layer's shared dictionary) then stay below one device's
  # activation block (B·N·d / 8), which is what must never move.
  batch, grid, width, k = 16, (4, 4), 256, 8
  split = NamedSharding(mesh, P(None, None, "tensor"))
  x = jax.device_put(jax.random.normal(jax.random.PRNGKey(0),
                                       (batch, grid[0] * grid[1], width)), split)
  mask = jnp.ones((batch, grid[0] * grid[1])).at[:, -3:].set(0)

  def causal(params, x):  # as in mixers.CausalSDictMixer
    return sharding.local_map(
        lambda x, omega, decay, gain, skip: spectral.causal_sdict(
            x, omega, decay, gain, skip=skip),
        (x, params["omega"], params["decay"], params["gain"], params["skip"]),
        (sharding.ACTIVATIONS, P(), P(), P(None, "channels"), P("channels")),
        sharding.ACTIVATIONS)

  def bidirectional(module, **kwargs):
    def apply(params, x):
      y, aux = module.apply(params, x, train=True, mutable=["aux"], **kwargs)
      return y + sum(jax.tree.leaves(aux))
    return apply, lambda: module.init(jax.random.PRNGKey(1), x, **kwargs)

  causal_params = {"gain": jnp.ones((k, width)), "skip": jnp.ones((width,)),
                   "omega": jnp.linspace(0.1, 3.0, k), "decay": jnp.ones((k,))}
  operators = {
      "2-D": bidirectional(mixers.SDictMixer(
          atom_init.radial_grid_frequencies(k, grid)), grid=grid),
      "1-D masked": bidirectional(mixers.SDictMixer(atom_init.mel_frequencies(k)),
                                  mask=mask),
      "causal": (causal, lambda: causal_params),
  }
  # Filters ([K, d], [d]) split by channel like x; atoms replicated.
  layout = lambda leaf: NamedSharding(mesh, P(*[None] * (leaf.ndim - 1), "tensor")
                                      if leaf.ndim and leaf.shape[-1] == width else P())
  largest = {}
  with jax.set_mesh(mesh):
    for name, (apply, init) in operators.items():
      params = init()
      params = jax.device_put(params, jax.tree.map(layout, params))
      loss = lambda params, x, apply=apply: jnp.sum(apply(params, x)**2)
      step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), out_shardings=(
          None, (jax.tree.map(layout, params), split)))
      hlo = step.lower(params, x).compile().as_text()
      largest[name] = max(_collective_sizes(hlo), default=0)
  return largest, x.size // mesh.devices.size


def _train_runs(out_path, worker):
  """Losses, shardings and restores of one worker's meshes, as JSON in out_path."""
  import jax
  from sdict_jax import checkpointing
  from sdict_jax import sharding
  from sdict_jax import train
  from sdict_jax.data import sources

  config = tiny_config()
  bundle = sources.load(config.data, "train")
  data = train.make_train_data(config, bundle)  # the region fields included
  batches = [b for b, _ in zip(iter(data), range(STEPS))]
  model = train.build_model(config, bundle)
  optimizer, _ = train.make_optimizer(config.optim, config.train.steps)
  base_rng = jax.random.PRNGKey(0)
  example = train.example_batch(config, config.train.batch_size,
                                len(bundle.answer_vocab))

  init_state = train.make_init_state(model, optimizer, example)

  mesh_names, restores = WORKERS[worker]
  meshes, updates, shardings = {}, {}, {}
  for name in mesh_names:  # as in train.py
    shape = MESHES[name]
    mesh = sharding.make_mesh(dict(zip(sharding.AXES, shape)),
                              jax.devices()[:int(np.prod(shape))])
    meshes[name] = mesh
    with jax.set_mesh(mesh):
      abstract = jax.eval_shape(init_state, base_rng)
      shardings[name] = sharding.named_shardings(abstract, mesh)
      updates[name] = jax.jit(
          functools.partial(train.train_step, model=model, optimizer=optimizer,
                            config=config, base_rng=base_rng),
          in_shardings=(shardings[name], sharding.batch_sharding(mesh)),
          out_shardings=(shardings[name], sharding.replicated(mesh)),
          donate_argnums=(0,))

  def run(name, state, first_step):
    losses = []
    with jax.set_mesh(meshes[name]):
      for batch in batches[first_step:]:
        state, parts = updates[name](state, sharding.global_batch(batch, meshes[name]))
        losses.append(float(parts["loss"]))
        if len(losses) + first_step == SAVE_AFTER and first_step == 0:
          checkpointers[name].save(SAVE_AFTER, state, force=True)
          checkpointers[name].wait()
    return losses

  results = {"losses": {}, "specs": {}, "local_shapes": {}, "restored": {}}
  workdir = tempfile.mkdtemp()
  checkpointers = {name: checkpointing.Checkpointer(os.path.join(workdir, name))
                   for name in mesh_names}
  for name in mesh_names:
    with jax.set_mesh(meshes[name]):
      state = jax.jit(init_state, out_shardings=shardings[name])(base_rng)
    kernel = state["params"]["vision_0"]["mlp_in"]["kernel"]
    results["specs"][name] = {
        path: [a if a is None or isinstance(a, str) else list(a) for a in spec]
        for path, spec in _some_specs(state)}
    results["local_shapes"][name] = list(kernel.addressable_shards[0].data.shape)
    results["losses"][name] = run(name, state, 0)
  for source, target in restores:
    with jax.set_mesh(meshes[target]):
      abstract = sharding.with_shardings(jax.eval_shape(init_state, base_rng),
                                         shardings[target])
      state, step = checkpointers[source].restore_latest(abstract)
    same_layout = all(a.sharding == s for a, s in zip(
        jax.tree.leaves(state), jax.tree.leaves(shardings[target])))
    results["restored"][f"{source}->{target}"] = {
        "step": step, "same_layout": same_layout,
        "losses": run(target, state, SAVE_AFTER)}
  for checkpointer in checkpointers.values():
    checkpointer.close()
  if worker == 1:
    results["mixer_collectives"], results["activation_slice"] = _mixer_collectives(
        sharding.make_mesh(dict(data=1, fsdp=1, tensor=8)))
  with open(out_path, "w") as f:
    json.dump(results, f)


def _some_specs(state):
  for path in ("params/vision_0/mlp_in/kernel", "params/vision_0/mlp_out/kernel",
               "params/vision_0/mixer/gain", "params/vision_0/mixer/omega",
               "params/decoder_0/mixer/value/kernel", "params/token_embedding/embedding"):
    leaf = state
    for key in path.split("/"):
      leaf = leaf[key]
    yield path, leaf.sharding.spec


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("sharding")
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
             XLA_FLAGS=f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}")
  workers = [subprocess.Popen([sys.executable, __file__, str(tmp / f"{i}.json"), str(i)],
                              env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
             for i in range(len(WORKERS))]
  merged = {}
  for i, worker in enumerate(workers):
    _, stderr = worker.communicate(timeout=900)
    assert worker.returncode == 0, stderr[-4000:]
    with open(tmp / f"{i}.json") as f:
      for key, value in json.load(f).items():
        if isinstance(value, dict):
          merged.setdefault(key, {}).update(value)
        else:
          merged[key] = value
  return merged


# --------------------------------------------------------------------- tests


@pytest.mark.slow
def test_every_mesh_gives_the_same_losses(results):
  reference = np.array(results["losses"]["one_device"])
  assert len(reference) == STEPS and np.all(np.isfinite(reference))
  assert abs(reference[-1] - reference[0]) > 1e-3  # the steps do change the model
  for name, losses in results["losses"].items():
    np.testing.assert_allclose(losses, reference, rtol=RTOL, err_msg=name)


@pytest.mark.slow
def test_state_is_created_sharded_by_the_rules(results):
  specs = results["specs"]
  assert specs["one_device"]["params/vision_0/mlp_in/kernel"] == [None, None]
  # Megatron MLP over 'tensor', the other dimension over 'fsdp'.
  assert specs["data_fsdp_tensor"]["params/vision_0/mlp_in/kernel"] == ["fsdp", "tensor"]
  assert specs["data_fsdp_tensor"]["params/vision_0/mlp_out/kernel"] == ["tensor", "fsdp"]
  # SDict filters [K, d]: channels over 'tensor' (as the mixer splits them), K over
  # 'fsdp' (gathered for the mixer, like any fsdp weight).
  assert specs["data_fsdp_tensor"]["params/vision_0/mixer/gain"] == ["fsdp", "tensor"]
  assert specs["data_fsdp_tensor"]["params/decoder_0/mixer/value/kernel"] == [
      "fsdp", "tensor"]
  assert specs["data_fsdp_tensor"]["params/vision_0/mixer/omega"] == []
  assert specs["data_fsdp"]["params/vision_0/mlp_in/kernel"] == [None, "fsdp"]
  # Each device stores only its block: [32, 64] split 2 x 2.
  assert results["local_shapes"]["one_device"] == [32, 64]
  assert results["local_shapes"]["data_fsdp_tensor"] == [16, 32]
  assert results["local_shapes"]["data_fsdp"] == [32, 16]


@pytest.mark.slow
def test_checkpoint_restores_onto_another_mesh_and_device_count(results):
  for name, restored in results["restored"].items():
    source, target = name.split("->")
    assert restored["step"] == SAVE_AFTER, name
    assert restored["same_layout"], name
    np.testing.assert_allclose(restored["losses"],
                               results["losses"][source][SAVE_AFTER:], rtol=RTOL,
                               err_msg=name)
    np.testing.assert_allclose(restored["losses"],
                               results["losses"][target][SAVE_AFTER:], rtol=RTOL,
                               err_msg=name)


@pytest.mark.slow
def test_tensor_parallel_mixers_move_no_activations(results):
  # Only atom-sized arrays cross devices (gradients of the shared atoms and of
  # per-sequence Gram matrices, summed over channel blocks; per-sequence
  # residuals): none as large as one device's block of the activations.
  for name, largest in results["mixer_collectives"].items():
    assert largest < results["activation_slice"], (name, largest)


def test_rules_cover_parameters_and_optimizer_state():
  import jax
  from jax.sharding import AbstractMesh, PartitionSpec as P
  from sdict_jax import sharding

  mesh = AbstractMesh((2, 4, 2), sharding.AXES)
  tree = {"params": {"fusion_0": {"mlp_in": {"kernel": np.zeros((32, 128)),
                                             "bias": np.zeros((128,))},
                                  "mixer": {"phase_bias": np.zeros((8, 32)),
                                            "amp": np.zeros((8,))},
                                  "norm_mix": {"scale": np.zeros((32,))}},
                     "patch_projection": {"kernel": np.zeros((192, 32))}},
          "opt_state": [{"mu": {"fusion_0": {"mlp_in": {"kernel": np.zeros((32, 128))}}}}]}
  specs = sharding.partition_specs(jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree), mesh)
  assert specs["params"]["fusion_0"]["mlp_in"]["kernel"] == P("fsdp", "tensor")
  assert specs["params"]["fusion_0"]["mlp_in"]["bias"] == P("tensor")
  assert specs["params"]["fusion_0"]["mixer"]["phase_bias"] == P("fsdp", "tensor")
  assert specs["params"]["fusion_0"]["mixer"]["amp"] == P()
  assert specs["params"]["fusion_0"]["norm_mix"]["scale"] == P()
  assert specs["params"]["patch_projection"]["kernel"] == P("fsdp", None)
  assert specs["opt_state"][0]["mu"]["fusion_0"]["mlp_in"]["kernel"] == P("fsdp", "tensor")


def test_mesh_shape_fills_one_axis_and_names_bad_configs():
  from sdict_jax import sharding
  assert sharding.mesh_shape({"data": -1, "fsdp": 2, "tensor": 2}, 8) == (2, 2, 2)
  with pytest.raises(ValueError, match="cannot fill"):
    sharding.mesh_shape({"data": -1, "fsdp": 3, "tensor": 1}, 8)
  with pytest.raises(ValueError, match="at most one -1"):
    sharding.mesh_shape({"data": -1, "fsdp": -1, "tensor": 1}, 8)


if __name__ == "__main__":
  _train_runs(sys.argv[1], int(sys.argv[2]))
