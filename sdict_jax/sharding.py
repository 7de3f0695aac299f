"""One device mesh ("data", "fsdp", "tensor") from a laptop to a pod.

The batch is split over data × fsdp. Parameters (and with them the optimizer
state) are sharded by named tactics, chosen per parameter by the first regex of
`RULES` that matches its path:
  fsdp        the largest dimension divisible by the fsdp axis size is split over
              'fsdp' (ZeRO-3 style; XLA all-gathers a weight where it is used);
  replicate   every device holds the whole parameter (small vectors, atoms).
The SDict mixer acts along the sequence axis and is channel-separable, so the
sequence axis is never sharded (an FFT over a sharded axis would need an
all-to-all).
"""

import re

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp", "tensor")
BATCH = P(("data", "fsdp"))

# (path regex, tactic): first match wins. Atoms, gains and norms are tiny: replicate.
RULES = (
    (r".*(omega|decay|gain|phase|amp|skip|norm|cls|segment|bias).*", "replicate"),
    (r".*", "fsdp"),
)


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


def _path_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def _fsdp_spec(shape, fsdp_size: int) -> P:
  if fsdp_size == 1:
    return P()
  for dim in np.argsort(shape)[::-1]:
    if shape[dim] % fsdp_size == 0 and shape[dim] >= fsdp_size:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def partition_specs(tree, mesh: Mesh, rules=RULES):
  """PartitionSpecs for a pytree of arrays or ShapeDtypeStructs, by path rules."""
  fsdp_size = mesh.shape["fsdp"]

  def spec(path, leaf):
    name = _path_name(path)
    for pattern, tactic in rules:
      if re.fullmatch(pattern, name):
        break
    if tactic == "replicate" or not getattr(leaf, "shape", ()):
      return P()
    return _fsdp_spec(leaf.shape, fsdp_size)

  return jax.tree_util.tree_map_with_path(spec, tree)


def named_shardings(tree, mesh: Mesh, rules=RULES):
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec),
                      partition_specs(tree, mesh, rules))


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
