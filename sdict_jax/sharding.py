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
(`constrain_batch`) and replicated over 'tensor'. The SDict mixers act along the
tokens of each sequence and channel apart, so `local_map` runs them by shard_map
on each device's block of batch and channels (d over 'tensor') with no
collective inside; the sequence axis is never split (an FFT over a split axis
would need an all-to-all).

Model code reads the mesh set by `jax.set_mesh(mesh)`; with none set (or one
device) these helpers change nothing.
"""

import dataclasses
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
  mesh = Mesh(mesh_utils.create_device_mesh(shape, devices), AXES)
  _check_processes_own_batch_rows(mesh, mesh_config)
  return mesh


def _check_processes_own_batch_rows(mesh, mesh_config):
  """Each process feeds its own input shard, so the rows of the batch (split over
  data × fsdp) must not be shared between processes: a 'tensor' group stays
  inside one process, and every process holds as many rows."""
  rows = mesh.devices.reshape(mesh.shape["data"] * mesh.shape["fsdp"], -1)
  owners = [{device.process_index for device in row} for row in rows]
  per_process = {p: sum(o == {p} for o in owners) for o in owners for p in o}
  if any(len(o) > 1 for o in owners) or len(set(per_process.values())) > 1:
    raise ValueError(f"config.mesh={dict(mesh_config)}: the 'tensor' axis spans "
                     f"processes, which would then share rows of the batch; keep "
                     f"config.mesh.tensor within one host's {jax.local_device_count()} "
                     f"devices.")


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

# Logical axes of activations and filters → mesh axes.
LOGICAL = {"batch": BATCH_AXES, "channels": "tensor"}
ACTIVATIONS = P("batch", None, "channels")  # [batch, tokens, channels]


@dataclasses.dataclass(frozen=True)
class SummedOverChannels:
  """Layout of an output that sums over channels: the blocks' partial sums add."""
  layout: P


def _context_mesh():
  """The mesh set by jax.set_mesh, or None."""
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh.empty else mesh


def batch_is_split() -> bool:
  """Whether the mesh set by jax.set_mesh splits the batch (data × fsdp > 1)."""
  mesh = _context_mesh()
  return mesh is not None and mesh.shape["data"] * mesh.shape["fsdp"] > 1


def constrain_batch(x):
  """x split by its leading (batch) axis over data × fsdp, replicated otherwise.

  Without it the partitioner may follow an fsdp-sharded weight into the
  activations and keep the residual stream in other layouts.
  """
  mesh = _context_mesh()
  if mesh is None or x.shape[0] % (mesh.shape["data"] * mesh.shape["fsdp"]):
    return x
  return jax.lax.with_sharding_constraint(x, P(BATCH_AXES))


def local_map(fn, args, in_layouts, out_layouts):
  """fn(*args) run by each device on its own block of batch and channels.

  For operators that act along the tokens of each sequence and channel apart
  (the SDict mixers): nothing crosses devices inside. This is also the only way
  to split an FFT by batch: XLA's partitioners all-gather an FFT's operand.
  Layouts are PartitionSpecs of logical axes ('batch': data × fsdp, 'channels':
  'tensor', None: whole), one per array of args (None args pass through) and of
  fn's output. An output without 'channels' is the same on every channel block
  (a pmean says so to JAX: atom-only quantities), unless its layout is
  SummedOverChannels(...): then the blocks' partial sums are added (a psum of
  that small array, e.g. a per-sequence residual).
  A batch not divisible by data × fsdp (a decoding batch of 1) is not split.
  """
  mesh = _context_mesh()
  if mesh is None or mesh.size == 1:
    return fn(*args)
  tensor = mesh.shape["tensor"]
  for arg, layout in zip(args, in_layouts):
    for axis, size in zip(layout, getattr(arg, "shape", ())):
      if axis == "channels" and size % tensor:
        raise ValueError(f"A tensor axis of {tensor} devices cannot split {size} "
                         f"channels; choose model.width divisible by config.mesh.tensor.")
  batch_sizes = {size for arg, layout in zip(args, in_layouts)
                 for axis, size in zip(layout, getattr(arg, "shape", ())) if axis == "batch"}
  split_batch = all(b % (mesh.shape["data"] * mesh.shape["fsdp"]) == 0
                    for b in batch_sizes)
  physical = lambda layout: P(*[
      None if a is None or (a == "batch" and not split_batch) else LOGICAL[a]
      for a in layout])
  is_layout = lambda x: isinstance(x, (P, SummedOverChannels))
  present = [i for i, arg in enumerate(args) if arg is not None]

  def combine(layout, out):
    if isinstance(layout, SummedOverChannels):
      return jax.lax.psum(out, "tensor")
    return out if "channels" in layout else jax.lax.pmean(out, "tensor")

  def local(*present_args):
    full = list(args)
    for i, arg in zip(present, present_args):
      full[i] = arg
    return jax.tree.map(combine, out_layouts, fn(*full), is_leaf=is_layout)

  out_specs = jax.tree.map(
      lambda l: physical(l.layout if isinstance(l, SummedOverChannels) else l),
      out_layouts, is_leaf=is_layout)
  return jax.shard_map(local, mesh=mesh, out_specs=out_specs,
                       in_specs=tuple(physical(in_layouts[i]) for i in present),
                       )(*[args[i] for i in present])


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
