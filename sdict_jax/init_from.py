"""Starts a training run from another run's checkpoint: pre-train, then fine-tune.

  config.init_from       a workdir (its newest checkpoint), its checkpoints/ folder,
                         or one checkpoint, <workdir>/checkpoints/<step>
  config.init_from_step  a step of that workdir instead of the newest (optional)
  config.init_exclude    regexes of parameter paths (as `vision_0/mlp_in/kernel`,
                         matched in full) to initialise afresh instead of loading
  config.init_optimizer  True (the paper): Adam's moments (and its step count, for
                         their bias correction) carry over with their parameters;
                         False: a fresh optimizer state

Parameters are matched by path. The VQA and box heads may differ from the
checkpoint's (a new answer vocabulary): they are initialised afresh and listed in
the log. A different text vocabulary, width, number of atoms or of layers is an
error that names the parameters and both shapes: nothing is dropped or invented
silently. The new run starts at step 0 with its own learning-rate schedule and
input position, reads only the arrays it keeps, lays them out on its own mesh
(whatever mesh wrote them) and writes nothing anywhere; train.py calls it only
when the run's own workdir holds no checkpoint, so a stopped fine-tuning run
resumes from its own.
"""

import dataclasses
import hashlib
import json
import os
import re

from absl import logging
import jax
import ml_collections
import optax
import orbax.checkpoint as ocp
from etils import epath

from sdict_jax import checkpointing

# Parameters that depend on the task's answers, not on what pre-training learned,
# and the object selector's read-outs, which a run from before them lacks (a
# fine-tuning run that turns them on starts them afresh, listed in the log).
HEADS = (r"(vqa_head|box_head|relation_head)_\d+/.*|object_selector/.*|object_head/.*"
         r"|objectness_head/.*|relation_direction/.*|relative_gate/.*")
TOKEN_EMBEDDING = "token_embedding/embedding"
_LISTED = 12  # problems named one by one in an error message


def _name(keypath) -> str:
  """'params/vision_0/mlp_in/kernel': the path as sharding.RULES see it."""
  return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
                  for k in keypath)


class InitFromError(ValueError):
  """config.init_from cannot start this run; the message names the path, the
  problem and the fix."""


@dataclasses.dataclass
class Source:
  path: str  # config.init_from as given
  checkpoint_dir: str  # the folder of step folders
  steps: list[int]  # the steps to try, best first
  config: ml_collections.ConfigDict | None  # the source run's config.json, if found


@dataclasses.dataclass
class Report:
  """What init_from did, for the log and for tests."""
  source: str
  step: int
  loaded: list[str]  # parameter paths read from the checkpoint
  fresh: dict[str, str]  # parameter path -> why it is initialised afresh
  not_loaded: list[str]  # checkpoint parameters left out by config.init_exclude
  optimizer: str  # what became of the optimizer state

  def summary(self) -> str:
    fresh = "; ".join(f"{path} ({why})" for path, why in self.fresh.items())
    return (f"Initialised from {self.source} (step {self.step}): {len(self.loaded)} "
            f"parameters loaded, {len(self.fresh)} initialised afresh"
            f"{': ' + fresh if fresh else ''}. Optimizer state: {self.optimizer}. "
            f"Training starts at step 0.")


# ------------------------------------------------------------------ The source


def find_source(path: str, step: int | None = None) -> Source:
  """The checkpoint folder and steps config.init_from names, or InitFromError."""
  hint = ("Pass the --workdir of a finished (pre-)training run, or one of its "
          "checkpoints, <workdir>/checkpoints/<step>")
  if not path:
    raise InitFromError("config.init_from is empty. " + hint + ".")
  if not os.path.exists(path):
    raise InitFromError(f"config.init_from={path}: no such file or directory. {hint}.")
  full = os.path.abspath(path)
  name = os.path.basename(full.rstrip(os.sep))
  if name.isdigit() and os.path.isdir(os.path.join(full, "state")):  # one checkpoint
    checkpoint_dir, named_step = os.path.dirname(full.rstrip(os.sep)), int(name)
    if step is not None and step != named_step:
      raise InitFromError(
          f"config.init_from={path} is the checkpoint of step {named_step} but "
          f"config.init_from_step={step}. Drop config.init_from_step, or pass the "
          f"workdir with the step you want.")
    step = named_step
  elif os.path.isdir(os.path.join(full, "checkpoints")):
    checkpoint_dir = os.path.join(full, "checkpoints")
  elif name == "checkpoints":
    checkpoint_dir = full
  else:
    raise InitFromError(f"config.init_from={path} holds no checkpoint (no checkpoints/ "
                        f"folder and not a checkpoint folder itself). {hint}.")
  steps = checkpointing.steps_in(checkpoint_dir)
  if not steps:
    raise InitFromError(
        f"config.init_from={path} holds no complete checkpoint (nothing in "
        f"{checkpoint_dir}; the run may not have reached its first "
        f"config.train.checkpoint_every). {hint}.")
  if step is not None and step not in steps:
    raise InitFromError(
        f"config.init_from={path} has no complete checkpoint of step {step}; it has "
        f"steps {steps}. Set config.init_from_step to one of them, or leave it unset "
        f"for the newest.")
  return Source(path=path, checkpoint_dir=checkpoint_dir,
                steps=[step] if step is not None else steps[::-1],
                config=_source_config(os.path.dirname(checkpoint_dir)))


