"""VQAv2 from its official JSON files and the COCO 2014 images.

Files (https://visualqa.org/download.html), as distributed:

  <vqa_dir>/v2_OpenEnded_mscoco_{train,val}2014_questions.json
      {"questions": [{"image_id", "question", "question_id"}, ...], "info", ...}
  <vqa_dir>/v2_mscoco_{train,val}2014_annotations.json
      {"annotations": [{"question_id", "image_id", "answers": [{"answer", ...}] x 10,
                        "multiple_choice_answer", "answer_type", ...}, ...], ...}
  <vqa_dir>/v2_OpenEnded_mscoco_{test-dev,test}2015_questions.json   (no annotations)
  <coco_dir>/{train,val,test}2014|2015/COCO_<subset>_<image_id:012d>.jpg
      (train2014/, val2014/, test2015/; test-dev questions are on test2015 images)

Splits: `train` = train2014 and `validation` = val2014; with `trainval=True`, `train` =
train2014 + val2014 except a held-out "minival" of `minival_images` val2014 images (the
lowest image ids), which becomes `validation`. The test splits have questions only
(their answers are not public; the server scores a results file, see submission.py):
`test-dev` = test-dev2015, `test` and `test-std` = test2015 (test-standard is the
server's phase for the whole test2015 question file).

One raw example per question (not per image): `questions`, `answers` (the 10 human
answers) and `answer_types` hold one entry each, `id` is the question id (what the
official results file and `metrics.vqa_accuracy` key on). The pipeline uses one question
per example, so grouping by image would evaluate one question per image and sample
questions of busy images less often; per question, every question is scored once and
training samples questions uniformly, the VQAv2 convention.

The ten human answers are kept as the annotation file holds them: the official VQA
accuracy (`metrics.vqa_accuracy`) decides itself whether to normalise them, and the
pipeline normalises them (`metrics.normalize_answer`) for the training soft scores.

Answer vocabulary: the `answer_vocab_size` (default 3,129) most frequent normalised
`multiple_choice_answer`s of the training questions, ties broken alphabetically, cached as
JSON in `cache_dir` (keyed by the annotation files' names and sizes and the split
settings), so evaluation and prediction find it without parsing the training files.

Questions whose image file is missing (`missing_images`): on the training and
validation splits they are skipped at index time and counted (one log line per split);
on the test splits, where every question of the official file needs an answer, a
missing image is an error naming the file and the fix by default, and "blank" answers
such questions from a black image instead. An image that fails to decode at read time
gives an empty example (see `images.py`), except on the test splits (or with "blank"):
there the question is kept with a black image, so its id is still answered. Invalid
UTF-8 in a JSON file is replaced (U+FFFD) and counted.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
from typing import NamedTuple

from absl import logging

from sdict_jax import metrics
from sdict_jax.data import images

SUBSETS = ("train2014", "val2014")
# Our test split -> the official question file's subset (its answers are not public).
TEST_SUBSETS = {"test-dev": "test-dev2015", "test": "test2015", "test-std": "test2015"}
SPLITS = ("train", "validation", *TEST_SUBSETS)
MISSING_IMAGES = ("skip", "error", "blank")
_TEST_IMAGES = "test2015"  # test-dev2015 is a subset of test2015, on its images
_TEST_DOWNLOAD = ("v2_Questions_Test_mscoco.zip from https://visualqa.org/download.html, "
                  "images from http://images.cocodataset.org/zips/test2015.zip")
QUESTIONS_FILE = "v2_OpenEnded_mscoco_{subset}_questions.json"
ANNOTATIONS_FILE = "v2_mscoco_{subset}_annotations.json"
IMAGE_FILE = "{subset}/COCO_{subset}_{image_id:012d}.jpg"
DEFAULT_ANSWER_VOCAB_SIZE = 3129


class Question(NamedTuple):
  """One VQAv2 question with its annotation (multiple_choice_answer normalised)."""
  question_id: int
  image_id: int
  image_file: str  # relative to coco_dir
  question: str
  answers: tuple[str, ...]  # the human answers (10), as annotated
  multiple_choice_answer: str
  answer_type: str


def _read_json(path: str) -> dict:
  """A JSON file; invalid UTF-8 bytes are replaced (and logged with their count)."""
  with open(path, "rb") as f:
    data = f.read()
  text, valid = images.decode_text(data)
  if not valid:
    logging.warning("%s: replaced %d invalid UTF-8 sequences with U+FFFD.", path,
                    text.count("\ufffd"))
  return json.loads(text)


def _file(vqa_dir: str, template: str, subset: str) -> str:
  path = os.path.join(vqa_dir, template.format(subset=subset))
  if not os.path.isfile(path) and subset not in SUBSETS:
    raise FileNotFoundError(
        f"VQAv2 test question file {path} not found. Set config.data.vqa_dir to the "
        f"directory holding the official {os.path.basename(path)} ({_TEST_DOWNLOAD}).")
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"VQAv2 file {path} not found. Set config.data.vqa_dir to the directory holding "
        f"the official {QUESTIONS_FILE.format(subset=subset)} and "
        f"{ANNOTATIONS_FILE.format(subset=subset)} (from https://visualqa.org).")
  return path


def read_questions(vqa_dir: str, subset: str) -> list[Question]:
  """Every question of `subset` ('train2014' or 'val2014') joined with its annotation."""
  questions_path = _file(vqa_dir, QUESTIONS_FILE, subset)
  annotations_path = _file(vqa_dir, ANNOTATIONS_FILE, subset)
  annotations = {a["question_id"]: a for a in _read_json(annotations_path)["annotations"]}
  result = []
  for q in _read_json(questions_path)["questions"]:
    a = annotations.get(q["question_id"])
    if a is None:
      raise ValueError(f"Question {q['question_id']} of {questions_path} has no "
                       f"annotation in {annotations_path}; are the files from one release?")
    result.append(Question(
        question_id=int(q["question_id"]), image_id=int(q["image_id"]),
        image_file=IMAGE_FILE.format(subset=subset, image_id=int(q["image_id"])),
        question=q["question"].strip(),
        answers=tuple(x["answer"] for x in a["answers"]),
        multiple_choice_answer=metrics.normalize_answer(a["multiple_choice_answer"]),
        answer_type=a.get("answer_type", "")))
  return result


def read_test_questions(vqa_dir: str, subset: str) -> list[Question]:
  """Every question of a test subset ('test-dev2015' or 'test2015'), without answers."""
  result = []
  for q in _read_json(_file(vqa_dir, QUESTIONS_FILE, subset))["questions"]:
    image_id = int(q["image_id"])
    result.append(Question(
        question_id=int(q["question_id"]), image_id=image_id,
        image_file=IMAGE_FILE.format(subset=_TEST_IMAGES, image_id=image_id),
        question=q["question"].strip(), answers=(), multiple_choice_answer="",
        answer_type=""))
  return result


def test_question_ids(vqa_dir: str, subset: str) -> list[int]:
  """The question ids of a test subset's official file, in its order."""
  return [int(q["question_id"])
          for q in _read_json(_file(vqa_dir, QUESTIONS_FILE, subset))["questions"]]


