"""SDict-VLM (SPEC §3): vision encoder, text encoder, fusion, heads, caption decoder.

  image ─ patches (reshape, no convolution) ─ L_v vision blocks ─┐
  text ── embedding ─ L_t text blocks ───────────────────────────┤
             [CLS] ⊕ vision ⊕ text ─ L_f fusion blocks ─ pool ─ VQA / box heads
                                    └─ prefix of the caption decoder (L_d causal blocks)
  vqa_readout="tokens": the VQA head also reads each fused image token compared
  with the question, then averaged (TokenReadout).
  box_readout="select", relation_readout: the box's centre, and the positions of
  the two objects a question names, where ObjectSelector finds the text's object
  among the fused image tokens.
  object_readout, relative_readout: what lies where the question's object is
  found, or on the side of it the relation word names, read into the answers.

Every block is pre-LayerNorm → mixer → residual → LayerNorm → GELU MLP → residual;
the mixer is chosen by name, so the attention and FNet baselines differ from
SDict-VLM in the mixer alone.
"""

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sdict_jax import atom_init
from sdict_jax import mixers
from sdict_jax import sharding

Array = jax.Array
_embed_init = nn.initializers.normal(0.02)
# Parameter paths of the encoders and the fusion: the trunk that the VQA and box
# heads and the caption decoder read (a regex for optim.lr_mults).
TRUNK_PARAMS = (r"(vision|text|fusion)_\d+/.*|(vision|text|fusion)_norm/.*"
                r"|question_(gate|film)_\d+/.*|patch_projection/.*"
                r"|vision_position|vision_omega|text_position|segment|cls")
# The vision encoder's alone (a part of TRUNK_PARAMS): listed before it in
# optim.lr_mults, it gives the encoder its own step.
VISION_PARAMS = (r"vision_\d+/.*|vision_norm/.*|patch_projection/.*|vision_position"
                 r"|vision_omega")


# The relative read's side, σ(s · u(q) · (p - c)): with s = 10 a learned
# direction u of norm 1 already weighs a patch 0.25 past the named object's
# centre at 0.92, so the step need not grow u first.
_SIDE_SHARPNESS = 10.0


class Block(nn.Module):
  """Pre-LN residual block: x + mixer(LN x), then x + MLP(LN x)."""
  mixer: Any  # constructor of a mixer module
  mlp_ratio: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None, *, train=False, **mixer_kwargs):
    d = x.shape[-1]
    x = sharding.constrain_batch(x)  # the residual stream: split by batch only
    h = nn.LayerNorm(dtype=self.dtype, name="norm_mix")(x)
    x = x + self.mixer(name="mixer")(h, mask, train=train, **mixer_kwargs)
    h = nn.LayerNorm(dtype=self.dtype, name="norm_mlp")(x)
    h = nn.Dense(self.mlp_ratio * d, dtype=self.dtype, name="mlp_in")(h)
    h = nn.Dense(d, dtype=self.dtype, name="mlp_out")(nn.gelu(h))
    return sharding.constrain_batch(x + h)


class QuestionGate(nn.Module):
  """A_k(q) = A_k ⊙ 2σ(a_k(q) + b_c(q)): per atom k and channel c, from q [B, d].

  The paper's context gate (§8.3), factorised over atoms and channels so that it
  costs (K + d)·d parameters, not K·d². Zero-initialised: 1 at the start, where
  the model is the paper's plain concatenation.
  """
  num_atoms: int

  @nn.compact
  def __call__(self, question):
    dense = functools.partial(nn.Dense, kernel_init=nn.initializers.zeros,
                              dtype=jnp.float32)
    per_atom = dense(self.num_atoms, name="atoms")(question)  # [B, K]
    per_channel = dense(question.shape[-1], name="channels")(question)  # [B, d]
    return 2 * jax.nn.sigmoid(per_atom[:, :, None] + per_channel[:, None, :])


class QuestionFiLM(nn.Module):
  """x ⊙ (1 + γ(q)) + β(q) on every token: the question, as one vector, at each image
  token before a fusion block (FiLM, Perez et al. 2018). Zero-initialised: the
  identity at the start.

  Why: a fixed filter carries the question's words to an image token only as a
  position-dependent blend of the text positions; to ask "is this token red?" each
  token needs the asked colour itself, which the block's MLP can then compare with
  its own. Not a token mixer (no token reads another image token), so the model's
  only token mixing stays the mixer's.
  """

  @nn.compact
  def __call__(self, x, question):
    scale_shift = nn.Dense(2 * x.shape[-1], kernel_init=nn.initializers.zeros,
                           dtype=x.dtype, name="scale_shift")(question)
    scale, shift = jnp.split(scale_shift[:, None, :], 2, axis=-1)
    return x * (1 + scale) + shift


