"""Procedurally generated "shapes" scenes: the embedded default dataset.

Every example is generated from its index, so the dataset needs no download and any
example can be regenerated anywhere (a Grain worker, a test, an evaluator):

  rng = np.random.default_rng([seed, split_id, index])

`split_id` is 0 for train, 1 for validation and 2 for test. It is part of the seed
sequence, so the three splits are different streams of scenes (disjoint in practice: two
splits share a scene only by chance, with the odds of two independent random images
being equal).

A scene holds 1-4 non-overlapping objects (5 shapes x 6 colours x 2 sizes) on a dark,
noisy, gradient background. Each example is a raw example dict, the format shared by all
data sources (see `ShapesSource.__getitem__`), with captions, VQAv2-style questions,
boxes and referring expressions.

Questions are built so that the question alone does not give the answer:
- the generator is symmetric under any permutation of the colour names and of the shape
  names, so a question that names a colour (shape) has a uniform shape (colour) answer;
- yes/no questions are asked with the true answer drawn by a fair coin (the "no" case is a
  near miss or an absent combination; a relation question asks the reversed relation);
- each scene has one "count focus" (a shape or a colour) whose count is drawn jointly with
  the number of objects from a table with uniform marginals (`_FOCUS_COUNT_PROBS`), so
  "how many objects" is uniform over 1-4 and "how many circles" uniform over 0-3;
- a question is asked only when it is unambiguous ("what color is the square" only when
  there is exactly one square).
Answers are exact: all 10 annotator answers are the correct answer (no simulated
annotator noise), so the VQA soft score of the right answer is 1 and of all others 0.
"""

from __future__ import annotations

import dataclasses
import re
import typing

import numpy as np

# split name -> (split id mixed into every example's seed, default number of examples).
SPLITS = {"train": (0, 100_000), "validation": (1, 1_000), "test": (2, 1_000)}

# Saturated colours, far from the dark background (whose pixels stay <= _BACKGROUND_MAX).
COLOURS = {
    "red": (225, 35, 35),
    "green": (40, 200, 60),
    "blue": (55, 105, 245),
    "yellow": (240, 220, 40),
    "purple": (165, 60, 215),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles",
           "diamond": "diamonds", "cross": "crosses"}
# Object extent (side of its bounding box) as a fraction of the image side.
SIZES = {"small": 0.16, "large": 0.30}
SIZE_SYNONYMS = {"small": ("small", "little"), "large": ("large", "big")}
MAX_OBJECTS = 4
NUMBER_WORDS = ("zero", "one", "two", "three", "four")

_BACKGROUND_MAX = 110.0
_EDGE_MARGIN = 0.02  # objects stay this far inside the image
_GAP = 0.03  # boxes are separated by at least this much along some axis

# P(count of the focus value | number of objects n), rows for n = 1..4, columns for
# count 0..3. Every row sums to 1 and, averaged over uniform n, every column gives 1/4:
# the count is uniform and cannot be guessed from the question.
_FOCUS_COUNT_PROBS = {
    1: (0.5, 0.5, 0.0, 0.0),
    2: (0.25, 0.25, 0.5, 0.0),
    3: (0.125, 0.125, 0.25, 0.5),
    4: (0.125, 0.125, 0.25, 0.5),
}

