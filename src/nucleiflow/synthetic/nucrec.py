"""Synthetic NucRec nucleus-vs-micronucleus crops in the release layout.

`nucrec.zip` holds one folder per class, `nucleus/*.png` and
`micronucleus/*.png`, of single-cell crops (48-96 px a side, mostly RGB,
some grey). A nucleus crop shows one large nucleus; a micronucleus crop
adds one or two small satellite bodies near it. Both classes vary in size,
stain strength and noise, and both may show a cut-off neighbour at the
edge or a faint speck of debris, so the classes are learnable but not trivial.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from nucleiflow.synthetic import png_bytes, write_zip
from nucleiflow.synthetic.shapes import (
    Nucleus,
    paint,
    random_nucleus,
    render_brightfield,
    render_fluorescence,
    render_he,
)

CLASSES = ("micronucleus", "nucleus")
CROP_SIDE = (48, 96)
GRAYSCALE_EVERY = 5  # one crop in five is a grey fluorescence image
RGB_RENDERERS = (render_he, render_brightfield)
NEIGHBOUR_PROBABILITY = 0.25
DEBRIS_PROBABILITY = 0.3
DEBRIS_STRENGTH = (0.2, 0.4)  # debris is much paler than chromatin
SATELLITE_TRIES = 8  # candidate directions per satellite; the first that fits in the crop wins


def make_crop(rng: np.random.Generator, micronucleated: bool, grayscale: bool) -> np.ndarray:
    """One crop: uint8 (H, W) when `grayscale`, else (H, W, 3)."""
    height, width = (int(side) for side in rng.integers(*CROP_SIDE, size=2, endpoint=True))
    shape = (height, width)
    main = _main_nucleus(rng, shape)
    nuclei = [main, *(_satellites(rng, main, shape) if micronucleated else [])]
    strength = np.ones(len(nuclei) + 1)
    strength[2:] = rng.uniform(0.75, 1.1, len(nuclei) - 1)  # satellites stain about like the nucleus
    nuclei, strength = _add_clutter(rng, nuclei, strength, shape)
    labels = np.zeros(shape, np.int32)
    for label, nucleus in enumerate(nuclei, start=1):
        paint(labels, nucleus, label)
    if grayscale:
        return render_fluorescence(rng, labels, strength)
    return RGB_RENDERERS[rng.integers(len(RGB_RENDERERS))](rng, labels, strength)


def _main_nucleus(rng: np.random.Generator, shape: tuple[int, int]) -> Nucleus:
    """A large nucleus near the middle of the crop."""
    side = min(shape)
    nucleus = random_nucleus(rng, (0.17 * side, 0.25 * side), (1.0, 1.4), 0.06)
    jitter = 0.06 * side
    return nucleus.at(shape[0] / 2 + rng.uniform(-jitter, jitter), shape[1] / 2 + rng.uniform(-jitter, jitter))


def _satellites(rng: np.random.Generator, main: Nucleus, shape: tuple[int, int]) -> list[Nucleus]:
    """One or two small round bodies just outside the main nucleus, inside the crop."""
    bodies = []
    for _ in range(rng.integers(1, 2, endpoint=True)):
        body = random_nucleus(rng, (0.15 * main.mean_radius, 0.32 * main.mean_radius), (1.0, 1.2), 0.03)
        gap = rng.uniform(1.0, 0.35 * main.mean_radius)
        candidates = []
        for direction in rng.uniform(0, 2 * math.pi, SATELLITE_TRIES):
            distance = main.boundary_distance(direction) + body.extent + gap
            candidates.append(
                body.at(main.cy + distance * math.sin(direction), main.cx + distance * math.cos(direction))
            )
        # The first candidate wholly inside the crop, else the one that shows most.
        bodies.append(max(candidates, key=lambda b: min(_margin(b, shape), 1.0)))
    return bodies


def _margin(nucleus: Nucleus, shape: tuple[int, int]) -> float:
    """Distance by which `nucleus` stays inside the crop (negative when it sticks out)."""
    return min(nucleus.cy, shape[0] - 1 - nucleus.cy, nucleus.cx, shape[1] - 1 - nucleus.cx) - nucleus.extent


def _add_clutter(rng: np.random.Generator, nuclei: list[Nucleus], strength: np.ndarray, shape: tuple[int, int]):
    """Sometimes add a cut-off neighbouring nucleus and/or a faint speck of debris (both classes)."""
    side = min(shape)
    if rng.random() < NEIGHBOUR_PROBABILITY:
        neighbour = random_nucleus(rng, (0.17 * side, 0.25 * side), (1.0, 1.4), 0.06)
        nuclei = [*nuclei, _beyond_edge(rng, neighbour, shape)]
        strength = np.append(strength, rng.uniform(0.8, 1.1))
    if rng.random() < DEBRIS_PROBABILITY:
        speck = random_nucleus(rng, (1.0, 2.5), (1.0, 1.5), 0.1)
        nuclei = [*nuclei, speck.at(rng.uniform(0, shape[0]), rng.uniform(0, shape[1]))]
        strength = np.append(strength, rng.uniform(*DEBRIS_STRENGTH))
    return nuclei, strength


def _beyond_edge(rng: np.random.Generator, nucleus: Nucleus, shape: tuple[int, int]) -> Nucleus:
    """Place `nucleus` just past a random crop border, so only a sliver of it shows."""
    outside = 0.5 * nucleus.mean_radius
    along_rows = rng.random() < 0.5
    edge = rng.choice([-outside, (shape[0] if along_rows else shape[1]) + outside])
    if along_rows:
        return nucleus.at(float(edge), rng.uniform(0, shape[1]))
    return nucleus.at(rng.uniform(0, shape[0]), float(edge))


def archive_entries(n_per_class: int, seed: int) -> dict[str, bytes]:
    """Zip member name -> PNG bytes for `n_per_class` crops of each class."""
    rng = np.random.default_rng(seed)
    entries = {}
    for name, child in zip(CLASSES, rng.spawn(len(CLASSES))):
        # Grey crops are spread by a fixed share, so every class gets some.
        grayscale = child.permutation([i % GRAYSCALE_EVERY == 0 for i in range(n_per_class)])
        for index in range(n_per_class):
            crop = make_crop(child, name == "micronucleus", bool(grayscale[index]))
            entries[f"{name}/{name}_{index:04d}.png"] = png_bytes(crop)
    return entries


def write_nucrec_zip(path: str | os.PathLike, n_per_class: int, seed: int) -> Path:
    """Write `nucrec.zip` with `n_per_class` crops per class at `path` (atomically); return the path."""
    return write_zip(path, archive_entries(n_per_class, seed))
