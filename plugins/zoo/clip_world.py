"""The CLIP world of the tiny zoo: the zoo's coloured-shape images, named by colour and shape.

Classes are every (colour, shape) pair of ``world.COLOURS`` x ``world.SHAPES`` (6 x 4 = 24), labelled
``"red circle"``; a zero-shot prompt is ``"a red circle"``. Two label subsets split the colours in half:
subset ``A`` holds the first three colours (red, blue, green), subset ``B`` the last three (purple, orange,
pink). Images come from ``world.render`` (the same renderer as the VQA world), so every image has a
random size and position jitter. Everything is drawn from a ``random.Random``: a seed fixes the data.
"""

from __future__ import annotations

import random

from . import world

#: Prompt templates of the zero-shot classifier (each class's text embedding averages them).
TEMPLATES = ("a {}",)
#: Label subsets by colour index: the experts are fine-tuned on one each; the target is their union.
SUBSETS = {"A": (0, 1, 2), "B": (3, 4, 5)}


def label(colour: int, shape: int) -> str:
    return f"{world.COLOURS[colour][0]} {world.SHAPES[shape][0]}"


def classes(colours=None) -> list[tuple[int, int]]:
    """(colour, shape) pairs of the given colours (all by default), in a fixed order."""
    colours = range(len(world.COLOURS)) if colours is None else colours
    return [(c, s) for c in colours for s in range(len(world.SHAPES))]


def class_labels(colours=None) -> list[str]:
    return [label(c, s) for c, s in classes(colours)]


def subset_of(colour: int) -> str:
    return next(name for name, colours in SUBSETS.items() if colour in colours)


def scene(rng: random.Random, colours=None) -> dict:
    """A random scene (``world.random_scene``) whose colour is drawn from ``colours``."""
    s = world.random_scene(rng)
    if colours is not None:
        s["colour"] = rng.choice(list(colours))
    return s


def caption(s: dict, rng: random.Random) -> str:
    """A training caption: the class name in a few phrasings, sometimes with the size."""
    name = label(s["colour"], s["shape"])
    size = world.SIZES[s["size"]][0]
    return rng.choice([f"a {name}", f"a {size} {name}", f"a photo of a {name}", f"a {name} on grey"])


def training_pairs(rng: random.Random, n: int, colours=None) -> list[tuple[dict, str]]:
    """``n`` (scene, caption) pairs whose colours are drawn from ``colours`` (all by default)."""
    out = []
    for _ in range(n):
        s = scene(rng, colours)
        out.append((s, caption(s, rng)))
    return out


def task_rows(rng: random.Random, n: int) -> list[dict]:
    """Held-out classification rows over the union of the subsets: scene, label, label index, subset."""
    names = class_labels()
    rows = []
    for i in range(n):
        s = scene(rng)
        name = label(s["colour"], s["shape"])
        rows.append({"id": i, "scene": s, "label": name, "label_id": names.index(name),
                     "subset": subset_of(s["colour"])})
    return rows


render = world.render