def results_question_ids(vqa_dir: str, split: str,
                         questions: list[Question]) -> list[int]:
  """Every question id the official results file of `split` must hold.

  The split's own questions, except for test-dev: EvalAI's Test-Dev phase expects
  every test2015 question (it scores the test-dev ones), so those come from the
  test2015 question file when it is in `vqa_dir`, and a warning says so when not.
  """
  own = [q.question_id for q in questions]
  if split != "test-dev":
    return own
  path = os.path.join(vqa_dir, QUESTIONS_FILE.format(subset="test2015"))
  if not os.path.isfile(path):
    logging.warning("%s is not in config.data.vqa_dir, so the test-dev results file "
                    "holds only the test-dev questions; EvalAI's Test-Dev phase expects "
                    "every test2015 question. Put the file there (%s) to write a file "
                    "EvalAI accepts.", os.path.basename(path), _TEST_DOWNLOAD)
    return own
  everything = test_question_ids(vqa_dir, "test2015")
  outside = set(own) - set(everything)
  if outside:
    raise ValueError(f"{len(outside)} test-dev questions (e.g. {min(outside)}) are not "
                     f"in {path}; are the two question files from one release?")
  return everything


def minival_image_ids(val_questions: list[Question], minival_images: int) -> set[int]:
  """The held-out images of trainval training: the lowest val2014 image ids."""
  return set(sorted({q.image_id for q in val_questions})[:minival_images])


