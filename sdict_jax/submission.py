"""Result files for the official servers: names, writers and a validator.

Formats and names, as the servers publish them:

  VQAv2 (EvalAI; https://visualqa.org/evaluation.html and challenge.html)
      [{"question_id": int, "answer": str}, ...]
      vqa_OpenEnded_mscoco_<subset>_<method>_results.json, subset test-dev2015 or
      test2015 (test-standard). EvalAI's Test-Dev phase expects an answer for every
      question of the test2015 question file, not only the test-dev ones (it scores
      the test-dev subset): a test-dev file therefore lists every test2015 question,
      the ones outside test-dev with the empty answer.
  COCO captions (https://cocodataset.org/#captions-upload, #format-results)
      [{"image_id": int, "caption": str}, ...]
      captions_val2014_<method>_results.json and captions_test2014_<method>_results.json,
      both zipped into one results.zip (the server wants the two together).

Every id of the official file appears exactly once. An answer or caption is a
non-empty string, except for the ids a writer declares unanswered (`allow_empty`):
questions outside the evaluated split, or a decoder that emitted EOS first; the
validator checks that nothing else is empty, so a lost prediction is an error
rather than a silent zero. Pure functions; `evaluate.py` calls them.
"""

from __future__ import annotations

import json
import os
import re
from typing import Iterable, Mapping

VQA_RESULTS_FILE = "vqa_OpenEnded_mscoco_{subset}_{method}_results.json"
CAPTION_RESULTS_FILE = "captions_{subset}_{method}_results.json"
VQA_SUBSETS = ("train2014", "val2014", "test-dev2015", "test2015")
CAPTION_SUBSETS = ("train2014", "val2014", "test2014")
# Subsets whose answers are not public: only the server scores them.
TEST_SUBSETS = ("test-dev2015", "test2015", "test2014")
# The servers match file names against these templates; letters, digits and '-'
# keep the method name from running into the underscores around it.
_METHOD_NAME = re.compile(r"[A-Za-z0-9-]+")
_SHOWN = 5  # ids quoted in an error message


class SubmissionError(ValueError):
  """A results list the server would reject or mis-score; the message says why."""


def check_method_name(method: str) -> str:
  """`method`, if the servers' file-name templates can hold it; else SubmissionError."""
  if not _METHOD_NAME.fullmatch(method or ""):
    raise SubmissionError(f"Method name {method!r}: use letters, digits and '-' only "
                          f"(it goes between underscores in the file name), e.g. "
                          f"--method_name=sdict-base.")
  return method


def vqa_results_file(subset: str, method: str) -> str:
  """The name EvalAI expects: vqa_OpenEnded_mscoco_test-dev2015_sdict_results.json."""
  if subset not in VQA_SUBSETS:
    raise SubmissionError(f"VQAv2 subset {subset!r}; one of {VQA_SUBSETS}.")
  return VQA_RESULTS_FILE.format(subset=subset, method=check_method_name(method))


def caption_results_file(subset: str, method: str) -> str:
  """The file name the COCO server expects, e.g. captions_test2014_sdict_results.json."""
  if subset not in CAPTION_SUBSETS:
    raise SubmissionError(f"COCO captions subset {subset!r}; one of {CAPTION_SUBSETS}.")
  return CAPTION_RESULTS_FILE.format(subset=subset, method=check_method_name(method))


def vqa_results(answers: Iterable[tuple[int, str]],
                question_ids: Iterable[int]) -> tuple[list[dict], set[int]]:
  """(results, unanswered ids): the predicted (question id, answer) pairs in their
  order, then every id of `question_ids` without a prediction, with answer ''."""
  results = [{"question_id": int(q), "answer": a} for q, a in answers]
  predicted = {r["question_id"] for r in results}
  unanswered = [int(q) for q in question_ids if int(q) not in predicted]
  results += [{"question_id": q, "answer": ""} for q in unanswered]
  return results, set(unanswered)


def caption_results(captions: Iterable[tuple[int, str]]) -> list[dict]:
  return [{"image_id": int(i), "caption": c} for i, c in captions]


def _shown(ids) -> str:
  ids = sorted(ids)
  more = f" and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else ""
  return ", ".join(map(str, ids[:_SHOWN])) + more


def _validate(results, expected_ids, *, id_key: str, text_key: str, allow_empty,
              what: str) -> None:
  if not isinstance(results, list):
    raise SubmissionError(f"{what} results must be a JSON list of objects; got "
                          f"{type(results).__name__}.")
  expected = set()
  for i in expected_ids:
    if isinstance(i, bool) or not isinstance(i, int):
      raise SubmissionError(f"Expected {id_key}s must be ints; got {i!r}.")
    expected.add(i)
  allow_empty = set(allow_empty)
  seen, duplicates, problems = set(), set(), []
  for n, result in enumerate(results):
    if not isinstance(result, Mapping) or set(result) != {id_key, text_key}:
      problems.append(f"entry {n} is {result!r}, not {{{id_key!r}: int, "
                      f"{text_key!r}: str}}")
      continue
    key, text = result[id_key], result[text_key]
    if isinstance(key, bool) or not isinstance(key, int):
      problems.append(f"entry {n} has {id_key} {key!r} ({type(key).__name__}, not int)")
      continue
    if not isinstance(text, str):
      problems.append(f"{id_key} {key} has {text_key} {text!r} "
                      f"({type(text).__name__}, not str)")
    elif not text.strip() and key not in allow_empty:
      problems.append(f"{id_key} {key} has an empty {text_key}")
    (duplicates if key in seen else seen).add(key)
  if duplicates:
    problems.append(f"{len(duplicates)} {id_key}s appear more than once: "
                    f"{_shown(duplicates)}")
  if expected - seen:
    problems.append(f"{len(expected - seen)} {id_key}s of the official file are "
                    f"missing: {_shown(expected - seen)}")
  if seen - expected:
    problems.append(f"{len(seen - expected)} {id_key}s are not in the official file: "
                    f"{_shown(seen - expected)}")
  if problems:
    shown = "; ".join(problems[:_SHOWN])
    more = f" ({len(problems) - _SHOWN} more problems)" if len(problems) > _SHOWN else ""
    raise SubmissionError(f"{what} results are not valid for the server: {shown}{more}.")


def validate_vqa_results(results, question_ids: Iterable[int], *,
                         allow_empty: Iterable[int] = ()) -> None:
  """Raises SubmissionError unless `results` holds every id of `question_ids`
  exactly once, each {"question_id": int, "answer": str} with a non-empty answer
  (empty allowed for the ids in `allow_empty`), and no other id."""
  _validate(results, question_ids, id_key="question_id", text_key="answer",
            allow_empty=allow_empty, what="VQAv2")


def validate_caption_results(results, image_ids: Iterable[int], *,
                             allow_empty: Iterable[int] = ()) -> None:
  """Raises SubmissionError unless `results` holds every id of `image_ids` exactly
  once, each {"image_id": int, "caption": str} with a non-empty caption (empty
  allowed for the ids in `allow_empty`), and no other id."""
  _validate(results, image_ids, id_key="image_id", text_key="caption",
            allow_empty=allow_empty, what="COCO captions")


def write_json(path: str, results: list[dict]) -> str:
  """Writes `results` to `path` atomically (a reader never sees half a file)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  temporary = f"{path}.tmp{os.getpid()}"
  with open(temporary, "w") as f:
    json.dump(results, f)
  os.replace(temporary, path)
  return path
