"""Held-out evaluation: VQA accuracy, caption BLEU-4 / CIDEr, box IoU.

`Evaluator.run(params)` predicts on the first `config.eval.num_examples` examples
of a split, decodes captions (greedily by default) and scores
them against all reference captions of each example with the COCO caption code,
and answers with the official VQA metric against the ten human answers. Splits
without answers or references (the official test sets) are predicted, not scored.

`ZeroShotVQA.run(params)` answers the split's questions with the caption decoder
instead of the answer head (see its doc): VQA for a model that never saw VQA.
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
  fused_q, mask_q = module.fuse(vision, batch["question"])
  fused_r, mask_r = module.fuse(vision, batch["refexp"])
  fused_c, mask_c = module.fuse(vision, batch["question"][:, :0])  # no text
  # Sampling noise differs from batch to batch (keyed by the first example).
  rng = jax.random.fold_in(jax.random.PRNGKey(seed), batch["example_id"][0])
  captions, _ = decoding.decode_captions(
      model, decode_model, params, fused_c, mask_c, bos_id=bos_id, eos_id=eos_id,
      max_len=max_len, options=decode_options, rng=rng)
  answer_logits = module.answer_logits(fused_q, mask_q, vision.shape[1])
  return {"answer": jnp.argmax(answer_logits, -1),
          "box": module.box(fused_r, mask_r, vision.shape[1]), "caption": captions}


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
        max_caption_len=data.max_caption_len)
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
        "id": int(raw.get("id", index)),  # question id (VQAv2), image id (COCO)
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


def vqa_scores(results, name: str = "vqa_accuracy") -> dict:
  """{name: accuracy, name/<answer type>: ..., name/kind/<kind>: ...} of the results
  that have human answers (none: {})."""
  scores = {}
  with_vqa = [r for r in results if r["answers"]]
  if with_vqa:
    predictions = {r["index"]: r["answer"] for r in with_vqa}
    answers = {r["index"]: r["answers"] for r in with_vqa}
    vqa = metrics.vqa_accuracy(
        predictions, answers,
        {r["index"]: r["answer_type"] for r in with_vqa if r["answer_type"]} or None)
    scores[name] = vqa["overall"]
    scores.update({f"{name}/{k}": v for k, v in vqa.items() if k != "overall"})
    kinds = {r["index"]: r["question_kind"] for r in with_vqa if r.get("question_kind")}
    if len(kinds) == len(with_vqa):  # sources that name what each question tests
      by_kind = metrics.vqa_accuracy(predictions, answers, kinds)
      scores.update({f"{name}/kind/{k}": v for k, v in by_kind.items()
                     if k != "overall"})
  return scores


def score(results, scorers=("BLEU", "CIDEr")) -> dict:
  """Aggregate metrics of `Evaluator.predict` results."""
  scores = vqa_scores(results)
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


# ---------------------------------------------------------------------------
# Zero-shot VQA: open-ended answers from the caption decoder.
# ---------------------------------------------------------------------------

ZERO_SHOT_PROMPT = "question: {question} answer:"
ZERO_SHOT_ANSWER_LEN = 4  # tokens; VQAv2 answers are mostly one to three words


def _zero_shot_answers(module, batch, *, model, decode_model, params, bos_id, eos_id,
                       decode_options, seed):
  """Decoder outputs [B, max_len] after [BOS] ⊕ the forced prompt (runs in apply)."""
  vision = module.encode_image(batch["image"])
  prefix, mask = module.fuse(vision, batch["question"][:, :0])  # the caption prefix
  rng = jax.random.fold_in(jax.random.PRNGKey(seed), batch["example_id"][0])
  tokens, _ = decoding.decode_captions(
      model, decode_model, params, prefix, mask, bos_id=bos_id, eos_id=eos_id,
      max_len=batch["forced"].shape[1], options=decode_options, rng=rng,
      forced=batch["forced"])
  return tokens


class ZeroShotVQA(Evaluator):
  """Open-ended VQA by the caption decoder, as for a model never trained on VQA.

  The image is fused without text, as for captioning, and the caption decoder's
  input starts [BOS] ⊕ tokens of `prompt` (its `{question}` filled in, the
  question's tokens cut to fit) forced by `decoding.forced_decoder`; the tokens it
  then chooses, at most `answer_len` of them (EOS is forced after), are the
  answer, scored by `metrics.vqa_accuracy` (which normalises it: "Two." -> "2").
  Any decoding method works; greedy is the default.

  Tokenizer limits: the prompt and the answer are in the caption vocabulary. A
  word it lacks is UNK in the prompt (the shapes vocabulary has neither
  "question" nor "answer", nor "yes" and "no": such a model can never answer a
  yes/no question), and an answer the decoder cannot spell scores 0. SentencePiece
  vocabularies spell any word, but answers are cut at `answer_len` pieces.
  Results carry the decoder input (`decoder_input`: BOS, prompt, answer, EOS).
  """

  def __init__(self, model, decode_model, bundle, config, mesh, *,
               decode_options=None, seed=0, prompt: str = ZERO_SHOT_PROMPT,
               answer_len: int = ZERO_SHOT_ANSWER_LEN):
    super().__init__(model, decode_model, bundle, config, mesh,
                     decode_options=decode_options, seed=seed)
    if prompt.count("{question}") != 1:
      raise ValueError(f"Zero-shot prompt {prompt!r} must contain '{{question}}' once, "
                       f"e.g. {ZERO_SHOT_PROMPT!r}.")
    if answer_len < 1:
      raise ValueError(f"zero-shot answer_len={answer_len}; need at least 1 token.")
    tokenizer = bundle.tokenizer
    self.max_len = config.data.max_caption_len  # the decoder's position table
    self.answer_len = answer_len
    before, after = prompt.split("{question}")
    self._before, self._after = tokenizer.encode(before), tokenizer.encode(after)
    # Output positions: prompt [0, P), answer [P, P + answer_len), EOS at P + answer_len.
    self.question_room = (self.max_len - answer_len - 1 - len(self._before) -
                          len(self._after))
    if self.question_room < 1:
      raise ValueError(
          f"The zero-shot prompt {prompt!r} ({len(self._before) + len(self._after)} "
          f"tokens) and {answer_len} answer tokens leave no room for the question in "
          f"the caption decoder's {self.max_len} positions; shorten the prompt "
          f"(--zero_shot_prompt) or --zero_shot_answer_len.")
    self._predict = jax.jit(lambda params, batch: model.apply(
        {"params": params}, batch, method=functools.partial(
            _zero_shot_answers, model=model, decode_model=decode_model, params=params,
            bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id,
            decode_options=decode_options or decoding.DecodeOptions(), seed=seed)))

  def prompt_tokens(self, question: str) -> list[int]:
    """The forced prompt of one question: its tokens cut to `question_room`."""
    words = self.bundle.tokenizer.encode(question)[:self.question_room]
    return self._before + words + self._after

  def forced(self, question: str) -> np.ndarray:
    """[max_len]: the prompt, then 0 (free) for the answer, then EOS."""
    prompt = self.prompt_tokens(question)
    forced = np.zeros(self.max_len, np.int32)
    forced[:len(prompt)] = prompt
    forced[len(prompt) + self.answer_len] = self.bundle.tokenizer.eos_id
    return forced

  def predict(self, params):
    results = []
    for batch, indexed_raws in self._batches():
      questions = [self._question(index, raw) for index, raw in indexed_raws]
      forced = [self.forced(q or "") for q in questions]
      forced += [forced[-1]] * (len(batch["image"]) - len(forced))  # padded rows
      batch = {**batch, "forced": np.stack(forced)}
      out = self._predict(params, sharding.global_batch(batch, self.mesh))
      tokens = np.asarray(multihost_utils.process_allgather(out, tiled=True))
      for row, ((index, raw), question) in enumerate(zip(indexed_raws, questions)):
        results.append(self._describe_answer(index, raw, question, tokens[row]))
    return results

  @staticmethod
  def _question(index, raw):
    n_questions = len(raw.get("questions", ()))
    return raw["questions"][index % n_questions] if n_questions else None

  def _describe_answer(self, index, raw, question, tokens):
    tokenizer = self.bundle.tokenizer
    prompt_len = len(self.prompt_tokens(question or ""))
    tokens = tokens.tolist()
    end = tokens.index(tokenizer.eos_id) + 1 if tokenizer.eos_id in tokens else None
    n_questions = len(raw.get("questions", ()))
    which = index % n_questions if n_questions else None
    return {
        "index": index, "id": int(raw.get("id", index)), "question": question,
        "answer": tokenizer.decode(tokens[prompt_len:]),
        "decoder_input": [tokenizer.bos_id] + tokens[:end],
        "answers": raw["answers"][which] if which is not None else [],
        "answer_type": _at(raw.get("answer_types"), which),
        "question_kind": _at(raw.get("question_kinds"), which),
    }

  def run(self, params, scorers=()):
    """{'vqa_zero_shot/accuracy', .../<answer type>, ...} and the results."""
    del scorers  # no captions to score
    results = self.predict(params)
    return vqa_scores(results, "vqa_zero_shot/accuracy"), results
