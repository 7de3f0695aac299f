"""A picture of held-out scenes beside what the model says about them.

`python -m sdict_jax.evaluate ... --showcase docs/shapes_examples.png` draws the
first examples of the split it scored: the image, the model's caption, one
question with the model's answer and the right one.
"""

import os
import textwrap

import numpy as np


def draw(path: str, images: list[np.ndarray], results: list[dict], *, columns: int = 3):
  """Writes a PNG grid: one panel per (uint8 image [H, W, 3], evaluator result)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = -(-len(images) // columns)
  figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 4.6 * rows),
                              dpi=100, squeeze=False)
  for ax in axes.flat:
    ax.axis("off")
  for ax, image, result in zip(axes.flat, images, results):
    ax.imshow(image, interpolation="nearest")
    lines = [f"caption: {result['caption']}"]
    if result.get("question"):
      truth = (result.get("answers") or ["?"])[0]
      mark = "✓" if result.get("answer") == truth else "✗"
      lines += [f"Q: {result['question']}",
                f"A: {result['answer']} {mark} (truth: {truth})"]
    ax.set_title("\n".join(textwrap.fill(line, 40) for line in lines), fontsize=8,
                 loc="left")
  figure.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  figure.savefig(path)
  plt.close(figure)