def split_questions(vqa_dir: str, split: str, *, trainval: bool = False,
                    minival_images: int = 1000) -> list[Question]:
  """The questions of our split (see module doc), before the image check."""
  if split in TEST_SUBSETS:
    return read_test_questions(vqa_dir, TEST_SUBSETS[split])
  if split not in SPLITS:
    raise ValueError(f"VQAv2 has splits {SPLITS} (the test splits without answers); "
                     f"got {split!r}.")
  if not trainval:
    return read_questions(vqa_dir, "train2014" if split == "train" else "val2014")
  val = read_questions(vqa_dir, "val2014")
  held_out = minival_image_ids(val, minival_images)
  if split == "validation":
    if not held_out:
      logging.warning("VQAv2 trainval with minival_images=0: validation is val2014, "
                      "which is also in training.")
      return val
    return [q for q in val if q.image_id in held_out]
  return read_questions(vqa_dir, "train2014") + [q for q in val if q.image_id not in held_out]


def with_existing_images(questions: list[Question], coco_dir: str, name: str, *,
                         missing_images: str = "skip") -> list[Question]:
  """The questions whose image file exists (see the module doc for the others).

  missing_images: "skip" drops the others, counted and logged once; "error" raises
  naming the first missing file and the fix; "blank" keeps every question (its
  example then has a black image).
  """
  if missing_images not in MISSING_IMAGES:
    raise ValueError(f"missing_images={missing_images!r}; use one of {MISSING_IMAGES}.")
  present = {}
  for subdir in sorted({os.path.dirname(q.image_file) for q in questions}):
    path = os.path.join(coco_dir, subdir)
    if not os.path.isdir(path) and missing_images != "blank":
      raise FileNotFoundError(
          f"COCO image folder {path} not found. Set config.data.coco_dir to the folder "
          f"holding {subdir}/ (COCO images from https://cocodataset.org).")
    present[subdir] = set(os.listdir(path)) if os.path.isdir(path) else set()
  kept, missing = [], []
  for q in questions:
    has_image = os.path.basename(q.image_file) in present[os.path.dirname(q.image_file)]
    (kept if has_image else missing).append(q)
  if missing and missing_images == "error":
    images_missing = len({q.image_id for q in missing})
    raise FileNotFoundError(
        f"{name}: {len(missing)} of {len(questions)} questions ({images_missing} images) "
        f"have no image file under {coco_dir}, e.g. "
        f"{os.path.join(coco_dir, missing[0].image_file)}; every question of the "
        f"official file needs an answer. Put the images there ({_TEST_DOWNLOAD}), or "
        f"pass --missing_images=blank to answer those questions from a black image.")
  if missing and missing_images == "blank":
    logging.warning("%s: %d of %d questions have no image file under %s (e.g. %s); "
                    "they are answered from a black image.", name, len(missing),
                    len(questions), coco_dir, missing[0].image_file)
    return questions
  if missing:
    logging.warning("%s: skipped %d of %d questions (%d images) whose image file is "
                    "missing under %s, e.g. %s.", name, len(missing), len(questions),
                    len({q.image_id for q in missing}), coco_dir, missing[0].image_file)
  if not kept:
    raise FileNotFoundError(f"{name}: none of the {len(questions)} questions has its image "
                            f"under config.data.coco_dir={coco_dir!r}.")
  return kept


def _vocab_cache_path(vqa_dir: str, cache_dir: str, size: int, trainval: bool,
                      minival_images: int) -> str:
  subsets = SUBSETS if trainval else SUBSETS[:1]
  key = [size, trainval, minival_images if trainval else 0]
  for subset in subsets:
    path = _file(vqa_dir, ANNOTATIONS_FILE, subset)
    key.append((os.path.basename(path), os.path.getsize(path)))
  digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
  return os.path.join(cache_dir, f"vqav2_answers_{size}_{digest}.json")


def most_frequent_answers(questions: list[Question], size: int) -> list[str]:
  """The `size` most frequent multiple-choice answers; ties broken alphabetically."""
  counts = collections.Counter(q.multiple_choice_answer for q in questions)
  counts.pop("", None)  # answers that normalise to nothing (e.g. "...")
  return sorted(counts, key=lambda answer: (-counts[answer], answer))[:size]


