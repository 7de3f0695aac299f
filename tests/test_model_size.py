"""The 1.1B configuration counts 1.1B ± 5 % parameters (eval_shape: no allocation)."""

import os

from sdict_jax import compile_check
from sdict_jax import config_checks
from sdict_jax import config_files
from sdict_jax import model as model_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_config_module():
  return config_files.load_module(os.path.join(ROOT, "configs", "sdict_1p1b.py"))


def test_sdict_1p1b_has_1p1b_parameters():
  module = _load_config_module()
  config = module.get_config()
  # The model train.py builds for this config (train.build_model), for a 32k
  # SentencePiece vocabulary and the VQAv2 answers.
  model = compile_check.build_model(config)
  assert (model.vocab_size, model.num_answers) == (module.VOCAB_SIZE,
                                                   module.NUM_ANSWERS) == (32_000, 3_129)
  count = model_lib.count_parameters(model, config.data.image_size)
  assert abs(count / 1.1e9 - 1) <= 0.05, count
  assert model.num_atoms == 128
  assert sum([model.vision_layers, model.text_layers, model.fusion_layers,
              model.decoder_layers]) == 24
  assert config.train.compute_dtype == "bfloat16"


def test_sdict_1p1b_passes_config_checks_on_8_devices():
  config = _load_config_module().get_config()
  # K = 128 atoms fit the patch grid, the batch splits over 8 devices, ...
  config_checks.validate(config, num_devices=8, num_local_devices=8)
