"""Multi-process start-up: jax.distributed for SLURM, TPU VMs and explicit flags.

`initialize()` is a no-op for a single process. On SLURM and Cloud TPU VMs JAX
detects the cluster itself; anywhere else pass --coordinator_address,
--num_processes and --process_id (launch/local_multiprocess.sh does).
"""

import os

from absl import flags
from absl import logging
import jax

_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for a multi-process run "
    "outside SLURM / TPU VMs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def _cluster_detected() -> bool:
  slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1
  tpu_pod = "TPU_WORKER_HOSTNAMES" in os.environ and "," in os.environ.get(
      "TPU_WORKER_HOSTNAMES", "")
  return slurm or tpu_pod


def initialize():
  """Joins the job's processes; returns when every process is connected."""
  if _COORDINATOR.value is not None:
    if _NUM_PROCESSES.value is None or _PROCESS_ID.value is None:
      raise ValueError("--coordinator_address needs --num_processes and --process_id.")
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  elif _cluster_detected():
    jax.distributed.initialize()  # SLURM / TPU VM: everything auto-detected
  else:
    return
  logging.info("Process %d of %d", jax.process_index(), jax.process_count())