# Relation r of object a to object b; phrases read "a <phrase> b".
RELATIONS = ("left", "right", "above", "below")
_OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}
_RELATION_PHRASES = {
    "left": ("left of", "to the left of", "on the left of"),
    "right": ("right of", "to the right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
# Position of a lone object: (vertical, horizontal) third -> phrases that also read well
# followed by "of the image".
_LOCATION_PHRASES = {
    ("top", "left"): ("in the top left corner", "in the upper left"),
    ("top", "center"): ("at the top", "in the upper part"),
    ("top", "right"): ("in the top right corner", "in the upper right"),
    ("middle", "left"): ("on the left", "on the left side"),
    ("middle", "center"): ("in the center", "in the middle"),
    ("middle", "right"): ("on the right", "on the right side"),
    ("bottom", "left"): ("in the bottom left corner", "in the lower left"),
    ("bottom", "center"): ("at the bottom", "in the lower part"),
    ("bottom", "right"): ("in the bottom right corner", "in the lower right"),
}
_SINGLE_CAPTIONS = (
    "{d} {loc}",
    "there is {d} {loc}",
    "an image of {d} {loc}",
    "a single {size} {colour} {shape} {loc} of the image",
    "a picture with one {size} {colour} {shape} {loc}",
    "{d} on a dark background {loc} of the picture",
)
_MULTI_CAPTIONS = (
    "{chain}",
    "there is {chain_and}",
    "{count} objects: {list}; the {a} is {rel} the {b}",
    "an image of {list}, with the {a} {rel} the {b}",
    "a picture showing {list}; the {a} is {rel} the {b}",
    "{count} shapes on a dark background: {list}, and the {a} is {rel} the {b}",
)
_CHAIN_LINKS = (", {d} {rel} the {b}", " and {d} {rel} the {b}")
_QUESTIONS = {
    "count_all": ("how many objects are there", "how many objects are in the image",
                  "what is the number of objects"),
    "count_shape": ("how many {shapes} are there", "how many {shapes} are in the image"),
    "count_colour": ("how many {colour} objects are there",
                     "how many {colour} shapes are in the image"),
    "exist": ("is there a {colour} {shape}", "does the image contain a {colour} {shape}"),
    "exist_sized": ("is there a {size} {colour} {shape}",
                    "is there a {size} {colour} {shape} in the image"),
    "colour": ("what color is the {shape}", "what is the color of the {shape}"),
    "shape": ("what shape is the {colour} object", "what is the shape of the {colour} object"),
    "relation_check": ("is the {a} {rel} the {b}",),
    "relation_shape": ("what shape is {rel} the {colour} object",),
    "relation_colour": ("what color is the object {rel} the {shape}",),
}
_REFEXPS = ("the {attrs} {shape}", "the {attrs} object", "the {shape} {position}")
_POSITIONS = {"left": "on the left", "right": "on the right",
              "above": "at the top", "below": "at the bottom"}
_MIN_QUESTIONS = 6


@dataclasses.dataclass(frozen=True)
class ShapeObject:
  """One object of a scene; positions are normalised to [0, 1] (y down, x right)."""
  shape: str
  colour: str
  size: str
  cy: float
  cx: float

  @property
  def box(self) -> tuple[float, float, float, float]:
    """(ymin, xmin, ymax, xmax) in [0, 1]; every drawn pixel lies inside it."""
    h = SIZES[self.size] / 2
    return (self.cy - h, self.cx - h, self.cy + h, self.cx + h)


@dataclasses.dataclass(frozen=True)
class Scene:
  objects: tuple[ShapeObject, ...]
  count_attribute: str  # "shape" or "colour": the attribute of the count focus
  count_value: str  # the focus shape or colour, asked in "how many ..." questions


def _pick(rng, options):
  # rng.random() is several times faster than rng.integers() for one scalar, and an
  # example makes ~100 picks.
  return options[int(rng.random() * len(options))]


# ----------------------------------------------------------------------------------
# Scene layout.
# ----------------------------------------------------------------------------------
def _separated(a: tuple, b: tuple) -> bool:
  """Whether boxes a and b are apart by at least _GAP along some axis."""
  return (a[2] + _GAP <= b[0] or b[2] + _GAP <= a[0] or
          a[3] + _GAP <= b[1] or b[3] + _GAP <= a[1])


def _place(sizes, rng) -> list[tuple[float, float]]:
  """Random centres for objects of the given sizes with pairwise separated boxes."""
  while True:  # Restarting from scratch is rare (4 large objects fill ~36% of the image).
    boxes = []
    for size in sizes:
      h = SIZES[size] / 2
      for _ in range(50):
        cy, cx = rng.uniform(h + _EDGE_MARGIN, 1 - h - _EDGE_MARGIN, size=2)
        box = (cy - h, cx - h, cy + h, cx + h)
        if all(_separated(box, other) for other in boxes):
          boxes.append(box)
          break
      else:
        break
    if len(boxes) == len(sizes):
      return [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in boxes]


def sample_scene(rng: np.random.Generator) -> Scene:
  """Objects with distinct (colour, shape) pairs; see `_FOCUS_COUNT_PROBS` for counts."""
  n = int(rng.integers(1, MAX_OBJECTS + 1))
  colours = tuple(COLOURS)
  focus_attribute = _pick(rng, ("shape", "colour"))
  focus_values, other_values = ((SHAPES, colours) if focus_attribute == "shape"
                                else (colours, SHAPES))
  focus_value = _pick(rng, focus_values)
  focus_count = int(rng.choice(4, p=_FOCUS_COUNT_PROBS[n]))
  pairs = []  # (focus attribute value, other attribute value)
  for i in range(n):
    value = focus_value if i < focus_count else _pick(
        rng, [v for v in focus_values if v != focus_value])
    taken = {o for f, o in pairs if f == value}
    pairs.append((value, _pick(rng, [o for o in other_values if o not in taken])))
  pairs = [pairs[i] for i in rng.permutation(n)]
  sizes = [_pick(rng, tuple(SIZES)) for _ in range(n)]
  centres = _place(sizes, rng)
  objects = []
  for (value, other), size, (cy, cx) in zip(pairs, sizes, centres):
    shape, colour = (value, other) if focus_attribute == "shape" else (other, value)
    objects.append(ShapeObject(shape, colour, size, float(cy), float(cx)))
  return Scene(tuple(objects), focus_attribute, focus_value)


# ----------------------------------------------------------------------------------
# Rendering.
# ----------------------------------------------------------------------------------
def _shape_mask(shape: str, dy: np.ndarray, dx: np.ndarray, h: float) -> np.ndarray:
  """Pixels of `shape` with half-extent h, given offsets from its centre."""
  ay, ax = np.abs(dy), np.abs(dx)
  inside = (ay <= h) & (ax <= h)
  if shape == "circle":
    return inside & (dy * dy + dx * dx <= h * h)
  if shape == "square":
    return inside
  if shape == "triangle":  # apex up, base along the bottom edge of the box
    return inside & (ax <= (dy + h) / 2)
  if shape == "diamond":
    return inside & (ay + ax <= h)
  if shape == "cross":
    return inside & ((ax <= h / 3) | (ay <= h / 3))
  raise ValueError(f"Unknown shape {shape!r}; valid shapes: {SHAPES}.")


def _background(rng, size: int) -> np.ndarray:
  """Dark noise + a tinted gradient + faint stripes: texture a model has to ignore."""
  # Python floats keep the arithmetic in float32 (numpy float64 scalars would promote).
  coords = (np.arange(size, dtype=np.float32) + 0.5) / size
  angle, stripe_angle, stripe_amp, stripe_freq, noise_std = (
      float(v) for v in rng.uniform((0, 0, 0, 3, 2), (2 * np.pi, 2 * np.pi, 10, 10, 8)))
  ramp = np.cos(angle) * coords[None, :] + np.sin(angle) * coords[:, None]
  along = np.cos(stripe_angle) * coords[None, :] + np.sin(stripe_angle) * coords[:, None]
  stripes = stripe_amp * np.sin((2 * np.pi * stripe_freq) * along)
  base = rng.uniform(10, 45, size=3).astype(np.float32)
  tint = rng.uniform(5, 35, size=3).astype(np.float32)
  noise = rng.standard_normal((size, size), dtype=np.float32) * noise_std  # luminance noise
  image = base + ramp[..., None] * tint + (stripes + noise)[..., None]
  return np.clip(image, 0, _BACKGROUND_MAX, out=image)


def render(objects, rng: np.random.Generator, image_size: int) -> np.ndarray:
  """uint8 [S, S, 3] image of the objects on a random background."""
  image = _background(rng, image_size)
  coords = (np.arange(image_size, dtype=np.float32) + 0.5) / image_size
  for obj in objects:
    ymin, xmin, ymax, xmax = obj.box
    rows = slice(max(0, int(ymin * image_size)), int(np.ceil(ymax * image_size)))
    cols = slice(max(0, int(xmin * image_size)), int(np.ceil(xmax * image_size)))
    mask = _shape_mask(obj.shape, coords[rows, None] - obj.cy, coords[None, cols] - obj.cx,
                       SIZES[obj.size] / 2)
    shade = float(rng.uniform(0.85, 1.0))  # slight per-object brightness variation
    image[rows, cols][mask] = np.asarray(COLOURS[obj.colour], np.float32) * shade
  return image.astype(np.uint8)


# What ShapesSource's images show: the rendered scene, or its ground truth per patch.
RENDERINGS = ("pixels", "oracle")
# The attributes an oracle patch holds, in order: 6 colours, 5 shapes, 2 sizes.
ORACLE_ATTRIBUTES = (*COLOURS, *SHAPES, *SIZES)


def render_oracle(objects, image_size: int, patch_size: int) -> np.ndarray:
  """uint8 [S, S, 3]: the scene's ground truth at patch resolution, no perception.

  Each patch's first len(ORACLE_ATTRIBUTES) values, in the model's patch layout
  (`model.patchify`: the patch's pixels row by row, RGB), hold the fraction of the
  patch covered by an object of each colour, shape and size (× 255); the rest are 0.
  A model trained on these images has perfect per-patch features, so what it
  still fails at is reasoning over the scene, not seeing it (README, "Seeing or
  reasoning"; there also why it is a weaker input than pixels at initialisation:
  13 small values on an otherwise empty patch).
  """
  if image_size % patch_size or patch_size * patch_size * 3 < len(ORACLE_ATTRIBUTES):
    raise ValueError(f"Oracle images need patches of >= 3x3 pixels that tile the "
                     f"image; got patch_size={patch_size}, image_size={image_size}.")
  coords = (np.arange(image_size, dtype=np.float32) + 0.5) / image_size
  attributes = np.zeros((image_size, image_size, len(ORACLE_ATTRIBUTES)), np.float32)
  for obj in objects:
    mask = _shape_mask(obj.shape, coords[:, None] - obj.cy, coords[None, :] - obj.cx,
                       SIZES[obj.size] / 2)
    for value in (obj.colour, obj.shape, obj.size):
      attributes[mask, ORACLE_ATTRIBUTES.index(value)] = 1.0
  grid = image_size // patch_size
  coverage = attributes.reshape(grid, patch_size, grid, patch_size, -1).mean((1, 3))
  patches = np.zeros((grid, grid, patch_size * patch_size * 3), np.float32)
  patches[..., :len(ORACLE_ATTRIBUTES)] = coverage
  image = patches.reshape(grid, grid, patch_size, patch_size, 3).transpose(0, 2, 1, 3, 4)
  return np.round(image.reshape(image_size, image_size, 3) * 255).astype(np.uint8)


# ----------------------------------------------------------------------------------
# Language: relations, captions, referring expressions, questions.
# ----------------------------------------------------------------------------------
def relations(a: ShapeObject, b: ShapeObject) -> list[str]:
  """The relations r with "a r b" true: a's box lies wholly on that side of b's."""
  (ay0, ax0, ay1, ax1), (by0, bx0, by1, bx1) = a.box, b.box
  return [r for r, holds in (("left", ax1 <= bx0), ("right", bx1 <= ax0),
                             ("above", ay1 <= by0), ("below", by1 <= ay0)) if holds]


def _on_side(o: ShapeObject, relation: str, ref: ShapeObject) -> bool:
  """Whether o's centre lies on the `relation` side of ref's centre (a loose test)."""
  return {"left": o.cx < ref.cx, "right": o.cx > ref.cx,
          "above": o.cy < ref.cy, "below": o.cy > ref.cy}[relation]


def _name(o: ShapeObject) -> str:
  """Colour + shape: unique within a scene."""
  return f"{o.colour} {o.shape}"


def _describe(o: ShapeObject, rng) -> str:
  return f"a {_pick(rng, SIZE_SYNONYMS[o.size])} {o.colour} {o.shape}"


def _relation_phrase(a: ShapeObject, b: ShapeObject, rng) -> str:
  return _pick(rng, _RELATION_PHRASES[_pick(rng, relations(a, b))])


def _third(v: float, names: tuple[str, str, str]) -> str:
  return names[0] if v < 0.4 else names[2] if v > 0.6 else names[1]


def _location(o: ShapeObject) -> tuple[str, str]:
  """(vertical, horizontal) third of the image holding the object's centre."""
  return _third(o.cy, ("top", "middle", "bottom")), _third(o.cx, ("left", "center", "right"))


def _list(descriptions: list[str]) -> str:
  return ", ".join(descriptions[:-1]) + " and " + descriptions[-1]


def captions(objects, rng) -> list[str]:
  """One caption per template; each names every object with size, colour and shape."""
  if len(objects) == 1:
    (o,) = objects
    return [t.format(d=_describe(o, rng), loc=_pick(rng, _LOCATION_PHRASES[_location(o)]),
                     size=_pick(rng, SIZE_SYNONYMS[o.size]), colour=o.colour, shape=o.shape)
            for t in _SINGLE_CAPTIONS]
  result = []
  for template in _MULTI_CAPTIONS:
    order = [objects[i] for i in rng.permutation(len(objects))]
    first, second = order[:2]
    chains = []
    for link in _CHAIN_LINKS:  # each later object is placed relative to an earlier one
      chain = f"{_describe(first, rng)} {_relation_phrase(first, second, rng)} " + (
          _describe(second, rng))
      for i, o in enumerate(order[2:], start=2):
        ref = _pick(rng, order[:i])
        chain += link.format(d=_describe(o, rng), rel=_relation_phrase(o, ref, rng),
                             b=_name(ref))
      chains.append(chain)
    result.append(template.format(
        chain=chains[0], chain_and=chains[1], count=NUMBER_WORDS[len(objects)],
        list=_list([_describe(o, rng) for o in order]), a=_name(first),
        rel=_relation_phrase(first, second, rng), b=_name(second)))
  return result


def _matches(o: ShapeObject, attrs: dict) -> bool:
  return all(getattr(o, k) == v for k, v in attrs.items())


def refexps(objects, rng) -> list[str]:
  """One expression per object that picks it out: the full description (40%) or one of
  the shortest attribute combinations unique in the scene."""
  result = []
  for o in objects:
    if rng.random() < 0.4:
      result.append(f"the {_pick(rng, SIZE_SYNONYMS[o.size])} {o.colour} {o.shape}")
      continue
    candidates = []  # (number of attributes used, expression)
    for keys in (("shape",), ("colour",), ("size", "shape"), ("colour", "shape"),
                 ("size", "colour")):
      attrs = {k: getattr(o, k) for k in keys}
      if sum(_matches(p, attrs) for p in objects) == 1:
        words = [_pick(rng, SIZE_SYNONYMS[o.size])] if "size" in keys else []
        words += [o.colour] if "colour" in keys else []
        template = _REFEXPS[0] if "shape" in keys else _REFEXPS[1]
        text = template.format(attrs=" ".join(words), shape=o.shape)
        candidates.append((len(keys), " ".join(text.split())))  # no attrs: no double space
    twins = [p for p in objects if p.shape == o.shape and p is not o]
    if len(twins) == 1:  # "the circle on the left" tells two circles apart
      for relation in relations(o, twins[0]):
        candidates.append((2, _REFEXPS[2].format(shape=o.shape,
                                                 position=_POSITIONS[relation])))
    shortest = min(c[0] for c in candidates)
    result.append(_pick(rng, [c[1] for c in candidates if c[0] == shortest]))
  return result


class QA(typing.NamedTuple):
  question: str
  answer: str
  answer_type: str  # VQAv2's: "yes/no", "number" or "other"
  kind: str  # the template family (a key of _QUESTIONS): what the question tests


def _qa(kind: str, rng, answer: str, answer_type: str, **fields) -> QA:
  question = _pick(rng, _QUESTIONS[kind]).format(**fields) + "?"
  return QA(question, answer, answer_type, kind)


def _absent_pair(objects, rng, near_miss: bool) -> tuple[str, str]:
  """A (colour, shape) pair not in the scene: an object with one attribute changed
  (near miss) or any absent pair."""
  present = {(o.colour, o.shape) for o in objects}
  while True:
    if near_miss:
      o = _pick(rng, objects)
      pair = ((_pick(rng, tuple(COLOURS)), o.shape) if rng.random() < 0.5
              else (o.colour, _pick(rng, SHAPES)))
    else:
      pair = (_pick(rng, tuple(COLOURS)), _pick(rng, SHAPES))
    if pair not in present:
      return pair


def _existence_question(objects, rng, with_size: bool) -> QA:
  answer = _pick(rng, ("yes", "no"))
  if answer == "yes":
    o = _pick(rng, objects)
    colour, shape, size = o.colour, o.shape, o.size
  elif with_size and rng.random() < 0.5:  # same colour and shape, other size
    o = _pick(rng, objects)
    colour, shape, size = o.colour, o.shape, "small" if o.size == "large" else "large"
  else:
    colour, shape = _absent_pair(objects, rng, near_miss=rng.random() < 0.5)
    size = _pick(rng, tuple(SIZES))
  kind = "exist_sized" if with_size else "exist"
  return _qa(kind, rng, answer, "yes/no", colour=colour, shape=shape,
             size=_pick(rng, SIZE_SYNONYMS[size]))


def questions(scene: Scene, rng) -> list[QA]:
  """Questions of every kind that is unambiguous for the scene."""
  objects = scene.objects
  result = [_qa("count_all", rng, str(len(objects)), "number")]
  focus_count = sum(getattr(o, scene.count_attribute) == scene.count_value for o in objects)
  if scene.count_attribute == "shape":
    result.append(_qa("count_shape", rng, str(focus_count), "number",
                      shapes=PLURALS[scene.count_value]))
  else:
    result.append(_qa("count_colour", rng, str(focus_count), "number",
                      colour=scene.count_value))
  result.append(_existence_question(objects, rng, with_size=False))
  result.append(_existence_question(objects, rng, with_size=True))
  unique_shape = [o for o in objects if sum(p.shape == o.shape for p in objects) == 1]
  unique_colour = [o for o in objects if sum(p.colour == o.colour for p in objects) == 1]
  if unique_shape:
    o = _pick(rng, unique_shape)
    result.append(_qa("colour", rng, o.colour, "other", shape=o.shape))
  if unique_colour:
    o = _pick(rng, unique_colour)
    result.append(_qa("shape", rng, o.shape, "other", colour=o.colour))
  pairs = [(a, b) for a in objects for b in objects if a is not b]
  if pairs:
    a, b = _pick(rng, pairs)
    relation = _pick(rng, relations(a, b))
    answer = _pick(rng, ("yes", "no"))
    asked = relation if answer == "yes" else _OPPOSITE[relation]
    result.append(_qa("relation_check", rng, answer, "yes/no", a=_name(a), b=_name(b),
                      rel=_pick(rng, _RELATION_PHRASES[asked])))
  # "what ... is left of X": X named by a unique attribute, exactly one object on that side.
  relational = []
  for ref, kind in ([(o, "relation_shape") for o in unique_colour] +
                    [(o, "relation_colour") for o in unique_shape]):
    for relation in RELATIONS:
      side = [o for o in objects if o is not ref and _on_side(o, relation, ref)]
      if len(side) == 1 and relation in relations(side[0], ref):
        relational.append((ref, kind, relation, side[0]))
  if relational:
    ref, kind, relation, target = _pick(rng, relational)
    rel = _pick(rng, _RELATION_PHRASES[relation])
    if kind == "relation_shape":
      result.append(_qa(kind, rng, target.shape, "other", rel=rel, colour=ref.colour))
    else:
      result.append(_qa(kind, rng, target.colour, "other", rel=rel, shape=ref.shape))
  while len(result) < _MIN_QUESTIONS:
    result.append(_existence_question(objects, rng, with_size=rng.random() < 0.5))
  return result


# ----------------------------------------------------------------------------------
# Closed vocabularies.
# ----------------------------------------------------------------------------------
def answer_vocabulary() -> list[str]:
  """Every possible answer, in a fixed order."""
  return (["yes", "no"] + [str(i) for i in range(MAX_OBJECTS + 1)] + list(COLOURS) +
          list(SHAPES))


def vocabulary() -> list[str]:
  """Every word that can appear in a caption, question or referring expression (sorted)."""
  texts = [*_SINGLE_CAPTIONS, *_MULTI_CAPTIONS, *_CHAIN_LINKS, *_REFEXPS,
           *_POSITIONS.values(), *NUMBER_WORDS, *COLOURS, *SHAPES, *PLURALS.values()]
  texts += [p for phrases in _RELATION_PHRASES.values() for p in phrases]
  texts += [p for phrases in _LOCATION_PHRASES.values() for p in phrases]
  texts += [w for words in SIZE_SYNONYMS.values() for w in words]
  texts += [q for templates in _QUESTIONS.values() for q in templates]
  words = set()
  for text in texts:
    words.update(re.findall(r"[a-z0-9]+", re.sub(r"\{[^}]*\}", " ", text)))
  return sorted(words)


# ----------------------------------------------------------------------------------
# Grain data source.
# ----------------------------------------------------------------------------------
class ShapesSource:
  """Random-access source of shapes examples (Grain's RandomAccessDataSource protocol).

  Holds only its arguments, so it pickles cheaply into Grain worker processes.
  `render="oracle"` replaces each image by `render_oracle`'s (same scenes, questions
  and captions; `oracle_patch_size` must be the model's patch size).
  """

  def __init__(self, split: str, *, num_examples: int | None = None, image_size: int = 64,
               seed: int = 0, render: str = "pixels", oracle_patch_size: int = 8):
    if split not in SPLITS:
      raise ValueError(f"Unknown split {split!r}; valid splits: {sorted(SPLITS)}.")
    if image_size < 32:
      raise ValueError(f"image_size must be >= 32 (small objects vanish below); "
                       f"got {image_size}.")
    if render not in RENDERINGS:
      raise ValueError(f"Unknown rendering {render!r}; use one of {RENDERINGS}.")
    self.split = split
    self.split_id, default_size = SPLITS[split]
    self.num_examples = default_size if num_examples is None else int(num_examples)
    self.image_size = image_size
    self.seed = seed
    self.render = render
    self.oracle_patch_size = oracle_patch_size

  def __len__(self) -> int:
    return self.num_examples

  def __repr__(self) -> str:
    return (f"ShapesSource(split={self.split!r}, num_examples={self.num_examples}, "
            f"image_size={self.image_size}, seed={self.seed}, render={self.render!r})")

  def _rng(self, index: int) -> np.random.Generator:
    index = int(index)
    if not 0 <= index < self.num_examples:
      raise IndexError(f"Index {index} out of range for {self!r}.")
    return np.random.default_rng([self.seed, self.split_id, index])

  def scene(self, index: int) -> Scene:
    """The scene behind example `index` (sampled first from the example's RNG)."""
    return sample_scene(self._rng(index))

  def __getitem__(self, index: int) -> dict:
    rng = self._rng(index)
    scene = sample_scene(rng)
    # Rendered in either mode: the background and shades draw from the same RNG
    # stream as the questions, which stay the same.
    image = render(scene.objects, rng, self.image_size)
    if self.render == "oracle":
      image = render_oracle(scene.objects, self.image_size, self.oracle_patch_size)
    qas = questions(scene, rng)
    return {
        "image": image,
        "captions": captions(scene.objects, rng),
        "questions": [qa.question for qa in qas],
        "answers": [[qa.answer] * 10 for qa in qas],
        "answer_types": [qa.answer_type for qa in qas],
        "question_kinds": [qa.kind for qa in qas],
        "boxes": np.asarray([o.box for o in scene.objects], np.float32),
        "refexps": refexps(scene.objects, rng),
        # Every attribute of every object, box by box (as Visual Genome's region
        # descriptions): what data.region_text="descriptions" names.
        "descriptions": [f"the {_pick(rng, SIZE_SYNONYMS[o.size])} {o.colour} {o.shape}"
                         for o in scene.objects],
        "id": int(index),
    }