def answer_vocabulary(vqa_dir: str, cache_dir: str, *,
                      size: int = DEFAULT_ANSWER_VOCAB_SIZE, trainval: bool = False,
                      minival_images: int = 1000,
                      train_questions: list[Question] | None = None) -> list[str]:
  """The cached answer vocabulary, computed from the training questions on a miss.

  `train_questions` (the training split, all of it) saves re-reading the files.
  """
  path = _vocab_cache_path(vqa_dir, cache_dir, size, trainval, minival_images)
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)["answers"]
  if train_questions is None:
    train_questions = split_questions(vqa_dir, "train", trainval=trainval,
                                      minival_images=minival_images)
  answers = most_frequent_answers(train_questions, size)
  os.makedirs(cache_dir, exist_ok=True)
  temporary = f"{path}.tmp{os.getpid()}"  # several hosts may write at once
  with open(temporary, "w") as f:
    json.dump({"answers": answers, "vqa_dir": os.path.abspath(vqa_dir),
               "trainval": trainval, "minival_images": minival_images}, f)
  os.replace(temporary, path)
  logging.info("VQAv2 answer vocabulary (%d answers) cached in %s.", len(answers), path)
  return answers


class VQAv2Source:
  """Raw examples, one per question (see module doc); Grain random-access protocol.

  `answer_vocab` is the answer vocabulary the model classifies into (see `load`).
  `subset` names the official results file (None: the split mixes subsets) and
  `results_question_ids` lists every question id it must hold (see
  `results_question_ids`). With `keep_unreadable`, a question whose image cannot be
  read keeps its question with a black image (submissions answer every id); else it
  becomes an empty example (training).
  """

  def __init__(self, questions: list[Question], coco_dir: str, *,
               answer_vocab: list[str], name: str = "vqav2", subset: str | None = None,
               results_question_ids: list[int] | None = None,
               keep_unreadable: bool = False):
    self.questions = questions
    self.coco_dir = coco_dir
    self.answer_vocab = answer_vocab
    self.name = name
    self.subset = subset
    self.results_question_ids = (results_question_ids if results_question_ids is not None
                                 else [q.question_id for q in questions])
    self.keep_unreadable = keep_unreadable
    self.bad_records = images.BadRecordLog(name)

  def __len__(self) -> int:
    return len(self.questions)

  def __repr__(self) -> str:
    return f"VQAv2Source({self.name!r}, {len(self)} questions)"

  def texts(self):
    """The question texts, for tokenizer training (no image decoding)."""
    return (q.question for q in self.questions)

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"Index {index} out of range for {self!r}.")
    q = self.questions[index]
    example = images.empty_example(q.question_id)
    try:
      example["image"] = images.decode_image(os.path.join(self.coco_dir, q.image_file))
    except images.ImageDecodeError as e:
      self.bad_records.count("undecodable_image", f"{q.image_file}: {e}")
      if not self.keep_unreadable:
        return example
    return {**example, "questions": [q.question], "answers": [list(q.answers)],
            "answer_types": [q.answer_type]}


def results_subset(split: str, trainval: bool = False) -> str | None:
  """The official subset a results file of `split` is named after; None if mixed."""
  if split in TEST_SUBSETS:
    return TEST_SUBSETS[split]
  if split == "train":
    return None if trainval else "train2014"
  return "val2014"


def load(split: str, *, vqa_dir: str, coco_dir: str, cache_dir: str,
         answer_vocab_size: int = DEFAULT_ANSWER_VOCAB_SIZE, trainval: bool = False,
         minival_images: int = 1000, missing_images: str | None = None) -> VQAv2Source:
  """The source of `split` (one of SPLITS), with its answer vocabulary.

  answer_vocab_size=0: no answer vocabulary (a model without an answer head, e.g.
  zero-shot VQA by the caption decoder; no training files needed). missing_images:
  see `with_existing_images`; default "error" on the test splits, else "skip".
  """
  questions = split_questions(vqa_dir, split, trainval=trainval,
                              minival_images=minival_images)
  answers = [] if answer_vocab_size == 0 else answer_vocabulary(
      vqa_dir, cache_dir, size=answer_vocab_size, trainval=trainval,
      minival_images=minival_images, train_questions=questions if split == "train" else None)
  name = f"vqav2:{split}"
  test = split in TEST_SUBSETS
  missing_images = missing_images or ("error" if test else "skip")
  return VQAv2Source(
      with_existing_images(questions, coco_dir, name, missing_images=missing_images),
      coco_dir, answer_vocab=answers, name=name,
      subset=results_subset(split, trainval),
      results_question_ids=results_question_ids(vqa_dir, split, questions),
      keep_unreadable=test or missing_images == "blank")
