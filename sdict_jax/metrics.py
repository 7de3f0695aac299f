"""Evaluation metrics: COCO caption scores and VQA accuracy.

Caption scores are computed by pycocoevalcap exactly as the COCO caption evaluation
server does (Stanford PTB tokenisation, then BLEU-1..4, METEOR, ROUGE-L, CIDEr-D and,
when its Java models are installed, SPICE), so numbers are comparable with published
results. Values are on pycocoevalcap's scale: CIDEr 1.275 is a paper's "127.5".

VQA accuracy reimplements the official VQA evaluation (vqaEval.py of the VQA API,
GT-Vision-Lab/VQA), quirks included: answers are normalised only when the human answers
disagree, and a prediction earns `min(1, matches / 3)` against each of the ten
leave-one-annotator-out subsets of the human answers, averaged over the subsets. Values
are fractions in [0, 1], not the percentages (rounded to 2 decimals) the VQA papers print.
"""

import collections
import os
import re
import shutil
import subprocess

from absl import logging
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.spice import spice as spice_module
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

_JAVA_HELP = (
    "Caption metrics need Java: pycocoevalcap's PTB tokenizer, METEOR and SPICE are Java "
    "programs. Install a Java runtime (e.g. `apt-get install default-jre`, or "
    "`conda install -c conda-forge openjdk`) and make sure `java` is on PATH.")

