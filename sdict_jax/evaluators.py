"""Held-out evaluation: VQA accuracy, caption BLEU-4 / CIDEr, box IoU.

`Evaluator.run(params)` predicts on the first `config.eval.num_examples` examples
of a split, decodes captions (greedily by default) and scores
them against all reference captions of each example with the COCO caption code,
and answers with the official VQA metric against the ten human answers.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from sdict_jax import decoding
from sdict_jax import losses
from sdict_jax import metrics
from sdict_jax import sharding
from sdict_jax.data import pipeline


def _predict(module, batch, *, model, decode_model, params, max_len, bos_id, eos_id,
             decode_options, seed):
  """Answer ids, boxes and caption tokens for one batch (runs in apply)."""
  vision = module.encode_image(batch["image"])
  fused_q, _ = module.fuse(vision, batch["question"])
  fused_r, _ = module.fuse(vision, batch["refexp"])
  fused_c, mask_c = module.fuse(vision, batch["question"][:, :0])  # no text
  # Sampling noise differs from batch to batch (keyed by the first example).
  rng = jax.random.fold_in(jax.random.PRNGKey(seed), batch["example_id"][0])
  captions, _ = decoding.decode_captions(
      model, decode_model, params, fused_c, mask_c, bos_id=bos_id, eos_id=eos_id,
      max_len=max_len, options=decode_options, rng=rng)
  return {"answer": jnp.argmax(module.answer_logits(fused_q), -1),
          "box": module.box(fused_r), "caption": captions}


class Evaluator:
  """Scores a model on a data bundle's split.

  Captions are decoded greedily unless `decode_options` (decoding.DecodeOptions)
  asks for beam search or nucleus sampling (seeded by `seed`).
  """

  def __init__(self, model, decode_model, bundle, config, mesh, *,
               decode_options=None, seed=0):
    self.model, self.bundle, self.mesh = model, bundle, mesh
    data, self.eval_config = config.data, config.eval
    self.encoder = pipeline.ExampleEncoder(
        tokenizer=bundle.tokenizer,
        answer_index={a: i for i, a in enumerate(bundle.answer_vocab)},
        image_size=data.image_size, max_text_len=data.max_text_len,
        max_caption_len=data.max_caption_len,
        normalize_answer=metrics.normalize_answer)
    # Every process evaluates the same examples (evaluation is small), so each
    # holds all results and no Python objects need gathering across hosts.
    self.indices = np.arange(min(config.eval.num_examples, len(bundle.source)))
    self.local_batch = config.eval.batch_size
    tokenizer = bundle.tokenizer
    self._predict = jax.jit(lambda params, batch: model.apply(
        {"params": params}, batch, method=functools.partial(
            _predict, model=model, decode_model=decode_model, params=params,
            max_len=config.eval.max_decode_len, bos_id=tokenizer.bos_id,
            eos_id=tokenizer.eos_id,
            decode_options=decode_options or decoding.DecodeOptions(),
            seed=seed)))

  def _batches(self):
    """(local model batch, raw examples) with the last batch padded by repeats."""
    for start in range(0, len(self.indices), self.local_batch):
      chunk = list(self.indices[start:start + self.local_batch])
      raws = [self.bundle.source[int(i)] for i in chunk]
      examples = [self.encoder.eval_example((int(i), raw)) for i, raw in zip(chunk, raws)]
      examples += [examples[-1]] * (self.local_batch - len(examples))
      batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
      yield batch, list(zip(chunk, raws))

  def predict(self, params):
    """Per-example predictions, as Python objects."""
    results = []
    for batch, indexed_raws in self._batches():
      out = self._predict(params, sharding.global_batch(batch, self.mesh))
      # Rows [0, local_batch) are process 0's copy of the (identical) batch.
      out = jax.tree.map(np.asarray, multihost_utils.process_allgather(out, tiled=True))
      for row, (index, raw) in enumerate(indexed_raws):
        results.append(self._describe(index, raw, batch, row,
                                      jax.tree.map(lambda x: x[row], out)))
    return results

  def _describe(self, index, raw, batch, row, out):
    n_questions = len(raw.get("questions", ()))
    question = index % n_questions if n_questions else None
    return {
        "index": index,
        "caption": self.bundle.tokenizer.decode(out["caption"].tolist()),
        "references": list(raw.get("captions", [])),
        "question": raw["questions"][question] if question is not None else None,
        "answer": (self.bundle.answer_vocab[int(out["answer"])]
                   if self.bundle.answer_vocab else None),
        "answers": raw["answers"][question] if question is not None else [],
        "answer_type": _at(raw.get("answer_types"), question),
        "question_kind": _at(raw.get("question_kinds"), question),
        "box": out["box"].tolist(), "box_target": batch["box"][row].tolist(),
        "has_box": bool(batch["has_box"][row]),
    }

  def run(self, params, scorers=("BLEU", "CIDEr")):
    """{'vqa_accuracy', 'bleu4', 'cider', 'box_iou', ...} on this split."""
    results = self.predict(params)
    return score(results, scorers), results


def _at(values, index):
  """values[index], or None where the source lacks the list or the question."""
  return values[index] if values and index is not None else None


def score(results, scorers=("BLEU", "CIDEr")) -> dict:
  """Aggregate metrics of `Evaluator.predict` results."""
  scores = {}
  with_vqa = [r for r in results if r["answers"]]
  if with_vqa:
    predictions = {r["index"]: r["answer"] for r in with_vqa}
    answers = {r["index"]: r["answers"] for r in with_vqa}
    vqa = metrics.vqa_accuracy(
        predictions, answers,
        {r["index"]: r["answer_type"] for r in with_vqa if r["answer_type"]} or None)
    scores["vqa_accuracy"] = vqa["overall"]
    scores.update({f"vqa_accuracy/{k}": v for k, v in vqa.items() if k != "overall"})
    kinds = {r["index"]: r["question_kind"] for r in with_vqa if r.get("question_kind")}
    if len(kinds) == len(with_vqa):  # sources that name what each question tests
      by_kind = metrics.vqa_accuracy(predictions, answers, kinds)
      scores.update({f"vqa_accuracy/kind/{k}": v for k, v in by_kind.items()
                     if k != "overall"})
  with_captions = [r for r in results if r["references"]]
  if with_captions:
    captions = metrics.caption_scores(
        {r["index"]: r["references"] for r in with_captions},
        {r["index"]: r["caption"] for r in with_captions}, scorers=scorers)
    scores.update({"bleu4": captions.get("BLEU-4"), "cider": captions.get("CIDEr")})
    scores.update({k: v for k, v in captions.items() if k not in ("BLEU-4", "CIDEr")})
    scores = {k: v for k, v in scores.items() if v is not None}
  with_box = [r for r in results if r["has_box"]]
  if with_box:
    iou, _ = losses.box_iou_and_giou(np.array([r["box"] for r in with_box]),
                                     np.array([r["box_target"] for r in with_box]))
    scores["box_iou"] = float(np.mean(iou))
  return scores