def _source_config(workdir: str) -> ml_collections.ConfigDict | None:
  try:
    with open(os.path.join(workdir, "config.json")) as f:
      return ml_collections.ConfigDict(json.load(f))
  except (OSError, ValueError):
    return None


def _shapes_in_checkpoint(checkpoint_dir: str, step: int):
  """({path: shape} of every array of the checkpoint's train state, its tree of
  metadata); reads no array."""
  metadata = ocp.StandardCheckpointHandler().metadata(
      epath.Path(checkpoint_dir) / str(step) / "state")
  tree = getattr(metadata, "tree", metadata)
  return {_name(path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}, tree


# ------------------------------------------------------------------ The plan


def _params(flat: dict) -> dict:
  return {name[len("params/"):]: value for name, value in flat.items()
          if name.startswith("params/")}


def _excluded(path: str, patterns) -> bool:
  return any(re.fullmatch(pattern, path) for pattern in patterns)


def plan_parameters(new: dict, old: dict, exclude=(), *, describe=None):
  """(loaded paths, {fresh path: why}, checkpoint paths not loaded), from the
  shapes of this run's parameters (`new`) and the checkpoint's (`old`), both
  {path: shape}; InitFromError when the models differ beyond the heads."""
  describe = describe or _Describe(None, None, "config.init_from")
  for pattern in exclude:
    if not any(_excluded(path, [pattern]) for path in (*new, *old)):
      raise InitFromError(
          f"config.init_exclude pattern {pattern!r} matches no parameter of this run "
          f"or of {describe.path} (patterns match whole paths such as "
          f"{sorted(new)[0]!r}); fix the pattern or remove it.")
  _check_vocabulary(new, old, exclude, describe)
  loaded, fresh, problems = [], {}, []
  for path, shape in sorted(new.items()):
    if _excluded(path, exclude):
      fresh[path] = "config.init_exclude"
    elif old.get(path) == shape:
      loaded.append(path)
    elif re.fullmatch(HEADS, path):
      fresh[path] = ("absent from the checkpoint" if path not in old else
                     f"head of {old[path]} in the checkpoint, {shape} here")
    elif path in old:
      problems.append(f"{path}: {old[path]} in the checkpoint, {shape} in this run")
    else:
      problems.append(f"{path}: {shape} in this run, absent from the checkpoint")
  not_loaded = sorted(path for path in old if path not in new and
                      _excluded(path, exclude))
  problems += [f"{path}: {old[path]} in the checkpoint, absent from this run"
               for path in sorted(old) if path not in new and path not in not_loaded
               and not re.fullmatch(HEADS, path)]
  if problems:
    listed = "\n  ".join(problems[:_LISTED])
    more = (f"\n  ... and {len(problems) - _LISTED} more" if len(problems) > _LISTED
            else "")
    raise InitFromError(
        f"config.init_from={describe.path}: the checkpoint's model differs from this "
        f"run's in {len(problems)} parameters:\n  {listed}{more}\n"
        f"{describe.model_difference()}Give this run the source's model: its "
        f"config.model (and data.image_size, which sets the patch grid), or list "
        f"the parameters to initialise afresh in config.init_exclude (regexes of "
        f"paths, e.g. 'question_gate_.*').")
  return loaded, fresh, not_loaded


def _check_vocabulary(new, old, exclude, describe):
  """InitFromError when the text vocabularies differ and the embedding is kept."""
  if TOKEN_EMBEDDING not in new or TOKEN_EMBEDDING not in old or _excluded(
      TOKEN_EMBEDDING, exclude):
    return
  (new_vocab, new_width), (old_vocab, old_width) = new[TOKEN_EMBEDDING], old[
      TOKEN_EMBEDDING]
  if new_width != old_width:
    return  # a width mismatch, reported with the others
  same = describe.same_tokenizer()
  if new_vocab == old_vocab and same is not False:
    if same is None:
      logging.warning("init_from: cannot tell whether this run's tokenizer (%s) is the "
                      "checkpoint's (%s): same size, %d tokens, but not both files "
                      "are readable here.", describe.tokenizer(),
                      describe.source_tokenizer(), new_vocab)
    return
  raise InitFromError(
      f"config.init_from={describe.path}: the text vocabularies differ. The checkpoint "
      f"was trained with {describe.source_tokenizer()} ({old_vocab} tokens), this "
      f"run uses {describe.tokenizer()} ({new_vocab} tokens). Fine-tune with the "
      f"pre-training tokenizer ({describe.tokenizer_flag()}), or start the text "
      f"embedding over on purpose with --config.init_exclude='token_embedding/.*'.")


@dataclasses.dataclass
class _Describe:
  """Names the two runs' tokenizers and model configs in error messages."""
  config: ml_collections.ConfigDict | None  # this run's
  source_config: ml_collections.ConfigDict | None  # the checkpoint's config.json
  path: str

  @staticmethod
  def _tokenizer(data) -> str:
    if data.get("tokenizer"):
      return f"the tokenizer {data.tokenizer}"
    return f"the built-in tokenizer of data source {data.get('name')!r}"

  def tokenizer(self) -> str:
    return self._tokenizer(self.config.data) if self.config else "this run's tokenizer"

  def source_tokenizer(self) -> str:
    if self.source_config is None:
      return "an unknown tokenizer (no config.json beside its checkpoints)"
    return self._tokenizer(self.source_config.data)

  def tokenizer_flag(self) -> str:
    if self.source_config is not None and self.source_config.data.get("tokenizer"):
      return f"--config.data.tokenizer={self.source_config.data.tokenizer}"
    return "the source run's config.data.tokenizer"

  def same_tokenizer(self) -> bool | None:
    """Whether both runs use the same tokenizer; None if it cannot be told."""
    if self.config is None or self.source_config is None:
      return None
    mine, theirs = self.config.data, self.source_config.data
    mine_path, their_path = mine.get("tokenizer", ""), theirs.get("tokenizer", "")
    if not mine_path and not their_path:
      return mine.get("name") == theirs.get("name")
    if not mine_path or not their_path:
      return False
    if os.path.abspath(mine_path) == os.path.abspath(their_path):
      return True
    if os.path.isfile(mine_path) and os.path.isfile(their_path):
      return _digest(mine_path) == _digest(their_path)
    return None

  def model_difference(self) -> str:
    """'config.model.width: 128 in the checkpoint's run, 384 here. ' and so on."""
    if self.config is None or self.source_config is None:
      return ""
    lines = []
    for section in ("model", "data"):
      mine = self.config[section].to_dict()
      theirs = self.source_config.get(section, ml_collections.ConfigDict()).to_dict()
      for key in mine if section == "model" else ("image_size",):
        if key in theirs and mine.get(key) != theirs[key]:
          lines.append(f"config.{section}.{key}: {theirs[key]!r} in the checkpoint's "
                       f"run, {mine.get(key)!r} here")
    return ("The configs differ in " + "; ".join(lines) + ". ") if lines else ""


def _digest(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def _adam_counts(opt_state) -> set[str]:
  """Paths ('opt_state/1/0/count') of the step counts of Adam states."""
  found = set()
  is_adam = lambda node: isinstance(node, optax.ScaleByAdamState)

  def visit(path, node):
    if is_adam(node):
      found.add("/".join(("opt_state", _name(path), "count")))

  jax.tree_util.tree_map_with_path(visit, opt_state, is_leaf=is_adam)
  return found


def plan_optimizer(new: dict, old: dict, loaded: list[str], adam_counts: set[str]):
  """Optimizer-state paths to read: the moments of loaded parameters (path ends
  with the parameter's) and Adam's count, where the checkpoint has the same
  shape. The schedule's count is not read, so the new learning-rate schedule
  starts from its warm-up."""
  loaded = set(loaded)
  carried = []
  for path, shape in new.items():
    if not path.startswith("opt_state/") or old.get(path) != shape:
      continue
    parts = path.split("/")
    of_param = any("/".join(parts[i:]) in loaded for i in range(2, len(parts)))
    if of_param or path in adam_counts:
      carried.append(path)
  return carried


# ------------------------------------------------------------------ Loading


def initial_state(config, abstract_state, fresh_state):
  """(train state, Report): this run's fresh state with what carries over from
  config.init_from put in, laid out as `abstract_state` (ShapeDtypeStructs with
  this run's shardings). `fresh_state()` returns the freshly initialised state.
  Raises InitFromError; reads the source and writes nothing."""
  source = find_source(config.init_from, config.get("init_from_step"))
  exclude = tuple(config.get("init_exclude", ()) or ())
  new = {_name(path): leaf
         for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]}
  new_shapes = {path: tuple(leaf.shape) for path, leaf in new.items()}
  describe = _Describe(config, source.config, source.path)
  unreadable = []
  for step in source.steps:
    try:
      old_shapes, tree = _shapes_in_checkpoint(source.checkpoint_dir, step)
    except Exception as error:  # pylint: disable=broad-except
      unreadable.append(f"step {step}: {type(error).__name__}: {error}")
      continue
    if not {"params", "opt_state", "step"} <= {p.split("/")[0] for p in old_shapes}:
      raise InitFromError(
          f"config.init_from={source.path}: the checkpoint of step {step} holds no "
          f"train state of this program (params, opt_state, step). Pass the workdir "
          f"of a run of `python -m sdict_jax.train`.")
    loaded, fresh, not_loaded = plan_parameters(
        _params(new_shapes), _params(old_shapes), exclude, describe=describe)
    read = [f"params/{path}" for path in loaded]
    if config.get("init_optimizer", True):
      moments = plan_optimizer(new_shapes, old_shapes, loaded,
                               _adam_counts(abstract_state["opt_state"]))
      read += moments
    try:
      arrays = _read(source.checkpoint_dir, step, tree, {p: new[p] for p in read})
    except Exception as error:  # pylint: disable=broad-except
      unreadable.append(f"step {step}: {type(error).__name__}: {error}")
      continue
    if unreadable:
      logging.warning("init_from: newer checkpoints of %s are unreadable (%s); using "
                      "step %d.", source.path, "; ".join(unreadable), step)
      print(f"WARNING: init_from: newer checkpoints unreadable; using step {step} of "
            f"{source.path}.", flush=True)
    state = _combine(fresh_state(), arrays)
    if config.get("init_optimizer", True):
      optimizer = (f"Adam moments of {len(loaded)} loaded parameters and Adam's step "
                   f"count carried ({len(moments)} arrays), the rest fresh")
    else:
      optimizer = "fresh (config.init_optimizer=False)"
    report = Report(source=source.path, step=step, loaded=loaded, fresh=fresh,
                    not_loaded=not_loaded, optimizer=optimizer)
    _log(report)
    return state, report
  raise InitFromError(
      f"config.init_from={source.path} holds no readable checkpoint in "
      f"{source.checkpoint_dir} ({'; '.join(unreadable)[:800]}). Pass another run, or "
      f"an older step with config.init_from_step.")


def _read(checkpoint_dir: str, step: int, tree, wanted: dict) -> dict:
  """{path: array} of the `wanted` paths (ShapeDtypeStructs with shardings) only."""
  def target(path, leaf):
    name = _name(path)
    return wanted.get(name, ocp.PLACEHOLDER)

  item = jax.tree_util.tree_map_with_path(target, tree)
  restore_args = jax.tree.map(
      lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, global_shape=a.shape,
                                     dtype=a.dtype)
      if isinstance(a, jax.ShapeDtypeStruct) else a, item)
  manager = checkpointing.read_only_manager(checkpoint_dir)
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(item=item, restore_args=restore_args)))
  finally:
    manager.close()
  return {_name(path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(restored["state"])[0]
          if _name(path) in wanted}


def _combine(fresh, arrays: dict):
  """`fresh` with the leaves named in `arrays` replaced."""
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: arrays.get(_name(path), leaf), fresh)


def _log(report: Report):
  logging.info("init_from: %d parameters loaded from %s step %d.", len(report.loaded),
               report.source, report.step)
  for path, why in report.fresh.items():
    logging.warning("init_from: %s initialised afresh (%s).", path, why)
  for path in report.not_loaded:
    logging.warning("init_from: %s of the checkpoint not loaded (config.init_exclude).",
                    path)
  logging.info("init_from: optimizer state: %s.", report.optimizer)
  print(report.summary(), flush=True)
