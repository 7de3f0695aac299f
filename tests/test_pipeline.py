"""The Grain pipeline: batch format, VQA soft scores, caption shift, determinism,
checkpointable iterator state, sharding, and sources that lack some tasks."""

import gc

import numpy as np
import pytest

from sdict_jax.data import pipeline
from sdict_jax.data import shapes
from sdict_jax.data import tokenizer

ANSWERS = shapes.answer_vocabulary()
TOKENIZER = tokenizer.shapes_tokenizer()
TEXT_LEN, CAPTION_LEN = 16, 48


def _source(n=64, image_size=32):
  return shapes.ShapesSource("train", num_examples=n, image_size=image_size)


def _dataset(source=None, **overrides):
  kwargs = dict(tokenizer=TOKENIZER, answer_vocab=ANSWERS, image_size=32, batch_size=4,
                max_text_len=TEXT_LEN, max_caption_len=CAPTION_LEN, seed=0, train=True,
                read_threads=2)
  kwargs.update(overrides)
  return pipeline.make_dataset(_source() if source is None else source, **kwargs)


def _words(text):
  """Text as the word tokenizer sees it: lower case, no punctuation."""
  return " ".join(tokenizer.split_words(text))


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same_batches(xs, ys):
  assert len(xs) == len(ys)
  for x, y in zip(xs, ys):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


@pytest.mark.parametrize("train", [True, False])
def test_batch_keys_shapes_and_dtypes(train):
  batch = next(iter(_dataset(_source(image_size=40), image_size=48, train=train)))
  expected = {
      "image": ((4, 48, 48, 3), np.float32),
      "question": ((4, TEXT_LEN), np.int32),
      "answer_scores": ((4, len(ANSWERS)), np.float32),
      "refexp": ((4, TEXT_LEN), np.int32),
      "box": ((4, 4), np.float32),
      "caption_in": ((4, CAPTION_LEN), np.int32),
      "caption_out": ((4, CAPTION_LEN), np.int32),
      "has_vqa": ((4,), np.float32),
      "has_caption": ((4,), np.float32),
      "has_box": ((4,), np.float32),
      "example_id": ((4,), np.int32),
  }
  assert set(batch) == set(expected)
  for key, (shape, dtype) in expected.items():
    assert batch[key].shape == shape and batch[key].dtype == dtype, key
  assert 0 <= batch["image"].min() and batch["image"].max() <= 1
  assert batch["image"].max() > 0.5
  for key in ("has_vqa", "has_caption", "has_box"):
    np.testing.assert_array_equal(batch[key], 1.0)
  # Synthetic answers are exact: one answer with score 1 per question.
  np.testing.assert_array_equal(np.sort(batch["answer_scores"], axis=1)[:, -2:],
                                np.tile([0.0, 1.0], (4, 1)))


def test_answer_scores_are_vqa_soft_scores():
  encoder = pipeline.ExampleEncoder(
      tokenizer=TOKENIZER, answer_index={a: i for i, a in enumerate(ANSWERS)},
      image_size=32, max_text_len=TEXT_LEN, max_caption_len=CAPTION_LEN)
  scores = encoder.answer_scores([" Yes"] * 1 + ["yes"] * 1 + ["no"] * 4 + ["red"] +
                                 ["maybe"] * 3)
  expected = np.zeros(len(ANSWERS), np.float32)
  expected[ANSWERS.index("yes")] = 2 / 3
  expected[ANSWERS.index("no")] = 1.0
  expected[ANSWERS.index("red")] = 1 / 3
  np.testing.assert_allclose(scores, expected, rtol=1e-6)  # "maybe" is out of vocabulary


