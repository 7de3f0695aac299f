r"""configs/shapes.py trained three times longer: where the default model goes.

  python -m sdict_jax.train --config configs/shapes_long.py --workdir runs/shapes_long

The default run's 1,000 steps (64,000 questions, the 15-minute budget on 2 CPU
cores) reach held-out VQA 0.86 with shape questions at 0.75-0.79 and counting by
shape at 0.55-0.62 (README, "Results"). This config changes only the length of
training, so its learning curve (held-out evaluation every 1,000 steps) shows how
far the same model and data get with more steps: 3,000 steps, about 40 minutes
alone on 2 CPU cores (AMD EPYC VM; three times the default's time). With session
16's default: VQA 0.744 / 0.964 / 0.992 at steps 1,000 / 2,000 / 3,000 (at 3,000
every question kind 0.93 or more, shape 1.00, CIDEr 3.40, box IoU 0.93; README,
"Results"), in one run that shared the VM. Session 13's default, five times
longer (5,000 steps), ended at 0.842.
"""

from sdict_jax import config_files


LENGTH = 3  # × the default's training steps


def get_config():
  config = config_files.sibling(__file__, "shapes").get_config()
  config.train.update(steps=LENGTH * config.train.steps, eval_every=1000,
                      checkpoint_every=1000)
  # The annealed reconstruction weight reaches its floor at the same fraction
  # of training as in the default run.
  config.loss.recon_anneal_steps *= LENGTH
  return config
