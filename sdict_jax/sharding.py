"""One device mesh ("data", "fsdp", "tensor") from a laptop to a pod.

The batch is split over data × fsdp. Parameters (and with them the optimizer
state) are sharded by named tactics, chosen per parameter by the first regex of
`RULES` that matches its path:
  replicate   every device holds the whole parameter (small vectors, atoms);
  fsdp        the largest dimension divisible by the fsdp axis size is split over
              'fsdp' (ZeRO-3 style; XLA all-gathers a weight where it is used);
  tensor_dimN dimension N is split over 'tensor' (Megatron: MLP and projection
              kernels by columns in, rows out; SDict filters by channel), and the
              largest other dimension over 'fsdp'.
Activations: the residual stream is split over data × fsdp by batch
(`constrain_batch`) and replicated over 'tensor'. The SDict mixer acts along the
sequence axis and is channel-separable, so `channel_parallel` runs it on a
1/tensor slice of the channels with no collective inside; the sequence axis is
never sharded (an FFT over a sharded axis would need an all-to-all).

Model code reads the mesh set by `jax.set_mesh(mesh)`; with none set (or a
tensor axis of size 1) these helpers change nothing.
"""

import functools
import re

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
BATCH = P(BATCH_AXES)

# (path regex, tactic): first match wins. Paths look like
# 'params/fusion_0/mixer/gain' (and the same under the optimizer state).
RULES = (
    (r".*/mlp_in/kernel", "tensor_dim1"),  # [d, r·d]: columns
    (r".*/mlp_in/bias", "tensor_dim0"),  # [r·d]
    (r".*/mlp_out/kernel", "tensor_dim0"),  # [r·d, d]: rows; one all-reduce after
    (r".*/mixer/(gain|phase_bias|gain_re|gain_im)", "tensor_dim1"),  # [K, d]
    (r".*/mixer/skip", "tensor_dim0"),  # [d]
    (r".*/mixer/(query|key|value|gate)/kernel", "tensor_dim1"),  # [d, heads|d, ...]
    (r".*/mixer/(query|key|value)/bias", "tensor_dim0"),  # [heads, head_dim]
    (r".*/mixer/out/kernel", "tensor_dim0"),  # [heads|d, ..., d]
    # Atoms, norms, biases and embeddings of positions are tiny: replicate.
    (r".*(omega|decay|gain|phase|amp|skip|norm|cls|segment|bias).*", "replicate"),
    (r".*", "fsdp"),
)


# ------------------------------------------------------------------------- Mesh


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, int, int]:
  """Sizes of (data, fsdp, tensor); one of them may be -1: fill the rest."""
  sizes = [int(mesh_config[axis]) for axis in AXES]
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"config.mesh={dict(mesh_config)}: sizes must be positive, with "
                     f"at most one -1 (fill the remaining devices).")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f"config.mesh={dict(mesh_config)} cannot fill {num_devices} "
                       f"devices: {known} does not divide {num_devices}.")
    sizes[sizes.index(-1)] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise ValueError(f"config.mesh={dict(mesh_config)} has {int(np.prod(sizes))} "
                     f"devices but {num_devices} are present; use -1 for one axis.")
  return tuple(sizes)


def make_mesh(mesh_config, devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(mesh_config, len(devices))
  return Mesh(mesh_utils.create_device_mesh(shape, devices), AXES)


# ------------------------------------------------------------ Parameter tactics


def replicate(shape, mesh) -> P:
  del shape, mesh
  return P()


def fsdp(shape, mesh) -> P:
  """The largest dimension divisible by the fsdp size → 'fsdp'."""
  return P(*_fsdp_axes(shape, mesh))


def _fsdp_axes(shape, mesh, taken=()) -> list:
  spec = [None] * len(shape)
  size = mesh.shape["fsdp"]
  for dim in np.argsort(shape, kind="stable")[::-1]:
    if size > 1 and dim not in taken and shape[dim] % size == 0:
      spec[dim] = "fsdp"
      break
  return spec


def tensor_parallel(shape, mesh, *, dim: int) -> P:
  """Dimension `dim` → 'tensor' (when divisible), the largest other → 'fsdp'."""
  size = mesh.shape["tensor"]
  if size == 1 or dim >= len(shape) or shape[dim] % size:
    return fsdp(shape, mesh)
  spec = _fsdp_axes(shape, mesh, taken=(dim,))
  spec[dim] = "tensor"
  return P(*spec)


TACTICS = {
    "replicate": replicate,
    "fsdp": fsdp,
    "tensor_dim0": functools.partial(tensor_parallel, dim=0),
    "tensor_dim1": functools.partial(tensor_parallel, dim=1),
}


def _path_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
                  for k in path)


