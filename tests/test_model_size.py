"""The 1.1B configuration counts 1.1B ± 5 % parameters (eval_shape: no allocation)."""

import importlib.util
import os

from ml_collections import ConfigDict

from sdict_jax import model as model_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sdict_1p1b_has_1p1b_parameters():
  spec = importlib.util.spec_from_file_location(
      "sdict_1p1b", os.path.join(ROOT, "configs", "sdict_1p1b.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  model = model_lib.from_config(
      ConfigDict(config.model.to_dict()), vocab_size=module.VOCAB_SIZE,
      num_answers=module.NUM_ANSWERS, image_size=config.data.image_size,
      max_caption_len=config.data.max_caption_len)
  count = model_lib.count_parameters(model, config.data.image_size)
  assert abs(count / 1.1e9 - 1) <= 0.05, count
  assert model.num_atoms == 128
  assert sum([model.vision_layers, model.text_layers, model.fusion_layers,
              model.decoder_layers]) == 24