# SPICE parses captions with Stanford CoreNLP 3.6.0, whose jars pycocoevalcap downloads
# (about 1 GB) the first time SPICE runs. We only look for them: an evaluation must
# not stall on, or fail for want of, a download.
_SPICE_DIR = os.path.dirname(os.path.abspath(spice_module.__file__))
_SPICE_CORENLP_JARS = tuple(
    os.path.join(_SPICE_DIR, "lib", name)
    for name in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar"))
_SPICE_HELP = (
    "SPICE omitted: its Stanford CoreNLP jars are not in {lib}. To enable it, run once "
    "with network access: python -c 'from pycocoevalcap.spice.get_stanford_models import "
    "get_stanford_models; get_stanford_models()' (SPICE also needs Java 8 or 11).")

# Loading METEOR's paraphrase table takes ~10 s, so one METEOR process (about 1 GB of
# memory) serves every evaluation of this Python process; it exits with the process.
_meteor_process = None


def _require_java():
  if shutil.which("java") is None:
    raise RuntimeError(_JAVA_HELP)


def _describe_ids(ids, limit=10):
  shown = sorted(ids, key=str)[:limit]
  more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
  return f"{shown}{more}"


def _check_caption_inputs(references, predictions):
  if not predictions:
    raise ValueError("No predictions to score: `predictions` is empty.")
  missing = [i for i in predictions if not references.get(i)]
  if missing:
    raise ValueError(
        f"No reference captions for prediction ids {_describe_ids(missing)}; every "
        "predicted id needs a non-empty list of references.")
  not_lists = [i for i in predictions if not isinstance(references[i], (list, tuple))]
  if not_lists:
    raise ValueError(
        f"references[id] must be a list of caption strings; ids {_describe_ids(not_lists)} "
        "hold something else (wrap a single caption as [caption]).")
  not_strings = [i for i, caption in predictions.items() if not isinstance(caption, str)]
  if not_strings:
    raise ValueError(
        f"predictions[id] must be one caption string; ids {_describe_ids(not_strings)} "
        "hold something else.")


def _ptb_tokenize(references, predictions):
  """Tokenises references and predictions in one Java call (one JVM start)."""
  # The wrapper pairs captions with output lines by position, so a line break of any
  # kind inside a caption would shift every later caption: collapse all whitespace.
  captions = {}
  for i, caption in predictions.items():
    captions[("prediction", i)] = [{"caption": " ".join(caption.split())}]
    captions[("reference", i)] = [{"caption": " ".join(ref.split())}
                                  for ref in references[i]]
  tokenized = PTBTokenizer().tokenize(captions)
  if any(len(tokenized.get(key, ())) != len(value) for key, value in captions.items()):
    raise RuntimeError("The PTB tokenizer returned fewer captions than it was given; "
                       "check that `java -version` works.")
  refs = {i: tokenized[("reference", i)] for i in predictions}
  preds = {i: tokenized[("prediction", i)] for i in predictions}
  return refs, preds


def _meteor():
  global _meteor_process
  if _meteor_process is None or _meteor_process.meteor_p.poll() is not None:
    _meteor_process = Meteor()
  return _meteor_process


def _spice_jars_present():
  return all(os.path.exists(jar) for jar in _SPICE_CORENLP_JARS)


def _spice_score(refs, preds):
  """Returns SPICE, or None (with one log line saying why) when it cannot run."""
  if not _spice_jars_present():
    logging.warning(_SPICE_HELP.format(lib=os.path.dirname(_SPICE_CORENLP_JARS[0])))
    return None
  try:
    score, _ = spice_module.Spice().compute_score(refs, preds)
  except subprocess.CalledProcessError as e:
    # SPICE 1.0 is known to fail on Java 17+; a failure should not cost the other scores.
    logging.warning("SPICE omitted: %s (SPICE needs Java 8 or 11).", e)
    return None
  return float(score)


CAPTION_SCORERS = ("BLEU", "METEOR", "ROUGE-L", "CIDEr", "SPICE")


def caption_scores(references, predictions, scorers=CAPTION_SCORERS):
  """COCO caption metrics of `predictions` against `references`.

  Args:
    references: {id: [reference caption, ...]}; may hold ids that are not predicted.
    predictions: {id: caption}; every id must have references.
    scorers: a subset of CAPTION_SCORERS; evaluation during training asks for
      ("BLEU", "CIDEr") and so never starts METEOR's 1 GB Java process.

  Returns:
    {"BLEU-1", ..., "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"} and "SPICE" when its
    CoreNLP jars are installed, as corpus-level floats on pycocoevalcap's scale.
    CIDEr-D takes its n-gram document frequencies from the scored references, so it
    is only meaningful over a corpus (a single image always scores 0).
  """
  _check_caption_inputs(references, predictions)
  unknown = set(scorers) - set(CAPTION_SCORERS)
  if unknown:
    raise ValueError(f"Unknown caption scorers {sorted(unknown)}; choose from "
                     f"{CAPTION_SCORERS}.")
  _require_java()
  refs, preds = _ptb_tokenize(references, predictions)
  scores = {}
  if "BLEU" in scorers:
    bleu, _ = Bleu(4).compute_score(refs, preds, verbose=0)
    scores.update({f"BLEU-{n}": float(b) for n, b in enumerate(bleu, start=1)})
  if "METEOR" in scorers:
    scores["METEOR"] = float(_meteor().compute_score(refs, preds)[0])
  if "ROUGE-L" in scorers:
    scores["ROUGE-L"] = float(Rouge().compute_score(refs, preds)[0])
  if "CIDEr" in scorers:
    scores["CIDEr"] = float(Cider().compute_score(refs, preds)[0])
  spice = _spice_score(refs, preds) if "SPICE" in scorers else None
  if spice is not None:
    scores["SPICE"] = spice
  return scores


# ---------------------------------------------------------------------------------------
# VQA accuracy.
# ---------------------------------------------------------------------------------------

# The tables below are vqaEval.py's (GT-Vision-Lab/VQA, PythonEvaluationTools/
# vqaEvaluation). Its capitalised contraction keys ("Im", "Ive", ...) are left out:
# answers are lower-cased before the lookup, so they can never match.
_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
                ">", "<", "@", "`", ",", "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# vqaEval.py's pattern reads `(?!<=\d)(\.)(?!\d)`; its first group is a (misspelt)
# lookahead that always holds, so what it does is drop every period not before a digit.
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
# vqaEval.py passes re.UNICODE (= 32) where `Pattern.sub` takes `count`, so it drops at
# most the first 32 such periods.
_PERIODS_DROPPED = 32
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset({"a", "an", "the"})
_CONTRACTIONS = dict(pair.split("=") for pair in """
    aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't
    couldn'tve=couldn't've couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't
    hadnt=hadn't hadnt've=hadn't've hadn'tve=hadn't've hasnt=hasn't havent=haven't
    hed=he'd hed've=he'd've he'dve=he'd've hes=he's howd=how'd howll=how'll hows=how's
    isnt=isn't itd=it'd itd've=it'd've it'dve=it'd've itll=it'll let's=let's maam=ma'am
    mightnt=mightn't mightnt've=mightn't've mightn'tve=mightn't've mightve=might've
    mustnt=mustn't mustve=must've neednt=needn't notve=not've oclock=o'clock
    oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at 'ow'sat='ow's'at shant=shan't
    shed've=she'd've she'dve=she'd've she's=she's shouldve=should've shouldnt=shouldn't
    shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd
    somebodyd've=somebody'd've somebody'dve=somebody'd've somebodyll=somebody'll
    somebodys=somebody's someoned=someone'd someoned've=someone'd've
    someone'dve=someone'd've someonell=someone'll someones=someone's
    somethingd=something'd somethingd've=something'd've something'dve=something'd've
    somethingll=something'll thats=that's thered=there'd thered've=there'd've
    there'dve=there'd've therere=there're theres=there's theyd=they'd theyd've=they'd've
    they'dve=they'd've theyll=they'll theyre=they're theyve=they've twas='twas
    wasnt=wasn't wed've=we'd've we'dve=we'd've weve=we've werent=weren't whatll=what'll
    whatre=what're whats=what's whatve=what've whens=when's whered=where'd wheres=where's
    whereve=where've whod=who'd whod've=who'd've who'dve=who'd've wholl=who'll whos=who's
    whove=who've whyll=why'll whyre=why're whys=why's wont=won't wouldve=would've
    wouldnt=wouldn't wouldnt've=wouldn't've wouldn'tve=wouldn't've yall=y'all
    yall'll=y'all'll y'allll=y'all'll yall'd've=y'all'd've y'alld've=y'all'd've
    y'all'dve=y'all'd've youd=you'd youd've=you'd've you'dve=you'd've youll=you'll
    youre=you're youve=you've
    """.split())
# ("somebody'd=somebodyd" runs backwards, but it is what vqaEval.py does.)


def _clean_whitespace(text):
  # vqaEval.py's first step on every answer, human or predicted, in both branches.
  return text.replace("\n", " ").replace("\t", " ").strip()


def _strip_punctuation(text):
  """vqaEval.py's processPunctuation."""
  # A mark next to a space is dropped ("red, white"), a mark inside a word becomes a
  # space ("red/white" -> "red white"), and a thousands comma ("1,000") makes vqaEval.py
  # drop every mark in the answer. Tests are on the original text, as in vqaEval.py.
  drop_all = _DIGIT_COMMA_DIGIT.search(text) is not None
  out = text
  for mark in _PUNCTUATION:
    touches_space = f"{mark} " in text or f" {mark}" in text
    out = out.replace(mark, "" if drop_all or touches_space else " ")
  return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_PERIODS_DROPPED)