class TokenReadout(nn.Module):
  """mean_i MLP(FiLM(x_i; q)) over the image tokens x_i: what the VQA head reads
  beside the pooled token when model.vqa_readout="tokens".

  Why: "is there a red square?" is a conjunction per object, asked of every image
  token. A read-out that pools first (the [CLS] token, the mean) must find it in one
  vector that mixes every object; here each token is compared with the question
  (FiLM), a token-wise MLP decides "this token matches", and only then are the
  tokens averaged, so existence and counting are a sum of per-token decisions
  (README, "Seeing or reasoning"). Token-wise: no token reads another, so the
  model's only token mixing stays the mixer's. FiLM is zero-initialised.

  pooling="mean_max" max-pools half of the MLP's outputs: "is there a …" is
  true if any one token matches, and a max sees one token whatever the image's
  size, where a mean divides it by the token count. Its output layer is 2d wide
  (d² more parameters than "mean").
  """

  pooling: str = "mean"  # "mean" | "mean_max"

  @nn.compact
  def __call__(self, image_tokens, question):
    d = image_tokens.shape[-1]
    scale_shift = nn.Dense(2 * d, kernel_init=nn.initializers.zeros,
                           dtype=image_tokens.dtype, name="film")(question)
    scale, shift = jnp.split(scale_shift[:, None, :], 2, axis=-1)
    h = image_tokens * (1 + scale) + shift
    h = nn.gelu(nn.Dense(d, dtype=image_tokens.dtype, name="mlp_in")(h))
    if self.pooling == "mean":
      return jnp.mean(nn.Dense(d, dtype=image_tokens.dtype, name="mlp_out")(h), axis=1)
    if self.pooling == "mean_max":
      h = nn.Dense(2 * d, dtype=image_tokens.dtype, name="mlp_out")(h)
      return jnp.mean(h[..., :d], axis=1) + jnp.max(h[..., d:], axis=1)
    raise ValueError(f"Unknown model.token_pooling {self.pooling!r}; use 'mean' or "
                     "'mean_max'.")


class ObjectSelector(nn.Module):
  """Where the object a text names lies: query vectors [B, S, d] (each a weighted
  mean of a text's tokens) and image tokens [B, N, d] → centres [B, S, 2],
  features [B, S, d] and each token's weight [B, S, N] in [0, 1] (before the
  normalisation that made the centres; model.object_readout reads the fused
  tokens with them).

  Each image token is compared with the query (FiLM, a token-wise layer) and
  scored; the scores' sigmoids weigh the tokens' (y, x) into one centre, and
  their compared features into one vector. Why: "is the red circle left of the
  blue square?" compares the positions of two objects, each found by its words;
  no sum of per-token decisions answers it (README, "Two objects"). A read-out:
  nothing returns to the token sequence, so the model's only token mixing stays
  the mixer's; and no softmax: each weight is its own sigmoid, and the sum that
  normalises them is not over exponentials.
  """

  @nn.compact
  def __call__(self, image_tokens, queries, coordinates):
    d = image_tokens.shape[-1]
    scale_shift = nn.Dense(2 * d, kernel_init=nn.initializers.zeros,
                           dtype=image_tokens.dtype, name="film")(queries)
    scale, shift = jnp.split(scale_shift[:, :, None, :], 2, axis=-1)
    h = image_tokens[:, None] * (1 + scale) + shift  # [B, S, N, d]
    h = nn.gelu(nn.Dense(d, dtype=image_tokens.dtype, name="mlp_in")(h))
    scores = nn.Dense(1, dtype=jnp.float32, name="score")(h)[..., 0]
    weights = jax.nn.sigmoid(scores)  # [B, S, N]
    # + 0.01: a query that selects nothing reads the image's corner, finitely.
    mass = jnp.sum(weights, -1, keepdims=True) + 0.01
    centres = jnp.einsum("bsn,nc->bsc", weights, coordinates) / mass
    features = jnp.einsum("bsn,bsnd->bsd", weights, h,
                          preferred_element_type=jnp.float32) / mass
    return centres, features.astype(h.dtype), weights


def patch_centres(grid: tuple[int, int]) -> Array:
  """Each patch's (y, x) centre in [0, 1] (box coordinates), in patchify's
  row-major order: [gh·gw, 2]."""
  ys, xs = [(jnp.arange(n) + 0.5) / n for n in grid]
  return jnp.stack(jnp.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2)


def question_halves(text: Array, mask: Array) -> Array:
  """The means of a text's first and second half, [B, L, d], mask [B, L] (valid
  tokens first) → [B, 2, d], with smooth weights (1 ± cos(π(t + ½)/n))/2.

  "Is the red circle left of the blue square?" and "is the blue square left of
  the red circle?" have the same mean token and opposite answers: the roles of the
  two named objects are in the order of the words, and each half holds one.
  """
  mask = mask.astype(jnp.float32)
  count = jnp.maximum(jnp.sum(mask, -1, keepdims=True), 1.0)
  wave = jnp.cos(jnp.pi * (jnp.arange(text.shape[1]) + 0.5) / count)  # [B, L]
  weights = jnp.stack([1 + wave, 1 - wave], 1) * mask[:, None]  # [B, 2, L]
  weights /= jnp.maximum(jnp.sum(weights, -1, keepdims=True), 1e-6)
  return jnp.einsum("bhl,bld->bhd", weights, text.astype(jnp.float32)).astype(
      text.dtype)


