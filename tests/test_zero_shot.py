"""Zero-shot VQA with the caption decoder: forced prompt tokens in the decode loop,
and `evaluate --zero_shot_vqa` answering questions with a model that has no VQA
training, scored by the VQA metric."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sdict_jax import decoding
from sdict_jax import evaluate
from sdict_jax import evaluators
from sdict_jax import metrics
from sdict_jax.data import sources
from test_decoding import BOS, EOS, MAX_LEN, tiny_models, tiny_prefix
from test_submission import _tiny_config, _write_checkpoint
from test_train import _config
from test_vqav2 import VAL, _write_subset

# Per row of the tiny prefix batch: a prompt of a different length.
PROMPTS = ([5, 6], [7, 8, 9, 10], [11])


def _forced(prompts, max_len=MAX_LEN):
  forced = np.zeros((len(prompts), max_len), np.int32)
  for row, prompt in enumerate(prompts):
    forced[row, :len(prompt)] = prompt
  return jnp.asarray(forced)


_tiny_models = functools.lru_cache(maxsize=None)(tiny_models)


def _decode(method="greedy", incremental=True):
  """Tokens [3, MAX_LEN] decoded by the tiny decoder with PROMPTS forced."""
  model, decode_model, params = _tiny_models("sdict")
  prefix, mask = tiny_prefix()
  options = decoding.DecodeOptions(method, beam_width=3, length_penalty=0.0)
  return np.asarray(jax.jit(lambda params: decoding.decode_captions(
      model, decode_model, params, prefix, mask, bos_id=BOS, eos_id=EOS,
      max_len=MAX_LEN, options=options, incremental=incremental,
      forced=_forced(PROMPTS))[0])(params))


def _teacher_forced_argmax(tokens):
  """argmax of the logits of one causal pass over [BOS, tokens[:-1]] ([3, MAX_LEN])."""
  model, _, params = _tiny_models("sdict")
  prefix, mask = tiny_prefix()
  inputs = jnp.concatenate([jnp.full((3, 1), BOS), jnp.asarray(tokens)[:, :-1]], 1)
  logits = jax.jit(lambda params: model.apply(
      {"params": params}, inputs, jnp.arange(MAX_LEN), prefix, mask,
      method=model.caption_logits))(params)
  return np.asarray(logits).argmax(-1)


def _assert_prompted(tokens):
  for row, prompt in enumerate(PROMPTS):
    np.testing.assert_array_equal(tokens[row, :len(prompt)], prompt)


def test_forced_prefix_decoding_equals_teacher_forced_argmax():
  greedy = _decode()
  _assert_prompted(greedy)  # the prompt opens every decoder input, after BOS
  argmax = _teacher_forced_argmax(greedy)
  free = 0
  for row, prompt in enumerate(PROMPTS):
    tokens = list(greedy[row])
    end = tokens.index(EOS) + 1 if EOS in tokens else MAX_LEN
    # After the prompt each token is the argmax given BOS, the prompt and the
    # tokens before it, as one teacher-forced pass computes it.
    np.testing.assert_array_equal(greedy[row, len(prompt):end],
                                  argmax[row, len(prompt):end])
    free += end - len(prompt)
  assert free >= len(PROMPTS)


@pytest.mark.slow  # two more decoders to compile
def test_forced_prompt_holds_for_recomputation_and_beam_search():
  greedy = _decode()
  np.testing.assert_array_equal(_decode(incremental=False), greedy)
  _assert_prompted(_decode("beam"))


def test_forced_shape_is_checked():
  model, decode_model, params = _tiny_models("sdict")
  prefix, mask = tiny_prefix()
  with pytest.raises(ValueError, match="forced tokens of shape"):
    decoding.decode_captions(model, decode_model, params, prefix, mask, bos_id=BOS,
                             eos_id=EOS, max_len=MAX_LEN, forced=_forced(PROMPTS, 4))


# ---------------------------------------------------------------------------
# evaluate --zero_shot_vqa on the shapes scenes, from an untrained checkpoint.
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
  config = _config("tiny")
  config.data.eval_examples = 4
  config.eval.update(num_examples=4, batch_size=4)
  workdir = str(tmp_path_factory.mktemp("zero_shot") / "run")
  _write_checkpoint(workdir, config, split="validation")
  return workdir, config


@pytest.mark.slow  # compiles the tiny model's encoders and decoder (~30 s, 2 cores)
def test_zero_shot_answers_follow_the_prompt_and_are_scored(shapes_run):
  workdir, config = shapes_run
  report = evaluate.evaluate(workdir, config, split="validation", scorers=(),
                             zero_shot=evaluate.ZeroShot(answer_len=2))
  scores = report["scores"]
  assert 0.0 <= scores["vqa_zero_shot/accuracy"] <= 1.0
  assert "vqa_accuracy" not in scores and "bleu4" not in scores
  output_dir = os.path.join(workdir, "eval_validation_zero_shot")
  with open(os.path.join(output_dir, "scores.json")) as f:
    assert json.load(f)["scores"] == scores
  with open(os.path.join(output_dir, "predictions.jsonl")) as f:
    results = [json.loads(line) for line in f]
  assert len(results) == 4
  tokenizer = sources.tokenizer(config.data)
  for result in results:
    prompt = (tokenizer.encode("question:") + tokenizer.encode(result["question"]) +
              tokenizer.encode("answer:"))
    decoder_input = result["decoder_input"]
    assert decoder_input[:1 + len(prompt)] == [tokenizer.bos_id] + prompt
    answer = decoder_input[1 + len(prompt):]
    assert answer[-1] == tokenizer.eos_id and len(answer) <= 2 + 1  # EOS forced
    assert isinstance(result["answer"], str)
    assert result["answer"] == tokenizer.decode(answer)
  expected = metrics.vqa_accuracy({r["index"]: r["answer"] for r in results},
                                  {r["index"]: r["answers"] for r in results})
  assert scores["vqa_zero_shot/accuracy"] == pytest.approx(expected["overall"])


def test_prompt_without_room_or_placeholder_is_rejected(shapes_run):
  _, config = shapes_run
  with pytest.raises(ValueError, match="'{question}' once"):
    evaluate.evaluate(shapes_run[0], config, split="validation",
                      zero_shot=evaluate.ZeroShot(prompt="answer:"))
  with pytest.raises(ValueError, match="no room for the question"):
    evaluate.evaluate(shapes_run[0], config, split="validation",
                      zero_shot=evaluate.ZeroShot(answer_len=config.data.max_caption_len))


def test_run_without_questions_reads_vqav2_with_its_own_tokenizer(tmp_path):
  vqa_dir, coco_dir = str(tmp_path / "vqa"), str(tmp_path / "coco")
  os.makedirs(vqa_dir)
  _write_subset(vqa_dir, coco_dir, "val2014", VAL)  # no training files: no vocabulary
  config = _tiny_config(dict(name="coco_captions"), ["a cat on a table"], tmp_path)
  with pytest.raises(ValueError, match="--vqa_dir"):
    evaluate._zero_shot_bundle(config.data, "validation")
  data = ml_collections.ConfigDict(dict(config.data.to_dict(), vqa_dir=vqa_dir,
                                        coco_dir=coco_dir))
  bundle = evaluate._zero_shot_bundle(data, "validation")
  assert bundle.answer_vocab == []  # the captions model has no answer head
  assert bundle.tokenizer.model_path == config.data.tokenizer
  assert [bundle.source[i]["id"] for i in range(len(bundle.source))] == [4000, 5000]
  assert evaluators.ZERO_SHOT_PROMPT.count("{question}") == 1