def _normalize_words(text):
  """vqaEval.py's processDigitArticle: lower case, number words, articles, contractions."""
  words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
  return " ".join(_CONTRACTIONS.get(word, word) for word in words
                  if word not in _ARTICLES)


def normalize_answer(text):
  """The VQA answer normalisation: punctuation, lower case, digits, articles, contractions.

  E.g. "Two dogs." -> "2 dogs", "the dog" -> "dog", "dont" -> "don't", "1,000" -> "1000".
  This is what vqaEval.py applies to every answer of a question whose human answers
  disagree; `vqa_accuracy(..., normalization="full")` applies it always.
  """
  return _normalize_words(_strip_punctuation(_clean_whitespace(text)))


def _official_answers(prediction, human_answers):
  """(prediction, human answers) in the form vqaEval.py compares them."""
  prediction = _clean_whitespace(prediction)
  human_answers = [_clean_whitespace(answer) for answer in human_answers]
  # vqaEval.py leaves a question whose humans all agree untouched, on both sides (its
  # authors' reason: not to alter answers read off text in the image). So "dog" scores 0
  # against ten "a dog", and "Yes" against ten "yes": the comparison is case-sensitive.
  if len(set(human_answers)) == 1:
    return prediction, human_answers
  return normalize_answer(prediction), [normalize_answer(a) for a in human_answers]


def _full_answers(prediction, human_answers):
  """Every answer normalised, always: symmetric, and blind to formatting."""
  return normalize_answer(prediction), [normalize_answer(a) for a in human_answers]


