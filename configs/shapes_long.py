r"""configs/shapes.py trained five times longer: where the default model goes.

  python -m sdict_jax.train --config configs/shapes_long.py --workdir runs/shapes_long

The default run's 1,000 steps (64,000 questions, the 15-minute budget on 2 CPU
cores) end with shape-dependent questions near chance (README, "Results"). This
config changes only the length of training, so its learning curve (held-out
evaluation every 1,000 steps) shows how far the same model and data get with
more steps: 5,000 steps, about an hour on 2 CPU cores (AMD EPYC VM). With
session 12's default (the per-token read-out and slower trunk, no region words):
held-out VQA 0.842, shape 0.78, CIDEr 3.25 at step 5,000 (README, "Results"); with
the paper's [CLS] read-out and one step size, VQA 0.700 and shape 0.48. Not yet
run with region words (sessions 14 and 15's defaults).
"""

from sdict_jax import config_files


LENGTH = 5  # × the default's training steps


def get_config():
  config = config_files.sibling(__file__, "shapes").get_config()
  config.train.update(steps=LENGTH * config.train.steps, eval_every=1000,
                      checkpoint_every=1000)
  # The annealed reconstruction weight reaches its floor at the same fraction
  # of training as in the default run.
  config.loss.recon_anneal_steps *= LENGTH
  return config