def partition_specs(tree, mesh: Mesh, rules=RULES):
  """PartitionSpecs for a pytree of arrays or ShapeDtypeStructs, by path rules."""

  def spec(path, leaf):
    name = _path_name(path)
    tactic = next(t for pattern, t in rules if re.fullmatch(pattern, name))
    shape = tuple(getattr(leaf, "shape", ()))
    return TACTICS[tactic](shape, mesh) if shape else P()

  return jax.tree_util.tree_map_with_path(spec, tree)


def named_shardings(tree, mesh: Mesh, rules=RULES):
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec),
                      partition_specs(tree, mesh, rules))


def with_shardings(abstract_tree, shardings):
  """ShapeDtypeStructs that carry their shardings (for jit lowering and restore)."""
  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abstract_tree, shardings)


# ------------------------------------------------------------------ Activations


def _context_mesh():
  """The mesh set by jax.set_mesh, or None."""
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh.empty else mesh


def constrain_batch(x):
  """x split by its leading (batch) axis over data × fsdp, replicated otherwise.

  Without it the partitioner may follow an fsdp-sharded weight into the
  activations and reshard the residual stream back and forth.
  """
  mesh = _context_mesh()
  if mesh is None or x.shape[0] % (mesh.shape["data"] * mesh.shape["fsdp"]):
    return x
  return jax.lax.with_sharding_constraint(x, P(BATCH_AXES))


CHANNELS, SUMMED, SHARED = "channels", "summed", "shared"  # kinds of outputs


def channel_parallel(fn, channels, shared, out_kinds=CHANNELS):
  """fn(channels, shared) with each device on a 1/tensor slice of the channels.

  `channels` is a pytree of arrays whose last axis is the channel axis (split
  over 'tensor'); `shared` one of arrays every slice needs whole (atoms, masks).
  fn must mix along other axes only, so its work needs no collective: each
  device computes its own channels. `out_kinds` (a pytree prefix of fn's output)
  says what each output is:
    CHANNELS  channel axis last; each device keeps its slice;
    SUMMED    a sum over channels (e.g. a per-sequence residual): the slices'
              partial sums are added, a psum of that small array;
    SHARED    the same on every device (a pmean makes that visible to JAX when
              it was computed next to split data; free when it was not).
  The batch axes stay with the automatic partitioner (data × fsdp).
  """
  mesh = _context_mesh()
  if mesh is None or mesh.shape["tensor"] == 1:
    return fn(channels, shared)
  size = mesh.shape["tensor"]
  for leaf in jax.tree.leaves(channels):
    if leaf.shape[-1] % size:
      raise ValueError(f"A tensor axis of {size} devices cannot split {leaf.shape[-1]} "
                       f"channels; choose model.width divisible by config.mesh.tensor.")
  last_axis = lambda leaf: P(*[None] * (leaf.ndim - 1), "tensor")
  by_kind = lambda f, outputs: jax.tree.map(
      lambda kind, sub: jax.tree.map(functools.partial(f, kind), sub), out_kinds, outputs)

  def local(channels, shared):
    combine = {CHANNELS: lambda out: out, SUMMED: lambda out: jax.lax.psum(out, "tensor"),
               SHARED: lambda out: jax.lax.pmean(out, "tensor")}
    return by_kind(lambda kind, out: combine[kind](out), fn(channels, shared))

  out_specs = by_kind(lambda kind, out: last_axis(out) if kind == CHANNELS else P(),
                      jax.eval_shape(fn, channels, shared))
  return jax.shard_map(
      local, mesh=mesh, axis_names={"tensor"}, out_specs=out_specs,
      in_specs=(jax.tree.map(last_axis, channels), jax.tree.map(lambda _: P(), shared)),
  )(channels, shared)


# ---------------------------------------------------------------------- Batches


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, BATCH)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Process-local numpy batch → global jax.Arrays split over data × fsdp."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      local_batch)
