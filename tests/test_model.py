"""SDict-VLM model properties (SPEC §3): the paper's claims checked on real passes."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdict_jax import config_files
from sdict_jax import model as model_lib

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _model(mixer="sdict", **kw):
  kw = dict(vocab_size=40, num_answers=7, mixer=mixer, width=32, num_atoms=6,
            patch_size=8, pretrain_grid=(4, 4), vision_layers=1, text_layers=1,
            fusion_layers=1, decoder_layers=2, num_heads=2, max_caption_len=16) | kw
  return model_lib.SDictVLM(**kw)


def _batch(batch_size=2, image_size=32, seed=0):
  rng = np.random.default_rng(seed)
  batch = model_lib.dummy_batch(batch_size, image_size, 8, 10, 7)
  batch["image"] = jnp.asarray(rng.random((batch_size, image_size, image_size, 3)),
                               jnp.float32)
  batch["question"] = jnp.asarray([[5, 6, 7, 0, 0, 0, 0, 0]] * batch_size)
  batch["refexp"] = jnp.asarray([[8, 9, 0, 0, 0, 0, 0, 0]] * batch_size)
  batch["caption_in"] = jnp.asarray(rng.integers(3, 40, (batch_size, 10)), jnp.int32)
  return batch


def _params(model, batch):
  return model.init({"params": jax.random.PRNGKey(0), "noise": jax.random.PRNGKey(1)},
                    batch)["params"]


def _forward_jaxpr(mixer):
  model, batch = _model(mixer), _batch()
  params = _params(model, batch)
  return jax.make_jaxpr(lambda p, b: model.apply(
      {"params": p}, b, train=True, rngs={"noise": jax.random.PRNGKey(0)},
      mutable=["aux"]))(params, batch).jaxpr


def _all_equations(jaxpr):
  """Every equation, including those inside pjit / custom_jvp / scan bodies."""
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else [param]:
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          yield from _all_equations(inner)


def _count_softmax(jaxpr):
  """Softmaxes however they are spelled: exp(z) divided by its own reduce_sum."""
  count = 0
  for scope in [jaxpr] + [getattr(p, "jaxpr", p) for e in _all_equations(jaxpr)
                          for p in e.params.values() if hasattr(getattr(p, "jaxpr", p), "eqns")]:
    exps = {id(v) for e in scope.eqns if e.primitive.name == "exp" for v in e.outvars}
    sums = {id(e.outvars[0]): {id(v) for v in e.invars}
            for e in scope.eqns if e.primitive.name == "reduce_sum"}
    sum_of_exp = {out for out, ins in sums.items() if ins & exps}
    # The sum may be broadcast/reshaped before the division.
    aliases = {id(e.outvars[0]): id(e.invars[0]) for e in scope.eqns
               if e.primitive.name in ("broadcast_in_dim", "reshape", "convert_element_type")}
    for e in scope.eqns:
      if e.primitive.name == "div":
        numerator, denominator = (id(v) for v in e.invars[:2])
        if numerator in exps and aliases.get(denominator, denominator) in sum_of_exp:
          count += 1
  return count


def test_sdict_model_has_no_convolution_and_no_softmax():
  jaxpr = _forward_jaxpr("sdict")
  primitives = {e.primitive.name for e in _all_equations(jaxpr)}
  assert "conv_general_dilated" not in primitives, primitives
  assert _count_softmax(jaxpr) == 0
  # It is the real pass: the spectral least squares is in it. (The decoder's causal
  # convolution is a Toeplitz product at these lengths, an FFT beyond 96 tokens.)
  assert "cholesky" in primitives


def test_attention_baseline_has_softmax():
  assert _count_softmax(_forward_jaxpr("attention")) >= 3  # vision, text, fusion, ...


@pytest.mark.parametrize("mixer", ["sdict", "attention", "fnet"])
def test_caption_decoder_is_causal(mixer):
  model, batch = _model(mixer), _batch()
  params = _params(model, batch)
  prefix = jax.random.normal(jax.random.PRNGKey(2), (2, 17, 32))
  prefix_mask = jnp.ones((2, 17)).at[1, 12:].set(0)
  logits = lambda tokens: model.apply({"params": params}, tokens, jnp.arange(10),
                                      prefix, prefix_mask,
                                      method=model.caption_logits)
  base = logits(batch["caption_in"])
  for t in [0, 4, 9]:
    changed = logits(batch["caption_in"].at[:, t].set(1))
    np.testing.assert_allclose(changed[:, :t], base[:, :t], atol=1e-5)
    assert np.abs(changed[:, t:] - base[:, t:]).max() > 1e-4


@pytest.mark.parametrize("mixer", ["sdict", "attention"])
def test_streaming_decoder_equals_parallel(mixer):
  """Prefill + one token per call (recurrence / KV cache) == one parallel pass."""
  from sdict_jax import decoding
  model, batch = _model(mixer), _batch()
  params = _params(model, batch)
  decode_model = _model(mixer, decode=True)
  prefix = jax.random.normal(jax.random.PRNGKey(3), (2, 17, 32))
  prefix_mask = jnp.ones((2, 17)).at[0, 15:].set(0)
  tokens = batch["caption_in"]
  parallel = model.apply({"params": params}, tokens, jnp.arange(10), prefix,
                         prefix_mask, method=model.caption_logits)
  first, cache = decoding.prefill(decode_model, params, prefix, prefix_mask,
                                  int(tokens[0, 0]), max_len=10)
  # prefill feeds tokens[:, 0] (BOS) for both rows; use a common first token.
  tokens = tokens.at[:, 0].set(tokens[0, 0])
  parallel = model.apply({"params": params}, tokens, jnp.arange(10), prefix,
                         prefix_mask, method=model.caption_logits)
  streamed = [first]
  for t in range(1, 10):
    logits, cache = decoding.step(decode_model, params, cache, tokens[:, t],
                                  jnp.asarray(t))
    streamed.append(logits)
  np.testing.assert_allclose(jnp.stack(streamed, 1), parallel, atol=2e-4)


def test_vision_encoder_runs_at_two_resolutions_with_the_same_parameters():
  model = _model()
  params = _params(model, _batch(image_size=32))
  for size in [32, 48, 64]:
    images = jnp.ones((1, size, size, 3))
    tokens = model.apply({"params": params}, images, method=model.encode_image)
    assert tokens.shape == (1, (size // 8) ** 2, 32)
    assert jnp.all(jnp.isfinite(tokens))
  outputs = model.apply({"params": params}, _batch(image_size=64))
  assert jnp.all(jnp.isfinite(outputs["answer_logits"]))


def test_image_size_not_divisible_by_patch_is_a_clear_error():
  model = _model()
  params = _params(model, _batch())
  with pytest.raises(ValueError, match="not divisible by model.patch_size"):
    model.apply({"params": params}, jnp.ones((1, 30, 30, 3)),
                method=model.encode_image)


@pytest.mark.parametrize("pool_type,vqa_readout", [("tok", "pool"), ("gap", "pool"),
                                                   ("tok", "tokens")])
def test_padding_in_text_changes_no_answer(pool_type, vqa_readout):
  """Question padding is masked: garbage embeddings there change nothing."""
  model, batch = _model(pool_type=pool_type, vqa_readout=vqa_readout), _batch()
  params = _params(model, batch)
  answers = model.apply({"params": params}, batch)["answer_logits"]
  longer = dict(batch, question=jnp.pad(batch["question"], ((0, 0), (0, 4))),
                refexp=jnp.pad(batch["refexp"], ((0, 0), (0, 4))))
  np.testing.assert_allclose(model.apply({"params": params}, longer)["answer_logits"],
                             answers, atol=1e-4)


def test_gap_pool_is_the_mean_of_the_valid_fused_tokens():
  model, batch = _model(pool_type="gap"), _batch()
  params = _params(model, batch)

  def pooled_and_fused(m, b):
    fused, mask = m.fuse(m.encode_image(b["image"]), b["question"])
    return m.pool(fused, mask), fused, mask
  pooled, fused, mask = model.apply({"params": params}, batch, method=pooled_and_fused)
  valid = 1 + 16 + 3  # [CLS], the 4 × 4 patches, three question words
  np.testing.assert_array_equal(mask[:, :valid], 1)
  np.testing.assert_array_equal(mask[:, valid:], 0)
  np.testing.assert_allclose(pooled, fused[:, :valid].mean(1), rtol=1e-5, atol=1e-6)


def _answer_logits_of_fused(model, params, batch, permutation):
  """answer_logits with the fused image tokens put in `permutation`'s order."""
  def run(m, b):
    vision = m.encode_image(b["image"])
    fused, mask = m.fuse(vision, b["question"])
    image = 1 + np.asarray(permutation)
    order = np.concatenate([[0], image, np.arange(1 + len(image), fused.shape[1])])
    return m.answer_logits(fused[:, order], mask[:, order], vision.shape[1])
  return model.apply({"params": params}, batch, method=run)


