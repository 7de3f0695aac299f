"""Task and auxiliary losses (SPEC §2), as pure functions of model outputs.

Each task loss averages over the examples that carry that task (`has_*` weights),
so a batch from a source without boxes, say, contributes nothing to the box loss.
"""

import jax
import jax.numpy as jnp
import optax


def _weighted_mean(values, weights):
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def caption_loss(logits, targets, has_caption, label_smoothing=0.1):
  """Token cross-entropy with label smoothing over non-pad targets (id 0 = pad)."""
  vocab = logits.shape[-1]
  labels = optax.smooth_labels(jax.nn.one_hot(targets, vocab), label_smoothing)
  per_token = optax.softmax_cross_entropy(logits.astype(jnp.float32), labels)
  weights = (targets > 0).astype(jnp.float32) * has_caption[:, None]
  return _weighted_mean(per_token, weights)


def vqa_loss(logits, answer_scores, has_vqa):
  """Soft-score binary cross-entropy over the answer vocabulary (VQAv2).

  Summed over answers and averaged over questions, the usual VQAv2 scaling
  (a mean over thousands of answers would make the gradient vanish).
  """
  if answer_scores.shape[-1] == 0:  # a source without VQA (captions only)
    return jnp.zeros((), jnp.float32)
  per_answer = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32),
                                                  answer_scores)
  return _weighted_mean(jnp.sum(per_answer, -1), has_vqa)


def _bag_of_words(texts, vocab):
  """Word ids [..., L] (0 = pad) → (each word's share [..., V], non-empty [...])."""
  counts = jnp.sum(jax.nn.one_hot(texts, vocab) * (texts > 0)[..., None], axis=-2)
  total = jnp.sum(counts, -1, keepdims=True)
  return counts / jnp.maximum(total, 1.0), total[..., 0] > 0


def region_word_loss(logits, texts, weights):
  """Cross-entropy of each region's word logits [..., V] against its text's word
  ids [..., L] as a bag of words (each of its tokens equally likely; 0 = pad); the
  mean over the regions with weight [...] 1 (has_box, has_region) and a non-empty
  text."""
  targets, named = _bag_of_words(texts, logits.shape[-1])
  per_box = optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)
  return _weighted_mean(per_box, weights * named)


def region_token_word_loss(token_logits, masks, texts, weights):
  """region_word_loss with every token in a box naming it: word logits of each
  vision token [B, N, V], box masks [B, (R,) N], texts [B, (R,) L], weights
  [B, (R,)]. A box's loss is the mean of its tokens' cross-entropies."""
  targets, named = _bag_of_words(texts, token_logits.shape[-1])
  log_probs = jax.nn.log_softmax(token_logits.astype(jnp.float32))
  masks = masks.reshape(masks.shape[0], -1, masks.shape[-1])  # [B, R, N]
  mean_log_probs = jnp.einsum("brn,bnv->brv", masks, log_probs) / jnp.maximum(
      jnp.sum(masks, -1, keepdims=True), 1.0)
  per_box = -jnp.sum(targets.reshape(mean_log_probs.shape) * mean_log_probs, -1)
  return _weighted_mean(per_box, (weights * named).reshape(per_box.shape))


def objectness_loss(logits, masks, has_region):
  """Sigmoid cross-entropy of each image token's "on an object" logit [B, Q, N]
  (Q questions' fused copies of one image) against "inside any of the image's
  boxes": masks [B, R, N], has_region [B, R]. Images without boxes add nothing.
  Only a source that boxes every object (shapes: all of up to 4) makes this
  objectness: an object without a box counts as background."""
  has_region = has_region.astype(jnp.float32)
  target = jnp.max(masks * has_region[..., None], axis=1)  # [B, N]
  per_token = optax.sigmoid_binary_cross_entropy(
      logits.astype(jnp.float32), jnp.broadcast_to(target[:, None], logits.shape))
  return _weighted_mean(jnp.mean(per_token, -1),
                        jnp.broadcast_to(jnp.max(has_region, -1)[:, None],
                                         logits.shape[:2]))


