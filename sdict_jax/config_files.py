"""Experiment config files (configs/*.py), loaded by path.

configs/ is not a Python package: train.py reads a config file through
ml_collections' `config_flags.DEFINE_config_file`, which executes the file by
path. Code that needs a config file outside that flag (the benchmarks, the
tests) or a config file that builds on another one (configs/tiny.py on
configs/shapes.py, the fine-tuning configs on configs/pretrain.py's
`model_config()`) loads it here, so there is one way to do it.

  config = config_files.get_config("configs/tiny.py")
  shapes = config_files.sibling(__file__, "shapes")  # inside a config file

The module is executed afresh on every call and not entered in sys.modules:
configs are small, and each caller gets its own ConfigDict to change.
"""

import importlib.util
import os
import types

import ml_collections


def load_module(path: str) -> types.ModuleType:
  """The executed module of a config file."""
  name = "config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None:
    raise ValueError(f"{path} is not a Python config file")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file."""
  return load_module(path).get_config()


def sibling(config_file: str, name: str) -> types.ModuleType:
  """The module of configs/<name>.py next to `config_file` (pass `__file__`)."""
  directory = os.path.dirname(os.path.abspath(config_file))
  return load_module(os.path.join(directory, f"{name}.py"))