def box_patch_mask(boxes: Array, grid: tuple[int, int]) -> Array:
  """(ymin, xmin, ymax, xmax) boxes [..., 4] in [0, 1] → [..., gh·gw] patch mask.

  A patch is in the box when its centre is, and the patch holding the box's
  centre always is, so a box smaller than a patch still covers one.
  """
  centre = lambda n: (jnp.arange(n) + 0.5) / n
  inside = lambda c, lo, hi: (c >= lo[..., None]) & (c <= hi[..., None])
  rows = inside(centre(grid[0]), boxes[..., 0], boxes[..., 2])
  cols = inside(centre(grid[1]), boxes[..., 1], boxes[..., 3])
  middle = lambda lo, hi, n: jnp.clip(((lo + hi) / 2 * n).astype(jnp.int32), 0, n - 1)
  rows |= jax.nn.one_hot(middle(boxes[..., 0], boxes[..., 2], grid[0]), grid[0]) > 0
  cols |= jax.nn.one_hot(middle(boxes[..., 1], boxes[..., 3], grid[1]), grid[1]) > 0
  return (rows[..., :, None] & cols[..., None, :]).reshape(*boxes.shape[:-1], -1)


def masked_mean(x: Array, mask: Array) -> Array:
  """x [B, N, d], mask [B, N] (1 = valid) → the mean of the valid tokens, [B, d]."""
  mask = mask.astype(x.dtype)[..., None]
  return jnp.sum(x * mask, 1) / jnp.maximum(jnp.sum(mask, 1), 1.0)