def box_iou_and_giou(pred, target):
  """IoU and generalised IoU of (ymin, xmin, ymax, xmax) boxes: ([B], [B])."""
  area = lambda b: jnp.maximum(b[..., 2] - b[..., 0], 0) * jnp.maximum(
      b[..., 3] - b[..., 1], 0)
  top_left = jnp.maximum(pred[..., :2], target[..., :2])
  bottom_right = jnp.minimum(pred[..., 2:], target[..., 2:])
  intersection = jnp.prod(jnp.maximum(bottom_right - top_left, 0), -1)
  union = area(pred) + area(target) - intersection
  iou = intersection / jnp.maximum(union, 1e-7)
  hull = jnp.prod(jnp.maximum(pred[..., 2:], target[..., 2:]) -
                  jnp.minimum(pred[..., :2], target[..., :2]), -1)
  giou = iou - (hull - union) / jnp.maximum(hull, 1e-7)
  return iou, giou


def box_loss(pred, target, has_box):
  """L1 + (1 − GIoU), the DETR-style regression loss for grounding."""
  _, giou = box_iou_and_giou(pred, target)
  per_box = jnp.sum(jnp.abs(pred - target), -1) + (1 - giou)
  return _weighted_mean(per_box, has_box)


def reconstruction_weight(step, start, floor, anneal_steps):
  """β: linear from β₀ to β_min over anneal_steps, then β_min (> 0, never off)."""
  progress = jnp.clip(step / max(anneal_steps, 1), 0.0, 1.0)
  return start + (floor - start) * progress


def sparsity_weight(step, weight, until_step=None):
  """λ₁ before `until_step`, 0 from it on (fine-tuning switches the sparsity
  pressure off after its first epoch, as the paper does); 0 or None: always λ₁."""
  if not until_step:
    return weight
  return jnp.where(step < until_step, weight, 0.0)


def auxiliary_losses(aux_collection) -> dict:
  """Mean over SDict layers of each auxiliary loss sown into the 'aux' collection."""
  sums, counts = {}, {}
  for path, value in jax.tree_util.tree_flatten_with_path(aux_collection)[0]:
    name = next(str(p.key) for p in reversed(path)
                if isinstance(p, jax.tree_util.DictKey))
    sums[name] = sums.get(name, 0.0) + value
    counts[name] = counts.get(name, 0) + 1
  return {name: sums[name] / counts[name] for name in sums}


def total_loss(outputs, batch, aux_collection, step, loss_config):
  """The weighted training loss and a dict of its named parts."""
  parts = {
      "caption_loss": caption_loss(outputs["caption_logits"], batch["caption_out"],
                                   batch["has_caption"], loss_config.label_smoothing),
      "vqa_loss": vqa_loss(outputs["answer_logits"], batch["answer_scores"],
                           batch["has_vqa"]),
      "box_loss": box_loss(outputs["box"], batch["box"], batch["has_box"]),
  }
  loss = (loss_config.caption * parts["caption_loss"] +
          loss_config.vqa * parts["vqa_loss"] + loss_config.box * parts["box_loss"])
  if "region_word_logits" in outputs or "region_token_logits" in outputs:
    # Every box of the image, or the one grounded; keyed as in SDictVLM.__call__:
    # region_boxes chose which boxes were named.
    words, has = ((batch["region_texts"], batch["has_region"])
                  if "region_boxes" in batch else (batch["refexp"], batch["has_box"]))
    parts["region_word_loss"] = (
        region_word_loss(outputs["region_word_logits"], words, has)
        if "region_word_logits" in outputs else
        region_token_word_loss(outputs["region_token_logits"], outputs["region_masks"],
                               words, has))
    loss = loss + loss_config.region_words * parts["region_word_loss"]
  if "objectness_logits" in outputs:
    parts["objectness_loss"] = objectness_loss(
        outputs["objectness_logits"], outputs["object_masks"], batch["has_region"])
    loss = loss + loss_config.objectness * parts["objectness_loss"]
  aux = auxiliary_losses(aux_collection)
  if "reconstruction" in aux:
    beta = reconstruction_weight(step, loss_config.recon_start,
                                 loss_config.recon_floor,
                                 loss_config.recon_anneal_steps)
    parts["reconstruction_loss"] = aux["reconstruction"]
    loss = loss + beta * aux["reconstruction"]
  if "sparsity" in aux:
    parts["sparsity_loss"] = aux["sparsity"]
    lambda1 = sparsity_weight(step, loss_config.sparsity,
                              loss_config.get("sparsity_until_step"))
    loss = loss + lambda1 * aux["sparsity"]
  parts["loss"] = loss
  return loss, parts