@pytest.mark.parametrize("token_pooling", ["mean", "mean_max"])
def test_token_readout_is_tokenwise_and_reads_only_image_tokens_and_question(
    token_pooling):
  """vqa_readout='tokens' compares each image token with the question, then
  pools: the order of the image tokens does not matter, their content does."""
  model = _model(vqa_readout="tokens", token_pooling=token_pooling)
  batch = _batch()
  params = _params(model, batch)
  # Non-zero FiLM, as after training (it starts at the identity).
  film = params["token_readout"]["film"]
  film["kernel"] = jax.random.normal(jax.random.PRNGKey(3), film["kernel"].shape)
  identity = _answer_logits_of_fused(model, params, batch, np.arange(16))
  shuffled = _answer_logits_of_fused(model, params, batch,
                                     np.random.default_rng(0).permutation(16))
  np.testing.assert_allclose(shuffled, identity, rtol=1e-5, atol=1e-5)
  # The same model without the read-out answers otherwise: the read-out is used.
  plain = _model(vqa_readout="pool")
  plain_params = {k: v for k, v in params.items() if k != "token_readout"}
  pooled_only = _answer_logits_of_fused(plain, plain_params, batch, np.arange(16))
  assert float(jnp.max(jnp.abs(identity - pooled_only))) > 1e-3