def patchify(images: Array, patch_size: int) -> tuple[Array, tuple[int, int]]:
  """[B, H, W, C] → [B, (H/p)·(W/p), p·p·C] by reshape (row-major patch grid)."""
  b, h, w, c = images.shape
  if h % patch_size or w % patch_size:
    raise ValueError(f"Image size {h}x{w} is not divisible by model.patch_size="
                     f"{patch_size}; resize the images or change the patch size.")
  grid = (h // patch_size, w // patch_size)
  x = images.reshape(b, grid[0], patch_size, grid[1], patch_size, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, grid[0] * grid[1], patch_size * patch_size * c), grid


class SDictVLM(nn.Module):
  """The vision–language model. `mixer` ∈ {'sdict', 'attention', 'fnet'}."""
  vocab_size: int
  num_answers: int
  mixer: str = "sdict"
  width: int = 128
  mlp_ratio: int = 2
  num_atoms: int = 32
  vision_atoms: Optional[int] = None  # K of the vision layers; None: num_atoms
  patch_size: int = 8
  pretrain_grid: tuple[int, int] = (8, 8)
  vision_layers: int = 2
  text_layers: int = 1
  fusion_layers: int = 2
  decoder_layers: int = 2
  num_heads: int = 4
  ridge: float = 1e-3
  sdict_method: str = "dense"
  tie_vision_atoms: bool = False
  vision_position: bool = True
  # SDict fusion: each example's filters gated by its question (paper §8.3).
  question_gate: bool = False
  # Every mixer: the question broadcast to each token before each fusion block.
  question_film: bool = False
  # What the VQA and box heads read: "tok", the [CLS] token (the paper), or
  # "gap", the mean of every valid fused token (big_vision's pool_type names).
  pool_type: str = "tok"
  # VQA only: "pool", the head reads pool(); "tokens", pool() plus TokenReadout's
  # per-token comparison of the image tokens with the question.
  vqa_readout: str = "pool"
  token_pooling: str = "mean"  # TokenReadout's: "mean" | "mean_max"
  # The box head: "pool" reads pool() (the paper); "select", ObjectSelector's
  # centre for the referring expression, the box's size from pool() and the
  # selected features.
  box_readout: str = "pool"
  # VQA: the positions of the objects named by the question's two halves
  # (ObjectSelector, shared with the box head) beside what the head reads.
  relation_readout: bool = False
  # VQA: the fused image tokens where the selector finds the object the
  # question's second half names ("what shape is the red object"), read into the
  # answer logits by a zero-initialised linear layer.
  object_readout: bool = False
  # With object_readout: also the object on the side of the named one that the
  # question's relation word points to ("what shape is left of the red
  # object"), found among the tokens an objectness head (trained on every box
  # of the image) marks, and mixed with the named object's read by a gate of
  # the question.
  relative_readout: bool = False
  # A head that names the words of the referring expression from the vision
  # tokens inside its box (region_word_logits): a per-object signal for the
  # vision encoder.
  region_words: bool = False
  # Where the region words are read: "mean", from the mean of a box's vision
  # tokens (one vector per object); "tokens", from each token in the box.
  region_pooling: str = "mean"
  max_text_len: int = 64
  max_caption_len: int = 64
  recon_noise: float = 0.1
  dtype: Any = jnp.float32
  decode: bool = False

  def setup(self):
    d, k = self.width, self.num_atoms
    self.token_embedding = nn.Embed(self.vocab_size, d, embedding_init=_embed_init,
                                    dtype=self.dtype)
    self.patch_projection = nn.Dense(d, dtype=self.dtype)
    if self.vision_position:
      self.vision_position_code = self.param("vision_position", _embed_init,
                                             (*self.pretrain_grid, d))
    self.text_position = self.param("text_position", _embed_init,
                                    (self.max_text_len, d))
    self.caption_position = self.param("caption_position", _embed_init,
                                       (self.max_caption_len, d))
    self.cls = self.param("cls", _embed_init, (1, 1, d))
    self.segment_embedding = self.param("segment", _embed_init, (3, d))

    def bidirectional(omega_init):
      return mixers.bidirectional(self.mixer, omega_init=omega_init, ridge=self.ridge,
                                  method=self.sdict_method,
                                  recon_noise=self.recon_noise,
                                  num_heads=self.num_heads)

    block = functools.partial(Block, mlp_ratio=self.mlp_ratio, dtype=self.dtype)
    vision_omega = atom_init.radial_grid_frequencies(self.num_vision_atoms,
                                                     self.pretrain_grid)
    self.shared_vision_omega = (
        self.param("vision_omega", lambda *_: jnp.asarray(vision_omega))
        if self.tie_vision_atoms and self.mixer == "sdict" else None)
    self.vision_blocks = [block(bidirectional(vision_omega), name=f"vision_{i}")
                          for i in range(self.vision_layers)]
    text_omega = atom_init.mel_frequencies(k)
    self.text_blocks = [block(bidirectional(text_omega), name=f"text_{i}")
                        for i in range(self.text_layers)]
    # Text atoms ∪ the K lowest vision frequencies. The vision layers may have
    # more (`vision_atoms`: local filters, cheap on the short patch sequence);
    # the longer fused sequence, which every question and caption pays for, K.
    fusion_omega = atom_init.fusion_frequencies(k, k, self.pretrain_grid)
    self.fusion_blocks = [block(bidirectional(fusion_omega), name=f"fusion_{i}")
                          for i in range(self.fusion_layers)]
    if self.question_gate and self.mixer == "sdict":
      self.question_gates = [QuestionGate(len(fusion_omega), name=f"question_gate_{i}")
                             for i in range(self.fusion_layers)]
    if self.question_film:
      self.question_films = [QuestionFiLM(name=f"question_film_{i}")
                             for i in range(self.fusion_layers)]
    causal = mixers.causal(self.mixer, num_atoms=k, num_heads=self.num_heads,
                           decode=self.decode)
    self.decoder_blocks = [block(causal, name=f"decoder_{i}")
                           for i in range(self.decoder_layers)]
    norm = functools.partial(nn.LayerNorm, dtype=self.dtype)
    self.vision_norm, self.text_norm, self.fusion_norm, self.decoder_norm = (
        norm(), norm(), norm(), norm())
    if self.vqa_readout == "tokens":
      self.token_readout = TokenReadout(self.token_pooling)
    elif self.vqa_readout != "pool":
      raise ValueError(f"Unknown model.vqa_readout {self.vqa_readout!r}; use 'pool' "
                       "or 'tokens'.")
    self.vqa_head = [nn.Dense(d, dtype=self.dtype),
                     nn.Dense(self.num_answers, dtype=jnp.float32)]
    self.box_head = [nn.Dense(d, dtype=self.dtype), nn.Dense(4, dtype=jnp.float32)]
    if self.box_readout not in ("pool", "select"):
      raise ValueError(f"Unknown model.box_readout {self.box_readout!r}; use 'pool' "
                       "or 'select'.")
    if self.box_readout == "select" or self.relation_readout or self.object_readout:
      self.object_selector = ObjectSelector()
    if self.relation_readout:
      self.relation_head = [nn.Dense(d, dtype=self.dtype), nn.Dense(d, dtype=self.dtype)]
    if self.region_words:
      self.region_head = nn.Dense(self.vocab_size, dtype=jnp.float32)
    if self.object_readout:
      # Zero: the read-out starts as the model without it, and grows only as far
      # as the answers want it (README, "What the question names, read where it
      # is found").
      self.object_head = nn.Dense(self.num_answers, dtype=jnp.float32,
                                  kernel_init=nn.initializers.zeros)
    if self.relative_readout:
      if not self.object_readout:
        raise ValueError("model.relative_readout reads through object_readout's "
                         "head; set model.object_readout=True.")
      self.objectness_head = nn.Dense(1, dtype=jnp.float32)
      # Zero: at init every side is half-taken and the gate half-open.
      zeros = nn.initializers.zeros
      self.relation_direction = nn.Dense(2, dtype=jnp.float32, kernel_init=zeros)
      self.relative_gate = nn.Dense(1, dtype=jnp.float32, kernel_init=zeros)
    if self.region_pooling not in ("mean", "tokens"):
      raise ValueError(f"Unknown model.region_pooling {self.region_pooling!r}; use "
                       "'mean' or 'tokens'.")

  @property
  def num_vision_atoms(self) -> int:
    return self.num_atoms if self.vision_atoms is None else self.vision_atoms

  # -- encoders ---------------------------------------------------------------

  def encode_image(self, images: Array, train: bool = False) -> Array:
    """float [B, H, W, 3] in [0, 1] → vision tokens [B, (H/p)(W/p), d]."""
    patches, grid = patchify(images.astype(self.dtype) * 2 - 1, self.patch_size)
    x = self.patch_projection(patches)
    if self.vision_position:
      code = self.vision_position_code
      if grid != tuple(self.pretrain_grid):  # another resolution: resample the code
        code = jax.image.resize(code, (*grid, self.width), "bilinear")
      x = x + code.reshape(1, -1, self.width).astype(x.dtype)
    for block in self.vision_blocks:
      x = block(x, train=train, grid=grid, omega=self.shared_vision_omega)
    return self.vision_norm(x)

  def encode_text(self, tokens: Array, train: bool = False) -> tuple[Array, Array]:
    """int [B, L] (0 = pad) → (text tokens [B, L, d], mask [B, L])."""
    mask = (tokens > 0).astype(jnp.float32)
    self._check_length(tokens.shape[1], self.max_text_len, "text")
    x = self.token_embedding(tokens) + self.text_position[:tokens.shape[1]].astype(
        self.dtype)
    for block in self.text_blocks:
      x = block(x, mask, train=train)
    return self.text_norm(x), mask

  def fuse(self, vision: Array, tokens: Array, train: bool = False):
    """[CLS] ⊕ vision ⊕ text through the fusion blocks → (fused, mask)."""
    batch = vision.shape[0]
    cls = jnp.broadcast_to(self.cls.astype(self.dtype), (batch, 1, self.width))
    segments = self.segment_embedding.astype(self.dtype)
    parts = [cls + segments[0], vision + segments[1]]
    mask = jnp.ones((batch, 1 + vision.shape[1]))
    if tokens.shape[1]:
      text, text_mask = self.encode_text(tokens, train)
      parts.append(text + segments[2])
      mask = jnp.concatenate([mask, text_mask], 1)
    x = jnp.concatenate(parts, axis=1)
    # Without text every position is valid: the unmasked operator is the same
    # function, with one Gram factorisation shared by the whole batch.
    block_mask = mask if tokens.shape[1] else None
    gates = [{}] * len(self.fusion_blocks)
    question = None
    if tokens.shape[1]:
      # The question as one vector: the mean of its valid tokens.
      question = masked_mean(text, text_mask)
      if self.question_gate and self.mixer == "sdict":
        # It sets every fusion filter (paper §8.3).
        gates = [{"filter_gate": gate(question)} for gate in self.question_gates]
    for i, (block, gate) in enumerate(zip(self.fusion_blocks, gates)):
      if self.question_film and question is not None:
        x = self.question_films[i](x, question)
      x = block(x, block_mask, train=train, **gate)
    return self.fusion_norm(x), mask

  # -- heads ------------------------------------------------------------------

  def pool(self, fused: Array, mask: Array) -> Array:
    """fused [B, N, d], mask [B, N] (fuse's outputs) → what the heads read, [B, d].

    "gap" because a fixed filter reads the image into the [CLS] token unevenly:
    at initialisation, position 0 of the fused sequence keeps 0.91 of itself and
    weighs the patches from 0.15 (the top-left one) to about 0, some negative
    (README, "Reading the answer out").
    """
    if self.pool_type == "tok":
      return fused[:, 0]
    if self.pool_type == "gap":
      return masked_mean(fused, mask)
    raise ValueError(f"Unknown model.pool_type {self.pool_type!r}; use 'tok' or 'gap'.")

  def answer_logits(self, fused: Array, mask: Array,
                    num_image_tokens: Optional[int] = None) -> Array:
    """Answer logits [B, A] from fuse's outputs for image tokens and a question.

    num_image_tokens (vision.shape[1]) locates the image tokens in the fused
    sequence; the "tokens" read-out needs it.
    """
    features = self.pool(fused, mask)
    if self.vqa_readout == "tokens" or self.relation_readout or self.object_readout:
      image, text, text_mask = self._split_fused(
          fused, mask, num_image_tokens,
          "model.vqa_readout='tokens', model.relation_readout and "
          "model.object_readout need answer_logits")
      question = masked_mean(text, text_mask)
    if self.vqa_readout == "tokens":
      features = features + self.token_readout(image, question)
    if self.relation_readout or self.object_readout:
      centres, _, weights = self.object_selector(
          image, question_halves(text, text_mask),
          self._patch_centres(num_image_tokens))
    if self.relation_readout:
      first, second = centres[:, 0], centres[:, 1]
      hidden, out = self.relation_head
      features = features + out(nn.gelu(hidden(jnp.concatenate(
          [first, second, first - second, question], -1).astype(self.dtype))))
    hidden, out = self.vqa_head
    logits = out(nn.gelu(hidden(features)))
    if self.object_readout:
      # The question's second half names the object asked about ("... the red
      # object"). Its selector weights are held (stop-gradient): the box loss
      # teaches where objects are; the answers only read there. Added to the
      # logits, after vqa_head: in the features it reads, the same read cost
      # the relation yes/no questions (0.85 -> 0.55; README, "What the question
      # names, read where it is found").
      logits = logits + self.object_head(self.object_read(
          image, question, centres[:, 1], weights[:, 1]))
    return logits

  def object_read(self, image: Array, question: Array, centre: Array,
                   selected: Array) -> Array:
    """What object_head reads [B, d]: the image tokens [B, N, d] under the
    selector's weights [B, N] for the question's second half (centre [B, 2]),
    and with relative_readout, gated by the question, under the weights of the
    object on the side of it the question's relation word names.

    "What shape is left of the red object": the second half finds the red
    object, whose own shape is the wrong answer (more than half of the relation
    -> shape questions' errors before this read; README, "The object beside the
    named one"). The target is the object, other than the named one, on that
    side: objectness x side x (1 - selected). Where objects are is learned from
    the boxes (objectness_logits), the side from the answers.
    """
    image = image.astype(jnp.float32)
    selected = jax.lax.stop_gradient(selected)

    def read(weights):  # + 0.01: a read of nothing is finite (zero)
      return jnp.einsum("bn,bnd->bd", weights, image) / (
          jnp.sum(weights, -1, keepdims=True) + 0.01)

    named = read(selected)
    if not self.relative_readout:
      return named
    objects = jax.nn.sigmoid(jax.lax.stop_gradient(self.objectness_logits(image)))
    offsets = (self._patch_centres(image.shape[1])[None] -
               jax.lax.stop_gradient(centre)[:, None])  # [B, N, 2] (y, x)
    side = jax.nn.sigmoid(_SIDE_SHARPNESS * jnp.einsum(
        "bnc,bc->bn", offsets, self.relation_direction(question)))
    beside = read(objects * side * (1 - selected))
    gate = jax.nn.sigmoid(self.relative_gate(question))
    return named + gate * (beside - named)

  def objectness_logits(self, image: Array) -> Array:
    """Image tokens [B, N, d] → [B, N] logits of "this token lies on an object"
    (losses.objectness_loss: inside any of the image's boxes)."""
    return self.objectness_head(image.astype(jnp.float32))[..., 0]

  @staticmethod
  def _split_fused(fused, mask, num_image_tokens, who):
    """fuse()'s [CLS] ⊕ image ⊕ text → (image tokens, text tokens, text mask);
    `who` names the caller that needs num_image_tokens to find the image."""
    if num_image_tokens is None:
      raise ValueError(f"{who}(..., num_image_tokens=vision.shape[1]).")
    text_start = 1 + num_image_tokens
    return fused[:, 1:text_start], fused[:, text_start:], mask[:, text_start:]

  def _patch_centres(self, num_tokens: int) -> Array:
    """patch_centres of the pre-training grid, or of the square grid of
    num_tokens patches (another resolution; the pipeline's images are square)."""
    grid = tuple(self.pretrain_grid)
    if grid[0] * grid[1] != num_tokens:
      side = int(round(num_tokens ** 0.5))
      if side * side != num_tokens:
        raise ValueError(f"{num_tokens} image tokens are neither the pre-training "
                         f"grid {grid} nor a square one.")
      grid = (side, side)
    return patch_centres(grid)

  def box(self, fused: Array, mask: Array,
          num_image_tokens: Optional[int] = None) -> Array:
    """(ymin, xmin, ymax, xmax) in [0, 1] from the pooled fused tokens
    (box_readout="select": the centre where ObjectSelector finds the referring
    expression's object; num_image_tokens then locates the image tokens)."""
    hidden, out = self.box_head
    pooled = self.pool(fused, mask)
    if self.box_readout == "select":
      image, text, text_mask = self._split_fused(
          fused, mask, num_image_tokens, "model.box_readout='select' needs box")
      centres, selected, _ = self.object_selector(
          image, masked_mean(text, text_mask)[:, None],
          self._patch_centres(num_image_tokens))
      # The selector's centre replaces the head's two centre outputs, which stay
      # so that box_head has one shape (and checkpoints load) with either read-out.
      size = jax.nn.sigmoid(out(nn.gelu(hidden(pooled + selected[:, 0]))))[:, 2:]
      center = centres[:, 0]
    else:
      center_size = jax.nn.sigmoid(out(nn.gelu(hidden(pooled))))
      center, size = center_size[:, :2], center_size[:, 2:]
    return jnp.clip(jnp.concatenate([center - size / 2, center + size / 2], -1),
                    0.0, 1.0)

  def region_word_logits(self, vision: Array, boxes: Array,
                         grid: tuple[int, int]) -> Array:
    """Word logits [B, (R,) V] from the mean of the vision tokens [B, gh·gw, d]
    that lie in each of an image's boxes [B, (R,) 4] (losses.region_word_loss:
    the words of each box's text).

    Straight from the vision encoder, before any fusion: the only way to lower
    this loss is for the tokens of an object to say what the object is, which is
    what every question about a named object later needs (README, "What the
    multi-task encoder holds of each object").
    """
    # float32: a bf16 count of patches is inexact above 256 of them.
    mask = box_patch_mask(boxes, grid).reshape(vision.shape[0], -1, vision.shape[1])
    mask = mask.astype(jnp.float32)
    means = jnp.einsum("brn,bnd->brd", mask, vision.astype(jnp.float32)) / jnp.maximum(
        jnp.sum(mask, -1, keepdims=True), 1.0)
    return self.region_head(means).reshape(*boxes.shape[:-1], -1)

  def caption_logits(self, tokens: Array, positions: Array,
                     prefix: Optional[Array] = None,
                     prefix_mask: Optional[Array] = None,
                     train: bool = False) -> Array:
    """Prefix-LM: logits [B, L, V] for caption tokens [B, L] at `positions` [L].

    With a prefix (training, and the first decoding call), the causal blocks run
    over prefix ⊕ tokens; in incremental decoding later calls pass one token.
    """
    self._check_length(int(positions.shape[0]), self.max_caption_len, "caption")
    x = self.token_embedding(tokens) + self.caption_position[positions].astype(
        self.dtype)
    mask = jnp.ones(tokens.shape, jnp.float32)
    if prefix is not None:
      x = jnp.concatenate([prefix.astype(self.dtype), x], axis=1)
      mask = jnp.concatenate([prefix_mask, mask], axis=1)
    for block in self.decoder_blocks:
      x = block(x, mask, train=train)
    x = self.decoder_norm(x[:, -tokens.shape[1]:])
    return self.token_embedding.attend(x).astype(jnp.float32)

  def _check_length(self, length, limit, what):
    if length > limit:
      raise ValueError(f"A {what} of {length} tokens exceeds the model's position "
                       f"table ({limit}); raise model.max_{what}_len or shorten "
                       f"data.max_{what}_len.")

  # -- the multi-task forward pass used in training ------------------------------

  def __call__(self, batch: dict, train: bool = False) -> dict:
    """VQA logits, boxes and caption logits for a model batch (see pipeline.py),
    and with region_words the boxed objects' word logits (of every box in
    `region_boxes` where the batch has it, else of `box`); with
    region_pooling="tokens", every vision token's word logits and the boxes'
    patch masks instead (losses.region_token_word_loss averages over them).

    The image is encoded once. Its questions and the referring expression are
    fused with it as one stacked batch; captioning fuses the image with no text
    (a prefix of [CLS] ⊕ vision only, no padded text positions to carry).
    `question` is [B, L] (one question per image) or [B, Q, L] (Q questions per
    image, answer logits [B, Q, A]): the vision encoder then runs once for Q
    answers (each question still costs a fusion pass).
    """
    vision = self.encode_image(batch["image"], train)
    batch_size = vision.shape[0]
    questions = batch["question"]
    per_image = questions.shape[1] if questions.ndim == 3 else 1
    questions = questions.reshape(batch_size * per_image, questions.shape[-1])
    fused, mask = self.fuse(
        jnp.concatenate([jnp.repeat(vision, per_image, 0), vision], 0),
        jnp.concatenate([questions, batch["refexp"]], 0), train)
    asked = batch_size * per_image
    no_text = jnp.zeros((batch_size, 0), jnp.int32)
    prefix, prefix_mask = self.fuse(vision, no_text, train)
    caption_len = batch["caption_in"].shape[1]
    answer_logits = self.answer_logits(fused[:asked], mask[:asked], vision.shape[1])
    outputs = {
        "answer_logits": answer_logits.reshape(batch["question"].shape[:-1] +
                                               answer_logits.shape[-1:]),
        "box": self.box(fused[asked:], mask[asked:], vision.shape[1]),
        "caption_logits": self.caption_logits(
            batch["caption_in"], jnp.arange(caption_len), prefix, prefix_mask,
            train),
    }
    image_size = batch["image"].shape[1:3]
    grid = (image_size[0] // self.patch_size, image_size[1] // self.patch_size)
    if self.relative_readout and "region_boxes" in batch:
      # On the fused image tokens, which the read weighs: every token says
      # whether it lies on an object (the loss: inside any box of the image).
      image = fused[:asked, 1:1 + vision.shape[1]]
      outputs["objectness_logits"] = self.objectness_logits(image).reshape(
          batch_size, per_image, -1)
      outputs["object_masks"] = box_patch_mask(batch["region_boxes"], grid).astype(
          jnp.float32)
    if self.region_words:
      boxes = batch["region_boxes"] if "region_boxes" in batch else batch["box"]
      if self.region_pooling == "tokens":
        outputs["region_token_logits"] = self.region_head(vision.astype(jnp.float32))
        outputs["region_masks"] = box_patch_mask(boxes, grid).astype(jnp.float32)
      else:
        outputs["region_word_logits"] = self.region_word_logits(vision, boxes, grid)
    return outputs


def from_config(model_config, *, vocab_size: int, num_answers: int, image_size: int,
                max_caption_len: int, decode: bool = False,
                compute_dtype: str = "float32") -> SDictVLM:
  """The model described by `config.model`, for a data source's vocabularies.

  compute_dtype 'bfloat16' computes in bf16 with float32 parameters (the SDict
  solve stays in float32 regardless).
  """
  dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
  if compute_dtype not in dtypes:
    raise ValueError(f"compute dtype {compute_dtype!r}: use one of {sorted(dtypes)}.")
  if image_size % model_config.patch_size:
    raise ValueError(f"data.image_size={image_size} is not divisible by "
                     f"model.patch_size={model_config.patch_size}.")
  if model_config.num_atoms < 1:
    raise ValueError(f"model.num_atoms={model_config.num_atoms}; need K >= 1.")
  if model_config.mixer not in mixers.MIXERS:
    raise ValueError(f"Unknown mixer {model_config.mixer!r}; set model.mixer to one of "
                     f"{mixers.MIXERS}.")
  grid = image_size // model_config.patch_size
  return SDictVLM(
      vocab_size=vocab_size, num_answers=max(num_answers, 1),
      mixer=model_config.mixer, width=model_config.width,
      mlp_ratio=model_config.mlp_ratio, num_atoms=model_config.num_atoms,
      vision_atoms=model_config.get("vision_atoms"),
      patch_size=model_config.patch_size, pretrain_grid=(grid, grid),
      vision_layers=model_config.vision_layers, text_layers=model_config.text_layers,
      fusion_layers=model_config.fusion_layers,
      decoder_layers=model_config.decoder_layers, num_heads=model_config.num_heads,
      ridge=model_config.ridge, sdict_method=model_config.sdict_method,
      tie_vision_atoms=model_config.tie_vision_atoms,
      vision_position=model_config.vision_position,
      question_gate=model_config.get("question_gate", False),
      question_film=model_config.get("question_film", False),
      pool_type=model_config.get("pool_type", "tok"),
      vqa_readout=model_config.get("vqa_readout", "pool"),
      token_pooling=model_config.get("token_pooling", "mean"),
      box_readout=model_config.get("box_readout", "pool"),
      relation_readout=model_config.get("relation_readout", False),
      object_readout=model_config.get("object_readout", False),
      relative_readout=model_config.get("relative_readout", False),
      region_words=model_config.get("region_words", False),
      region_pooling=model_config.get("region_pooling", "mean"),
      max_text_len=model_config.max_text_len,
      max_caption_len=max(max_caption_len, model_config.get("max_caption_len", 0)),
      recon_noise=model_config.get("recon_noise", 0.1),
      dtype=dtypes[compute_dtype], decode=decode)


def count_parameters(model: SDictVLM, image_size: int, text_len: int = 8,
                     caption_len: int = 8) -> int:
  """Parameter count via jax.eval_shape: nothing is allocated."""
  batch = dummy_batch(1, image_size, text_len, caption_len, model.num_answers)
  shapes = jax.eval_shape(functools.partial(model.init, train=False),
                          jax.random.PRNGKey(0), batch)
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))