def test_caption_out_is_caption_in_shifted_by_one():
  source = _source()
  for batch in _take(iter(_dataset(source)), 3):
    for caption_in, caption_out, example_id in zip(batch["caption_in"], batch["caption_out"],
                                                   batch["example_id"]):
      n = int((caption_out != 0).sum())  # words + EOS
      assert caption_in[0] == TOKENIZER.bos_id and caption_out[n - 1] == TOKENIZER.eos_id
      np.testing.assert_array_equal(caption_in[1:n], caption_out[:n - 1])
      assert not caption_in[n:].any() and not caption_out[n:].any()
      captions = source[int(example_id)]["captions"]
      assert TOKENIZER.decode(caption_out) in [_words(c) for c in captions]


def test_long_captions_are_truncated_keeping_eos_last():
  batch = next(iter(_dataset(max_caption_len=6)))
  assert (batch["caption_in"][:, 0] == TOKENIZER.bos_id).all()
  assert (batch["caption_out"][:, -1] == TOKENIZER.eos_id).all()
  np.testing.assert_array_equal(batch["caption_in"][:, 1:], batch["caption_out"][:, :-1])


def test_same_seed_same_batches_other_seed_other_batches():
  _assert_same_batches(_take(iter(_dataset()), 3), _take(iter(_dataset()), 3))
  a, b = next(iter(_dataset(seed=0))), next(iter(_dataset(seed=1)))
  assert not np.array_equal(a["example_id"], b["example_id"])


def test_iterator_state_round_trips():
  iterator = iter(_dataset())
  _take(iterator, 3)
  state = iterator.get_state()
  expected = _take(iterator, 2)
  resumed = iter(_dataset())
  resumed.set_state(state)
  _assert_same_batches(_take(resumed, 2), expected)


def test_training_repeats_and_reshuffles_epochs():
  # 16 examples, batches of 4: each epoch is 4 batches with every example exactly once.
  batches = _take(iter(_dataset(_source(n=16))), 8)
  epochs = [np.concatenate([b["example_id"] for b in batches[i:i + 4]]) for i in (0, 4)]
  for ids in epochs:
    np.testing.assert_array_equal(np.sort(ids), np.arange(16))
  assert not np.array_equal(epochs[0], epochs[1])


def test_multiprocess_prefetch_matches_in_process_reading():
  expected = _take(iter(_dataset()), 4)
  iterator = iter(_dataset(worker_count=2))
  # Copy out of Grain's shared memory so the buffers can be released before the test ends.
  got = [{k: np.array(v) for k, v in b.items()} for b in _take(iterator, 4)]
  iterator.close()
  gc.collect()
  _assert_same_batches(got, expected)


def test_eval_is_ordered_with_fixed_choices():
  source = _source(n=10)
  batches = list(_dataset(source, train=False, drop_remainder=False))
  assert [len(b["example_id"]) for b in batches] == [4, 4, 2]
  for batch in batches:
    for row, example_id in enumerate(batch["example_id"]):
      raw = source[int(example_id)]
      i = int(example_id)  # the source index
      assert TOKENIZER.decode(batch["caption_out"][row]) == _words(raw["captions"][0])
      assert TOKENIZER.decode(batch["question"][row]) == _words(
          raw["questions"][i % len(raw["questions"])])
      obj = i % len(raw["refexps"])
      assert TOKENIZER.decode(batch["refexp"][row]) == raw["refexps"][obj]
      np.testing.assert_array_equal(batch["box"][row], raw["boxes"][obj])
  assert np.concatenate([b["example_id"] for b in batches]).tolist() == list(range(10))
  _assert_same_batches(batches, list(_dataset(source, train=False, drop_remainder=False)))


def test_training_applies_image_transform_and_eval_does_not():
  def blackout(image, rng):
    assert isinstance(rng, np.random.Generator) and image.dtype == np.uint8
    return np.zeros_like(image)
  train = next(iter(_dataset(image_transform=blackout)))
  evaluation = next(iter(_dataset(image_transform=blackout, train=False)))
  assert not train["image"].any() and evaluation["image"].any()


