"""Multi-process start-up: jax.distributed for SLURM, TPU VMs and explicit flags.

`initialize()` is a no-op for a single process. Under `srun` with several tasks
and on Cloud TPU VMs, JAX reads the cluster from the environment (SLURM: one
process per task, task i driving local GPU SLURM_LOCALID; TPU: one process per
host); anywhere else pass --coordinator_address, --num_processes and
--process_id (launch/local_multiprocess.sh does). See launch/README.md.
"""

import glob
import os

from absl import flags
from absl import logging
import jax

_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for a multi-process run "
    "outside SLURM / TPU VMs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")

_GOOGLE_PCI_VENDOR = "0x1ae0"  # Cloud TPU chips appear as PCI devices of Google


def slurm_job_step() -> bool:
  """Inside an `srun` step of several tasks (what jax's SLURM detection reads)."""
  step_variables = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS",
                    "SLURM_PROCID", "SLURM_LOCALID")
  return (all(v in os.environ for v in step_variables) and
          int(os.environ["SLURM_NTASKS"]) > 1)


def tpu_vm() -> bool:
  """On a Cloud TPU VM (a single host of a slice is one too: initialize is cheap)."""
  for vendor_file in glob.glob("/sys/bus/pci/devices/*/vendor"):
    try:
      with open(vendor_file) as f:
        if f.read().strip() == _GOOGLE_PCI_VENDOR:
          return True
    except OSError:
      continue
  return False


def initialize():
  """Joins the job's processes; returns when every process is connected."""
  if _COORDINATOR.value is not None:
    if _NUM_PROCESSES.value is None or _PROCESS_ID.value is None:
      raise ValueError("--coordinator_address needs --num_processes and --process_id.")
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  elif slurm_job_step() or tpu_vm():
    jax.distributed.initialize()  # SLURM / TPU VM: everything auto-detected
  else:
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
      logging.warning("SLURM_NTASKS > 1 but not inside `srun`: running as a single "
                      "process. Launch with srun (launch/slurm_multinode.sbatch).")
    return
  logging.info("Process %d of %d", jax.process_index(), jax.process_count())