def dummy_batch(batch_size: int, image_size: int, text_len: int, caption_len: int,
                num_answers: int, questions_per_image: int = 1,
                regions_per_image: int = 0) -> dict:
  """A model batch of zeros with the pipeline's shapes (for init and tracing)."""
  zeros = lambda shape, dtype=jnp.int32: jnp.zeros((batch_size, *shape), dtype)
  per_image = (questions_per_image,) if questions_per_image > 1 else ()
  regions = {}
  if regions_per_image:
    regions = {"region_texts": zeros((regions_per_image, text_len)),
               "region_boxes": zeros((regions_per_image, 4), jnp.float32),
               "has_region": zeros((regions_per_image,), jnp.float32)}
  return regions | {
      "image": zeros((image_size, image_size, 3), jnp.float32),
      "question": zeros((*per_image, text_len)), "refexp": zeros((text_len,)),
      "answer_scores": zeros((*per_image, num_answers), jnp.float32),
      "box": zeros((4,), jnp.float32),
      "caption_in": zeros((caption_len,)), "caption_out": zeros((caption_len,)),
      "has_vqa": zeros(per_image, jnp.float32), "has_caption": zeros((), jnp.float32),
      "has_box": zeros((), jnp.float32), "example_id": zeros(()),
  }


def equal_parameter_width(build, target_params: int, image_size: int,
                          multiple: int = 8, count=None) -> int:
  """The width (a multiple of `multiple`) whose model is closest to target_params.

  `build(width)` returns a model; counts use jax.eval_shape (no allocation). Used
  so that baselines are compared with SDict-VLM at equal parameter count.
  `count(width)`, when given, replaces the whole model's count (e.g. the vision
  encoder's alone).
  """
  def params_at(width):
    if count is not None:
      return count(width)
    return count_parameters(build(width), image_size)

  low, high = multiple, multiple
  while params_at(high) < target_params:
    low, high = high, high * 2
  while high - low > multiple:
    middle = (low + high) // 2 // multiple * multiple
    if params_at(middle) < target_params:
      low = middle
    else:
      high = middle
  return min((low, high), key=lambda w: abs(params_at(w) - target_params))