def test_shards_are_disjoint_and_cover_the_source():
  shard_ids = []
  for shard_index in range(3):
    batches = _dataset(_source(n=20), train=False, drop_remainder=False,
                       shard_index=shard_index, shard_count=3)
    shard_ids.append({int(i) for b in batches for i in b["example_id"]})
  assert sum(map(len, shard_ids)) == 20
  assert set.union(*shard_ids) == set(range(20))
  with pytest.raises(ValueError, match="shard_index"):
    _dataset(shard_index=3, shard_count=3)


def test_missing_tasks_give_zero_flags_and_padding():
  grey = np.full((24, 40), 200, np.uint8)  # not square, not RGB: resized and expanded
  raw = [
      {"image": grey, "captions": ["a red circle"], "id": 5},
      {"image": grey, "captions": [], "questions": ["is there a red circle?"],
       "answers": [["yes"] * 10], "answer_types": ["yes/no"], "boxes": np.zeros((0, 4)),
       "refexps": [], "id": 6},
      {"image": grey, "boxes": np.array([[0.1, 0.2, 0.5, 0.6]]), "refexps": ["the circle"],
       "id": 7},
      {"image": grey, "boxes": np.array([[0.1, 0.2, 0.5, 0.6]]), "id": 8},  # no refexps
  ]
  for train in (True, False):
    batch = next(iter(_dataset(raw, batch_size=4, train=train)))
    order = np.argsort(batch["example_id"])
    batch = {k: v[order] for k, v in batch.items()}
    np.testing.assert_array_equal(batch["example_id"], [5, 6, 7, 8])
    np.testing.assert_array_equal(batch["has_caption"], [1, 0, 0, 0])
    np.testing.assert_array_equal(batch["has_vqa"], [0, 1, 0, 0])
    np.testing.assert_array_equal(batch["has_box"], [0, 0, 1, 0])
    assert not batch["caption_in"][1:].any() and not batch["caption_out"][1:].any()
    assert not batch["question"][[0, 2, 3]].any()
    assert not batch["answer_scores"][[0, 2, 3]].any()
    assert batch["answer_scores"][1, ANSWERS.index("yes")] == 1.0
    assert not batch["refexp"][[0, 1, 3]].any() and not batch["box"][[0, 1, 3]].any()
    np.testing.assert_allclose(batch["box"][2], [0.1, 0.2, 0.5, 0.6])
    np.testing.assert_allclose(batch["image"], 200 / 255, rtol=1e-6)


def test_several_questions_per_image_are_distinct_questions_of_that_image():
  raw = [{"image": np.zeros((32, 32, 3), np.uint8), "id": i,
          "questions": [f"is there a {c} circle?" for c in colours],
          "answers": [[c] * 10 for c in colours]}
         for i, colours in enumerate([["red", "green", "blue"], ["red"], []])]
  batch = next(iter(_dataset(raw, batch_size=3, questions_per_image=2)))
  assert batch["question"].shape == (3, 2, TEXT_LEN)
  assert batch["answer_scores"].shape == (3, 2, len(ANSWERS))
  for row, example_id in enumerate(batch["example_id"]):
    example = raw[example_id]
    asked = [TOKENIZER.decode(q) for q, has in zip(batch["question"][row],
                                                   batch["has_vqa"][row]) if has]
    assert len(asked) == min(2, len(example["questions"]))  # the rest: empty slots
    assert len(set(asked)) == len(asked)
    for question, scores in zip(asked, batch["answer_scores"][row]):
      colour = example["answers"][[_words(q) for q in example["questions"]].index(
          question)][0]
      assert scores[ANSWERS.index(colour)] == 1.0 and scores.sum() == 1.0
    empty = batch["has_vqa"][row] == 0
    assert not batch["question"][row][empty].any()
    assert not batch["answer_scores"][row][empty].any()
  evaluation = next(iter(_dataset(raw, batch_size=3, questions_per_image=2, train=False,
                                  drop_remainder=False)))
  assert evaluation["question"].shape == (3, TEXT_LEN)  # evaluation: one question


