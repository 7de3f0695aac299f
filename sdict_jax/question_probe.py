"""A few-minute probe of one question kind (`python -m sdict_jax.bench questions`).

The whole model (vision, text, fusion, VQA head) trains on one kind of shapes
question alone, and held-out accuracy is recorded as it learns. The default kind is
existence ("is there a red square?", yes/no): it needs the question's attributes
compared with every object, and in the multi-task run it stays at the 0.5 of a
constant answer (README, "Seeing or reasoning"). Variants change what the VQA head
reads (`model.vqa_readout`) and how fast the trunk that feeds it steps
(`optim.lr_mults` on model.TRUNK_PARAMS; 0 freezes it at its initialisation), so
the probe separates "the read-out cannot express it" from "the trunk's features
drift away before the read-out locks on".

Training uses the project's optimizer (`train.make_optimizer`) and tokenizer; the
scenes are the shapes source's own training and validation scenes.
"""

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from sdict_jax import model as model_lib
from sdict_jax import train
from sdict_jax.data import pipeline
from sdict_jax.data import sources

EXISTENCE = ("exist", "exist_sized")


def question_data(data_config, split: str, count: int, kinds=EXISTENCE, *,
                  at_most: bool = False) -> dict:
  """`count` (image, question, answer) of the given kinds (`at_most`: up to `count`,
  as many as the split has): the first such question of each scene of `split`,
  scenes in index order. Returns {image: uint8 [n, S, S, 3], question: int [n, L],
  answer: int [n] (answer-vocabulary index), num_answers, vocab_size}."""
  bundle = sources.load(data_config, split)
  answer_index = {a: i for i, a in enumerate(bundle.answer_vocab)}
  images, questions, answers = [], [], []
  for raw in (bundle.source[i] for i in range(len(bundle.source))):
    asked = [q for q, kind in enumerate(raw["question_kinds"]) if kind in kinds]
    if not asked:
      continue
    images.append(raw["image"])
    questions.append(pipeline._padded(  # pylint: disable=protected-access
        bundle.tokenizer.encode(raw["questions"][asked[0]]), data_config.max_text_len))
    answers.append(answer_index[raw["answers"][asked[0]][0]])
    if len(answers) == count:
      break
  if answers and (len(answers) == count or at_most):
    return {"image": np.stack(images),
            "question": np.stack(questions), "answer": np.asarray(answers, np.int32),
            "num_answers": len(bundle.answer_vocab),
            "vocab_size": bundle.tokenizer.vocab_size}
  raise ValueError(f"The {split} split has {len(answers)} questions of kinds {kinds}; "
                   f"{count} were asked for: raise data.train_examples / "
                   f"data.eval_examples or lower the count.")


def _answer_logits(module, image, question, train_mode):
  """uint8 images (stored so: a quarter of float32's memory) → answer logits."""
  vision = module.encode_image(image.astype(jnp.float32) / 255.0, train_mode)
  fused, mask = module.fuse(vision, question, train_mode)
  return module.answer_logits(fused, mask, vision.shape[1])


def run_probe(config: ml_collections.ConfigDict, train_data: dict, eval_data: dict, *,
              steps: int, batch_size: int, eval_every: int, seed: int = 0) -> dict:
  """Trains config.model on train_data's questions alone with config.optim;
  returns the held-out learning curve."""
  model = model_lib.from_config(
      config.model, vocab_size=train_data["vocab_size"],
      num_answers=train_data["num_answers"], image_size=config.data.image_size,
      max_caption_len=config.data.max_caption_len)
  optimizer, _ = train.make_optimizer(config.optim, steps)
  rngs = {"params": jax.random.PRNGKey(seed), "noise": jax.random.PRNGKey(seed + 1)}
  params = model.init(rngs, train_data["image"][:1], train_data["question"][:1], False,
                      method=_answer_logits)["params"]
  opt_state = optimizer.init(params)

  def loss_fn(params, image, question, answer, rng):
    logits, _ = model.apply({"params": params}, image, question, True,
                            method=_answer_logits, rngs={"noise": rng},
                            mutable=["aux"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, answer).mean()

  @jax.jit
  def step_fn(params, opt_state, image, question, answer, rng):
    loss, grads = jax.value_and_grad(loss_fn)(params, image, question, answer, rng)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def correct(params, image, question, answer):
    logits = model.apply({"params": params}, image, question, False,
                         method=_answer_logits)
    return jnp.sum(jnp.argmax(logits, -1) == answer)

  def accuracy(params):
    count = len(eval_data["answer"])
    return sum(int(correct(params, *(eval_data[k][i:i + 256]
                                     for k in ("image", "question", "answer"))))
               for i in range(0, count, 256)) / count

  examples = len(train_data["answer"])
  curve, losses, seconds = [], [], 0.0
  start = time.perf_counter()
  for step in range(1, steps + 1):
    rows = np.arange((step - 1) * batch_size, step * batch_size) % examples
    params, opt_state, loss = step_fn(
        params, opt_state, *(train_data[k][rows] for k in ("image", "question",
                                                           "answer")),
        jax.random.fold_in(rngs["noise"], step))
    losses.append(loss)
    if step % eval_every == 0 or step == steps:
      jax.block_until_ready(params)
      seconds += time.perf_counter() - start
      curve.append({"step": step, "accuracy": accuracy(params), "seconds": seconds,
                    "train_loss": float(np.mean(jax.device_get(losses)))})
      losses = []
      start = time.perf_counter()
  majority = np.bincount(eval_data["answer"]).max() / len(eval_data["answer"])
  return {"curve": curve, "constant_answer": float(majority),
          "examples": examples}