def test_token_readout_without_the_image_token_count_is_a_clear_error():
  model, batch = _model(vqa_readout="tokens"), _batch()
  params = _params(model, batch)
  def run(m, b):
    return m.answer_logits(*m.fuse(m.encode_image(b["image"]), b["question"]))
  with pytest.raises(ValueError, match="num_image_tokens=vision.shape"):
    model.apply({"params": params}, batch, method=run)


def test_max_pooled_token_readout_sees_one_token_whatever_the_image_size():
  """token_pooling='mean_max': "is there a red square?" is true if any one token
  matches. A token's effect on the max half does not shrink with the number of
  tokens, its effect on the mean half does."""
  readout = model_lib.TokenReadout("mean_max")
  rng = np.random.default_rng(0)
  question = jnp.asarray(rng.normal(size=(1, 8)), jnp.float32)
  tokens = jnp.asarray(rng.normal(size=(1, 64, 8)), jnp.float32)
  params = readout.init(jax.random.PRNGKey(0), tokens, question)
  outlier = tokens.at[0, 0].set(50.0)  # one token that stands out

  def effect(n):
    change = (readout.apply(params, outlier[:, :n], question) -
              readout.apply(params, tokens[:, :n], question))
    return float(jnp.max(jnp.abs(change)))

  assert effect(64) > 0.5 * effect(4)  # mean alone: 1/16 of it
  with pytest.raises(ValueError, match="token_pooling 'sum'.*'mean' or 'mean_max'"):
    model_lib.TokenReadout("sum").init(jax.random.PRNGKey(0), tokens, question)


