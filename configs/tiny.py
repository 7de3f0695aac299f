r"""A seconds-sized variant of configs/shapes.py, for tests and smoke runs.

  python -m sdict_jax.train --config configs/tiny.py --workdir /tmp/tiny

Learns nothing useful; it exercises every part of the training program (all
three tasks, auxiliary losses, checkpoints, evaluation) in about a minute on CPU.
"""

from sdict_jax import config_files


def get_config():
  config = config_files.sibling(__file__, "shapes").get_config()
  config.data.update(image_size=32, max_text_len=12, max_caption_len=16,
                     train_examples=2_000, eval_examples=16)
  # vision_atoms=10: every real frequency of the 4x4 patch grid.
  config.model.update(width=32, num_atoms=6, vision_atoms=10, patch_size=8,
                      vision_layers=1, text_layers=1, fusion_layers=1, decoder_layers=1,
                      num_heads=2)
  config.train.update(steps=6, batch_size=8, log_every=2, eval_every=6,
                      checkpoint_every=2, keep_checkpoints=2)
  config.optim.update(warmup_steps=2)
  config.eval.update(num_examples=8, batch_size=8, max_decode_len=8)
  return config
