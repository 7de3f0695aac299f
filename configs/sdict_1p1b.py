r"""SDict-VLM at 1.1B parameters: K = 128 atoms, 24 SDict blocks (SPEC §3).

  python -m sdict_jax.train --config configs/sdict_1p1b.py --workdir runs/1p1b \
      --config.data.name=shards --config.data.train_shards=... (see configs/pretrain.py)

Width 2208 gives 1,100,384,957 parameters (jax.eval_shape, nothing allocated) with a
32k SentencePiece vocabulary, 3,129 VQA answers and 224 px images in 14 px patches
(a 16x16 grid, whose 130 distinct real 2-D frequencies hold K = 128 atoms).
tests/test_model_size.py checks 1.1B ± 5 %.
"""

import importlib.util
import os

VOCAB_SIZE = 32_000  # SentencePiece, as trained by sdict_jax.data.train_tokenizer
NUM_ANSWERS = 3_129  # VQAv2 convention


def model_config():
  """The 1.1B model block, shared with configs/pretrain.py."""
  return dict(
      mixer="sdict",
      width=2208,
      mlp_ratio=4,
      num_atoms=128,
      patch_size=14,
      vision_layers=12,
      text_layers=4,
      fusion_layers=4,
      decoder_layers=4,  # 12 + 4 + 4 + 4 = 24 SDict blocks
      num_heads=16,  # attention baseline only
      ridge=1e-3,
      sdict_method="dense",
      tie_vision_atoms=False,
      vision_position=True,
      max_text_len=64,
  )


def get_config():
  path = os.path.join(os.path.dirname(__file__), "shapes.py")
  spec = importlib.util.spec_from_file_location("shapes_config", path)
  shapes = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(shapes)
  config = shapes.get_config()
  config.model = model_config()
  config.data.update(image_size=224, max_text_len=32, max_caption_len=64)
  config.train.update(batch_size=128, compute_dtype="bfloat16", steps=100_000,
                      log_every=100, eval_every=5_000, checkpoint_every=1_000)
  config.optim.update(lr=3e-4, warmup_steps=2_000, weight_decay=0.05)
  config.eval.update(max_decode_len=64)
  config.mesh = dict(data=-1, fsdp=8, tensor=1)
  return config