@pytest.mark.parametrize("token_pooling,out_width", [("mean", 1), ("mean_max", 2)])
def test_config_sets_the_token_pooling(token_pooling, out_width):
  """config.model.token_pooling reaches TokenReadout through from_config."""
  config = config_files.get_config(os.path.join(ROOT, "configs", "shapes.py"))
  config.model.token_pooling = token_pooling
  model = model_lib.from_config(config.model, vocab_size=40, num_answers=7,
                                image_size=64, max_caption_len=16)
  batch = model_lib.dummy_batch(1, 64, 8, 16, 7)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), batch)["params"]
  width = config.model.width
  assert shapes["token_readout"]["mlp_out"]["kernel"].shape == (width, out_width * width)


def test_unknown_pool_type_is_a_clear_error():
  model, batch = _model(pool_type="max"), _batch()
  with pytest.raises(ValueError, match="pool_type 'max'.*'tok' or 'gap'"):
    _params(model, batch)


@pytest.mark.parametrize("mixer,pool_type,vqa_readout", [
    ("sdict", "tok", "pool"), ("sdict", "gap", "pool"), ("attention", "tok", "pool"),
    ("sdict", "tok", "tokens")])
def test_several_questions_per_image_answer_like_one_at_a_time(mixer, pool_type,
                                                               vqa_readout):
  model = _model(mixer, pool_type=pool_type, vqa_readout=vqa_readout)
  batch = _batch(batch_size=2)
  params = _params(model, batch)
  questions = jnp.asarray([[[5, 6, 7, 0, 0, 0, 0, 0], [9, 0, 0, 0, 0, 0, 0, 0],
                            [4, 4, 8, 3, 0, 0, 0, 0]]] * 2)
  stacked = model.apply({"params": params}, dict(batch, question=questions))
  assert stacked["answer_logits"].shape == (2, 3, 7)
  for q in range(3):
    single = model.apply({"params": params}, dict(batch, question=questions[:, q]))
    # Equal up to float32 rounding (another batch size, another GEMM blocking).
    np.testing.assert_allclose(stacked["answer_logits"][:, q], single["answer_logits"],
                               rtol=1e-4, atol=1e-4)
    for key in ("box", "caption_logits"):  # the other tasks see the image once
      np.testing.assert_allclose(stacked[key], single[key], rtol=1e-4, atol=1e-4)


def test_baselines_match_sdict_parameter_count():
  from ml_collections import ConfigDict
  import os
  from sdict_jax import config_files
  config = config_files.get_config(
      os.path.join(os.path.dirname(__file__), "..", "configs", "shapes.py"))
  from sdict_jax import train
  from sdict_jax.data import sources
  bundle = sources.load(config.data, "train")
  counts = {}
  for mixer in ["sdict", "attention", "fnet"]:
    variant = ConfigDict(config.to_dict())
    variant.model.mixer = mixer
    counts[mixer] = model_lib.count_parameters(train.build_model(variant, bundle),
                                               config.data.image_size)
  for mixer in ["attention", "fnet"]:
    assert abs(counts[mixer] / counts["sdict"] - 1) <= 0.10, counts