def _official_2015_answers(prediction, human_answers):
  """vqaEval.py as first released (GT-Vision-Lab/VQA at 07aecec), still in forks.

  The prediction is always fully normalised; the human answers get the punctuation
  step only, and only when they are not all identical (no whitespace cleaning, no
  number words or articles), so "3" scores 0 against "three". Its per-answer-type
  means had a bug (each question counted with its last subset's score) that is not
  reproduced here: the per-type values are means of whole-question scores.
  """
  if len(set(human_answers)) > 1:
    human_answers = [_strip_punctuation(answer) for answer in human_answers]
  return normalize_answer(prediction), list(human_answers)


VQA_NORMALIZATIONS = {"official": _official_answers, "full": _full_answers,
                      "official_2015": _official_2015_answers}


def _leave_one_out_accuracy(prediction, human_answers):
  # vqaEval.py leaves out one annotator at a time (its answer records differ by
  # answer_id even where the answers are equal), so subsets follow positions here.
  matches = sum(answer == prediction for answer in human_answers)
  # Leaving out a matching annotator removes one match from the subset.
  per_subset = [min(1.0, (matches - (answer == prediction)) / 3)
                for answer in human_answers]
  return sum(per_subset) / len(per_subset)


def _check_vqa_inputs(predictions, answers, answer_types):
  if not predictions:
    raise ValueError("No predictions to score: `predictions` is empty.")
  missing = [q for q in predictions if not answers.get(q)]
  if missing:
    raise ValueError(
        f"No human answers for question ids {_describe_ids(missing)}; every predicted "
        "question needs its list of (ten) human answers.")
  if answer_types is not None:
    untyped = [q for q in predictions if q not in answer_types]
    if untyped:
      raise ValueError(
          f"answer_types lacks question ids {_describe_ids(untyped)}; give a type for "
          "every predicted question or pass answer_types=None.")


def vqa_accuracy(predictions, answers, answer_types=None, normalization="official"):
  """VQA accuracy of `predictions`, as fractions in [0, 1].

  With normalization="official" (the default) the score is vqaEval.py's
  (GT-Vision-Lab/VQA), quirks included. Newlines and tabs become spaces and ends are
  stripped; then, only if a question's human answers are not all identical, the
  prediction and the human answers are normalised (`normalize_answer`: punctuation,
  lower case, number words, articles, contractions). When all humans agree nothing more
  is done, so "dog" scores 0 against ten "a dog", and so do "yes!" and "Yes" against ten
  "yes". Each question scores the mean over its leave-one-annotator-out subsets of
  `min(1, matches / 3)`; the overall and per-type values are plain means of those
  per-question scores. vqaEval.py reports `round(100 * value, 2)`; this returns the
  unrounded fraction, so that rounding reproduces its numbers.

  normalization="full" normalises every answer, predicted and human, always. It is
  not what the VQA servers compute, but it does not punish a prediction's format on
  questions where the humans agree, so it separates a model's answers from their
  spelling; it matches codebases that normalise both sides; and it equals "official"
  when human answers and predictions are already normalised (an answer vocabulary
  built with `normalize_answer`). normalization="official_2015" is the first release
  of vqaEval.py (see `_official_2015_answers`), which scores numbers written as
  words, articles and case differently; papers of 2015–2017 used it.

  Args:
    predictions: {question id: answer}; only these questions are scored.
    answers: {question id: [human answer, ...]} (ten per question in VQAv2), as the
      annotation file holds them: "official" is only official on unnormalised answers.
    answer_types: optional {question id: type}, e.g. "yes/no", "number", "other".
    normalization: "official", "full" or "official_2015", see above.

  Returns:
    {"overall": mean accuracy} plus {type: mean accuracy over that type's questions}
    for each type when `answer_types` is given.
  """
  if normalization not in VQA_NORMALIZATIONS:
    raise ValueError(f"Unknown VQA normalization {normalization!r}; choose from "
                     f"{sorted(VQA_NORMALIZATIONS)}.")
  _check_vqa_inputs(predictions, answers, answer_types)
  prepare = VQA_NORMALIZATIONS[normalization]
  per_type = collections.defaultdict(list)
  for question, prediction in predictions.items():
    accuracy = _leave_one_out_accuracy(*prepare(prediction, answers[question]))
    per_type["overall"].append(accuracy)
    if answer_types is not None:
      per_type[answer_types[question]].append(accuracy)
  return {name: sum(values) / len(values) for name, values in per_type.items()}