@pytest.mark.parametrize("train,region_text", [(True, "refexps"), (False, "refexps"),
                                               (True, "descriptions")])
def test_regions_per_image_carry_every_box_with_the_text_that_names_it(train,
                                                                       region_text):
  """data.regions_per_image=R: up to R boxes of the image, each beside its own
  text (data.region_text), empty slots past the image's objects; the other fields
  unchanged."""
  source = _source(n=16)
  kwargs = dict(batch_size=8, train=train, drop_remainder=False)
  plain = next(iter(_dataset(source, **kwargs)))
  batch = next(iter(_dataset(source, regions_per_image=3, region_text=region_text,
                             **kwargs)))
  assert batch["region_texts"].shape == (8, 3, TEXT_LEN)
  assert batch["region_boxes"].shape == (8, 3, 4)
  _assert_same_batches([{k: batch[k] for k in plain}], [plain])
  for row, example_id in enumerate(batch["example_id"]):
    raw = source[int(example_id)]
    n = min(3, len(raw["refexps"]))
    np.testing.assert_array_equal(batch["has_region"][row], [1.0] * n + [0.0] * (3 - n))
    assert not batch["region_texts"][row, n:].any()
    assert not batch["region_boxes"][row, n:].any()
    seen = []
    for words, box in zip(batch["region_texts"][row, :n], batch["region_boxes"][row]):
      obj = [i for i, b in enumerate(raw["boxes"]) if np.allclose(b, box)]
      assert len(obj) == 1
      assert TOKENIZER.decode(words) == _words(raw[region_text][obj[0]])
      seen.append(obj[0])
    assert len(set(seen)) == n
    if not train:  # evaluation: the first R objects
      assert seen == list(range(n))


def test_training_draws_which_boxes_to_name_at_random():
  """regions_per_image below the object count: training names a random subset
  (the last objects too), evaluation always the first."""
  source = _source(n=32)
  kwargs = dict(batch_size=32, regions_per_image=1, drop_remainder=False)
  named = lambda batch: [
      [i for i, b in enumerate(source[int(e)]["boxes"]) if np.allclose(b, box)][0]
      for e, box in zip(batch["example_id"], batch["region_boxes"][:, 0])]
  assert max(named(next(iter(_dataset(source, **kwargs))))) > 0
  assert set(named(next(iter(_dataset(source, train=False, **kwargs))))) == {0}


def test_mismatched_annotations_raise_clear_errors():
  image = np.zeros((32, 32, 3), np.uint8)
  no_texts = [{"image": image, "boxes": np.zeros((1, 4)), "refexps": ["the circle"]}]
  with pytest.raises(ValueError, match="0 descriptions but 1 boxes; data.region_text"):
    next(iter(_dataset(no_texts, batch_size=1, train=False, regions_per_image=2,
                       region_text="descriptions")))
  bad_boxes = [{"image": image, "boxes": np.zeros((2, 4)), "refexps": ["the circle"]}]
  with pytest.raises(ValueError, match="refexps"):
    next(iter(_dataset(bad_boxes, batch_size=1, train=False)))
  bad_answers = [{"image": image, "questions": ["what?"], "answers": []}]
  with pytest.raises(ValueError, match="answer lists"):
    next(iter(_dataset(bad_answers, batch_size=1, train=False)))


def test_word_tokenizer_round_trip_and_special_ids():
  tok = tokenizer.WordTokenizer(["red", "circle", "Left", "red"])
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
  assert tok.vocab_size == 7
  ids = tok.encode("Red circle, LEFT of a circle?")
  assert ids == [4, 5, 6, tok.unk_id, tok.unk_id, 5]
  assert tok.decode([tok.bos_id, 4, 5, tok.pad_id, 6, tok.eos_id, 4]) == "red circle left"
  with pytest.raises(ValueError, match="single word"):
    tokenizer.WordTokenizer(["left of"])