def test_gradients_finite_for_an_all_padding_text():
  """A source without questions gives all-pad text: no inf from the aux loss."""
  from sdict_jax import atom_init, mixers
  mixer = mixers.SDictMixer(omega_init=atom_init.mel_frequencies(6))
  x, mask = jnp.ones((2, 5, 8)), jnp.zeros((2, 5))
  params = mixer.init(jax.random.PRNGKey(0), x, mask)

  def loss(params):
    y, aux = mixer.apply(params, x, mask, train=True, mutable=["aux"])
    return jnp.sum(y) + sum(jnp.sum(v) for v in jax.tree.leaves(aux))

  grads = jax.grad(loss)(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_box_patch_mask_takes_the_patches_whose_centres_lie_in_the_box():
  boxes = jnp.asarray([[0.0, 0.0, 0.5, 0.5],      # the top-left quarter
                       [0.1, 0.6, 0.3, 0.9],      # one row, two columns
                       [0.40, 0.40, 0.42, 0.42],  # holds no patch centre
                       [0.0, 0.0, 0.0, 0.0]])     # has_box = 0 examples carry this
  mask = np.asarray(model_lib.box_patch_mask(boxes, (8, 8))).reshape(4, 8, 8)
  expected = np.zeros((4, 8, 8), bool)
  expected[0, :4, :4] = True
  expected[1, 1, 5:7] = True
  expected[2, 3, 3] = True  # the patch holding the box's centre
  expected[3, 0, 0] = True
  np.testing.assert_array_equal(mask, expected)


def test_region_words_read_only_the_vision_tokens_in_the_box():
  """model.region_words: the head names the boxed object from the tokens inside
  its box, and nothing else: tokens outside it change nothing."""
  model, batch = _model(region_words=True), _batch()
  params = _params(model, batch)
  vision = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 32))
  boxes = jnp.asarray([[0.0, 0.0, 0.5, 0.5]] * 2)  # patches (0..1, 0..1) of 4 × 4
  inside = np.zeros((4, 4), bool)
  inside[:2, :2] = True
  outside = jnp.asarray(~inside.reshape(-1))[None, :, None]
  logits = lambda v: model.apply({"params": params}, v, boxes, (4, 4),
                                 method=model_lib.SDictVLM.region_word_logits)
  changed = vision + 5.0 * outside * jax.random.normal(jax.random.PRNGKey(1),
                                                        vision.shape)
  np.testing.assert_allclose(logits(changed), logits(vision), rtol=1e-5, atol=1e-5)
  assert float(jnp.max(jnp.abs(logits(vision + 5.0 * ~outside) - logits(vision)))) > 1e-2
  outputs = model.apply({"params": params}, batch)
  assert outputs["region_word_logits"].shape == (2, 40)
  assert "region_word_logits" not in _model().apply(
      {"params": _params(_model(), batch)}, batch)


def test_region_word_loss_is_a_bag_of_words_cross_entropy():
  from sdict_jax import losses  # pylint: disable=g-import-not-at-top
  refexp = jnp.asarray([[3, 5, 5, 0], [0, 0, 0, 0], [4, 0, 0, 0]])
  uniform = losses.region_word_loss(jnp.zeros((3, 10)), refexp, jnp.ones(3))
  np.testing.assert_allclose(uniform, np.log(10), rtol=1e-6)  # empty ones skipped
  # Logits that put the bag's proportions on its words reach its entropy.
  bag = np.log(np.asarray([1e-9] * 3 + [1 / 3] + [1e-9] + [2 / 3] + [1e-9] * 4))
  best = losses.region_word_loss(jnp.asarray([bag]), refexp[:1], jnp.ones(1))
  entropy = -(1 / 3 * np.log(1 / 3) + 2 / 3 * np.log(2 / 3))
  np.testing.assert_allclose(best, entropy, rtol=1e-4)
  # Examples without a box do not count.
  logits = jnp.zeros((3, 10)).at[2, 4].set(10.0)
  np.testing.assert_allclose(
      losses.region_word_loss(logits, refexp, jnp.asarray([1.0, 1.0, 0.0])),
      np.log(10), rtol=1e-6)


