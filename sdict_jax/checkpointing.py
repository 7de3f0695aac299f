"""Orbax checkpoints of the train state and the Grain iterator, with safe resume.

A checkpoint holds params, optimizer state and step ('state') and the input
iterator's position ('data'), so a restarted run sees the same batches and
reproduces the same losses. Saves are asynchronous; the last `keep` are kept.
A latest checkpoint that cannot be read is reported, moved aside (not deleted)
and the previous one is used.
"""

import os
import shutil

from absl import logging
import grain
import orbax.checkpoint as ocp


ITEMS = ("state", "data")


def read_only_manager(directory: str) -> ocp.CheckpointManager:
  """A manager that reads `directory` and never writes, creates or moves anything."""
  options = ocp.CheckpointManagerOptions(create=False, read_only=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               item_names=ITEMS)


def steps_in(directory: str) -> list[int]:
  """Steps of the complete checkpoints in `directory` ([] if none or no directory)."""
  if not os.path.isdir(directory):
    return []
  manager = read_only_manager(directory)
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


class Checkpointer:
  """CheckpointManager for {'state': train state pytree, 'data': Grain iterator}."""

  def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self._options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save)
    self.manager = self._open()

  def _open(self):
    return ocp.CheckpointManager(self.directory, options=self._options,
                                 item_names=ITEMS)

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, data_iterator=None, *, force: bool = False):
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore_latest(self, abstract_state, data_iterator=None):
    """(state, step) of the newest readable checkpoint, or (None, 0) if none.

    `abstract_state` (ShapeDtypeStructs with shardings) says how to lay the
    arrays out, which may differ from the mesh that saved them. The iterator is
    restored in place.
    """
    for step in reversed(self.all_steps()):
      items = {"state": ocp.args.StandardRestore(abstract_state)}
      if data_iterator is not None:
        items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
      except Exception as error:  # pylint: disable=broad-except
        self._set_aside(step, error)
        continue
      return restored["state"], step
    return None, 0

  def _set_aside(self, step: int, error: Exception):
    """Moves an unreadable checkpoint to <dir>/unreadable/ and reopens the manager."""
    source = os.path.join(self.directory, str(step))
    target = os.path.join(self.directory, "unreadable", str(step))
    logging.error("Checkpoint at step %d in %s is unreadable (%s: %s). It is moved "
                  "to %s and the previous checkpoint is used.", step, self.directory,
                  type(error).__name__, error, target)
    print(f"WARNING: checkpoint step {step} unreadable ({type(error).__name__}); "
          f"moved to {target}, resuming from the previous one.", flush=True)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.exists(source):
      shutil.move(source, target)
    self.manager.close()
    self.manager = self._open()

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()
