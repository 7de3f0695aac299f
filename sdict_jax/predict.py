r"""Captions your own image, or answers a question about it, with a trained run.

  python -m sdict_jax.predict --workdir runs/shapes --image photo.jpg
  python -m sdict_jax.predict --workdir runs/shapes --image photo.png \
      --question "what colour is the circle?"

Any PNG or JPEG (or other format PIL reads), of any size: it is resized to the
model's config.data.image_size exactly as the input pipeline resizes (bilinear,
to a square). Prints the caption (--decode greedy|beam|nucleus as in evaluate),
or the answer with the five most probable answers. The VQA head is trained with
per-answer sigmoid scores; the probabilities shown are its softmax over the
answer vocabulary, a distribution that ranks the same way.
"""

import os
import sys

from absl import app
from absl import flags
import jax
import numpy as np

from sdict_jax import decoding
from sdict_jax import restore
from sdict_jax import sharding
from sdict_jax.data import images
from sdict_jax.data import pipeline
from sdict_jax.data import sources

restore.define_flags()
_IMAGE = flags.DEFINE_string("image", None, "A PNG or JPEG file.")
_QUESTION = flags.DEFINE_string("question", None, "Answer this question instead of "
                                "captioning the image.")
_TOP_K = 5


class InputError(ValueError):
  """The image or question cannot be used; the message says why and what to do."""


def load_image(path: str) -> np.ndarray:
  """uint8 RGB [H, W, 3] from an image file, or InputError naming the problem."""
  if not path:
    raise InputError("Pass --image <a PNG or JPEG file>.")
  if not os.path.isfile(path):
    raise InputError(f"--image {path}: no such file. Pass the path of a PNG or JPEG "
                     f"image.")
  try:
    return images.decode_image(path)
  except images.ImageDecodeError as error:
    raise InputError(f"--image {path} is not an image PIL can read ({error}). Pass a "
                     f"PNG or JPEG file.") from error


def _encoder(config, bundle) -> pipeline.ExampleEncoder:
  data = config.data
  return pipeline.ExampleEncoder(
      tokenizer=bundle.tokenizer,
      answer_index={a: i for i, a in enumerate(bundle.answer_vocab)},
      image_size=data.image_size, max_text_len=data.max_text_len,
      max_caption_len=data.max_caption_len)


def _unknown_words(tokenizer, question: str) -> list[str]:
  return [w for w in question.split() if tokenizer.unk_id in tokenizer.encode(w)]


def _caption(module, batch, *, model, decode_model, params, config, tokenizer,
             options, seed):
  """Caption tokens [1, L] of the batch's image (runs inside apply)."""
  vision = module.encode_image(batch["image"])
  fused, mask = module.fuse(vision, batch["question"][:, :0])  # as in training
  tokens, _ = decoding.decode_captions(
      model, decode_model, params, fused, mask, bos_id=tokenizer.bos_id,
      eos_id=tokenizer.eos_id, max_len=config.eval.max_decode_len, options=options,
      rng=jax.random.PRNGKey(seed))
  return tokens


def _answer_probabilities(module, batch):
  vision = module.encode_image(batch["image"])
  fused, mask = module.fuse(vision, batch["question"])
  return jax.nn.softmax(module.answer_logits(fused, mask, vision.shape[1]), -1)


def predict(workdir, config, image: np.ndarray, question=None, *, options=None,
            seed=0) -> dict:
  """{'caption': str} or {'answer': str, 'top': [(answer, probability)] * 5}."""
  options = options or decoding.DecodeOptions()
  bundle = sources.load(config.data, "validation")
  if question is not None and not bundle.answer_vocab:
    raise InputError(f"This run's data source {config.data.name!r} has no VQA "
                     f"answers, so the model cannot answer questions; leave out "
                     f"--question to caption the image.")
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  run = restore.load(workdir, config, bundle, mesh)
  raw = {"image": image, "questions": [question] if question is not None else [],
         "answers": [[]] if question is not None else []}
  example = _encoder(config, bundle).eval_example((0, raw))
  batch = {k: np.asarray(v)[None] for k, v in example.items()}
  if question is None:
    tokens = jax.jit(lambda params, batch: run.model.apply(
        {"params": params}, batch, method=lambda module, batch: _caption(
            module, batch, model=run.model, decode_model=run.decode_model,
            params=params, config=config, tokenizer=bundle.tokenizer,
            options=options, seed=seed)))(run.params, batch)
    return {"step": run.step,
            "caption": bundle.tokenizer.decode(np.asarray(tokens[0]).tolist())}
  probs = np.asarray(jax.jit(lambda params, batch: run.model.apply(
      {"params": params}, batch, method=_answer_probabilities))(run.params, batch)[0])
  best = np.argsort(-probs)[:_TOP_K]
  top = [(bundle.answer_vocab[i], float(probs[i])) for i in best]
  return {"step": run.step, "answer": top[0][0], "top": top,
          "unknown_words": _unknown_words(bundle.tokenizer, question)}


def main(argv):
  del argv
  try:
    image = load_image(_IMAGE.value)
    if _QUESTION.value is not None and not _QUESTION.value.strip():
      raise InputError("--question is empty; ask a question, or leave it out to "
                       "caption the image.")
    workdir, config = restore.workdir_and_config_from_flags()
    result = predict(workdir, config, image, _QUESTION.value,
                     options=restore.decode_options_from_flags(),
                     seed=flags.FLAGS.seed)
  except (InputError, restore.RestoreError, ValueError) as error:
    sys.exit(f"ERROR: {error}")
  if "caption" in result:
    print(f"caption: {result['caption']}")
    return
  if result["unknown_words"]:
    print(f"note: words the model does not know (read as <unk>): "
          f"{' '.join(result['unknown_words'])}", file=sys.stderr)
  print(f"question: {_QUESTION.value}")
  print(f"answer: {result['answer']}")
  for answer, probability in result["top"]:
    print(f"  {probability:7.3f}  {answer}")


if __name__ == "__main__":
  sys.argv = restore.with_saved_config(sys.argv)
  app.run(main)