def test_region_words_over_every_box_equal_one_box_at_a_time():
  """With region_boxes [B, R, 4] (data.regions_per_image) the head names each box
  as it names a single one, the loss is the mean over the boxes that exist, and
  total_loss reads the region fields instead of the grounded box."""
  from sdict_jax import losses  # pylint: disable=g-import-not-at-top
  model = _model(region_words=True)
  batch = model_lib.dummy_batch(2, 32, 8, 10, 7, regions_per_image=3) | _batch()
  params = _params(model, batch)
  boxes = jnp.asarray(
      [[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.1, 0.6, 0.3, 0.9]],
       [[0.2, 0.2, 0.4, 0.9], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]])
  np.testing.assert_array_equal(
      model_lib.box_patch_mask(boxes, (4, 4)),
      jnp.stack([model_lib.box_patch_mask(boxes[:, r], (4, 4)) for r in range(3)], 1))
  vision = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 32))
  logits = lambda b: model.apply({"params": params}, vision, b, (4, 4),
                                 method=model_lib.SDictVLM.region_word_logits)
  every = logits(boxes)
  assert every.shape == (2, 3, 40)
  pooled = lambda b: model.apply(  # the head on masked_mean, box by box
      {"params": params}, vision, b, method=lambda m, v, b: m.region_head(
          model_lib.masked_mean(v, model_lib.box_patch_mask(b, (4, 4)))))
  for r in range(3):
    np.testing.assert_allclose(every[:, r], logits(boxes[:, r]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(every[:, r], pooled(boxes[:, r]), rtol=1e-5, atol=1e-5)
  refexps = jnp.asarray(np.random.default_rng(0).integers(4, 40, (2, 3, 8)), jnp.int32)
  has = jnp.asarray([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
  one_at_a_time = [losses.region_word_loss(every[b, r][None], refexps[b, r][None],
                                           jnp.ones(1))
                   for b, r in zip(*np.nonzero(np.asarray(has)))]
  np.testing.assert_allclose(losses.region_word_loss(every, refexps, has),
                             np.mean(one_at_a_time), rtol=1e-5)
  batch = batch | {"region_boxes": boxes, "region_texts": refexps, "has_region": has}
  outputs = model.apply({"params": params}, batch)
  assert outputs["region_word_logits"].shape == (2, 3, 40)
  _, parts = losses.total_loss(outputs, batch, {}, 0, _loss_config())
  np.testing.assert_allclose(
      parts["region_word_loss"],
      losses.region_word_loss(outputs["region_word_logits"], refexps, has), rtol=1e-6)


def test_region_words_per_token_average_each_boxed_tokens_cross_entropy():
  """model.region_pooling="tokens": the head names each box from every vision
  token inside it, and the box's loss is the mean of those tokens' own
  cross-entropies (tokens outside the box change nothing); one token per box is
  the box read-out on that token; total_loss reads it (and the model has no
  softmax: the log-softmax is the loss's)."""
  from sdict_jax import losses  # pylint: disable=g-import-not-at-top
  model = _model(region_words=True, region_pooling="tokens")
  batch = model_lib.dummy_batch(2, 32, 8, 10, 7, regions_per_image=2) | _batch()
  params = _params(model, batch)
  boxes = jnp.asarray([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]],
                       [[0.1, 0.6, 0.3, 0.9], [0.0, 0.0, 0.0, 0.0]]])
  texts = jnp.asarray(np.random.default_rng(0).integers(4, 40, (2, 2, 8)), jnp.int32)
  has = jnp.asarray([[1.0, 1.0], [1.0, 0.0]])
  batch = batch | {"region_boxes": boxes, "region_texts": texts, "has_region": has}
  outputs = model.apply({"params": params}, batch)
  assert "region_word_logits" not in outputs
  logits, masks = outputs["region_token_logits"], outputs["region_masks"]
  assert logits.shape == (2, 16, 40) and masks.shape == (2, 2, 16)
  np.testing.assert_array_equal(masks, model_lib.box_patch_mask(boxes, (4, 4)))
  per_token = lambda b, r, n: losses.region_word_loss(logits[b, n][None],
                                                      texts[b, r][None], jnp.ones(1))
  expected = [np.mean([per_token(b, r, n) for n in np.nonzero(np.asarray(masks[b, r]))[0]])
              for b, r in zip(*np.nonzero(np.asarray(has)))]
  loss = losses.region_token_word_loss(logits, masks, texts, has)
  np.testing.assert_allclose(loss, np.mean(expected), rtol=1e-5)
  outside = 1.0 - jnp.max(masks * has[..., None], 1)[..., None]  # [B, N, 1]
  noise = 5.0 * jax.random.normal(jax.random.PRNGKey(1), logits.shape)
  np.testing.assert_allclose(
      losses.region_token_word_loss(logits + outside * noise, masks, texts, has), loss,
      rtol=1e-6)
  assert abs(float(losses.region_token_word_loss(logits + (1 - outside) * noise, masks,
                                                 texts, has) - loss)) > 1e-2
  one = jax.nn.one_hot(jnp.asarray([[3, 7], [9, 0]]), 16)  # one token per box
  np.testing.assert_allclose(
      losses.region_token_word_loss(logits, one, texts, has),
      losses.region_word_loss(jnp.take_along_axis(
          logits, jnp.asarray([[3, 7], [9, 0]])[..., None], 1), texts, has), rtol=1e-5)
  _, parts = losses.total_loss(outputs, batch, {}, 0, _loss_config())
  np.testing.assert_allclose(parts["region_word_loss"], loss, rtol=1e-6)
  jaxpr = jax.make_jaxpr(lambda p, b: model.apply({"params": p}, b))(params, batch).jaxpr
  assert _count_softmax(jaxpr) == 0


def test_region_words_per_token_with_one_grounded_box():
  """Without region_boxes the per-token region words name the grounded box
  (batch["box"]) by the referring expression: one mask per image, and the loss
  is the mean of the boxed tokens' cross-entropies, weighted by has_box."""
  from sdict_jax import losses  # pylint: disable=g-import-not-at-top
  model = _model(region_words=True, region_pooling="tokens")
  batch = _batch() | {"box": jnp.asarray([[0.0, 0.0, 0.5, 0.5], [0.1, 0.6, 0.3, 0.9]]),
                      "has_box": jnp.asarray([1.0, 0.0])}
  assert "region_boxes" not in batch
  outputs = model.apply({"params": _params(model, batch)}, batch)
  logits, masks = outputs["region_token_logits"], outputs["region_masks"]
  assert masks.shape == (2, 16)
  np.testing.assert_array_equal(masks, model_lib.box_patch_mask(batch["box"], (4, 4)))
  tokens = np.nonzero(np.asarray(masks[0]))[0]
  expected = np.mean([losses.region_word_loss(logits[0, n][None], batch["refexp"][:1],
                                              jnp.ones(1)) for n in tokens])
  _, parts = losses.total_loss(outputs, batch, {}, 0, _loss_config())
  np.testing.assert_allclose(parts["region_word_loss"], expected, rtol=1e-5)


def _loss_config():
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = config_files.get_config(os.path.join(ROOT, "configs", "shapes.py"))
  return ml_collections.ConfigDict(config.loss.to_dict())


def test_config_turns_region_words_on_and_the_loss_counts_them():
  """config.model.region_words reaches the model through from_config, and
  losses.total_loss adds loss.region_words × the region loss."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from sdict_jax import losses  # pylint: disable=g-import-not-at-top
  config = config_files.get_config(os.path.join(ROOT, "configs", "shapes.py"))
  assert config.model.region_words and config.loss.region_words == 3.0  # the default
  config.model.update(width=32, vision_atoms=8, num_atoms=6)
  model = model_lib.from_config(config.model, vocab_size=40, num_answers=7,
                                image_size=32, max_caption_len=16)
  batch = _batch()
  params = _params(model, batch)
  assert params["region_head"]["kernel"].shape == (32, 40)
  outputs = model.apply({"params": params}, batch)
  def total(weight):
    loss_config = ml_collections.ConfigDict(config.loss.to_dict())
    loss_config.region_words = weight
    return losses.total_loss(outputs, batch | {"has_box": jnp.ones(2)}, {}, 0,
                             loss_config)
  loss, parts = total(1.0)
  loss_off, _ = total(0.0)
  np.testing.assert_allclose(loss - loss_off, parts["region_word_loss"], rtol=1e-5)
  assert float(parts["region_word_loss"]) > 0
