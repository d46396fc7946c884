"""Drawing code shared by the synthetic generators.

Nuclei are irregular ellipses (an ellipse whose radius wobbles with a few
low harmonics of the polar angle). `layout_nuclei` scatters them into an
instance label map, placing many right next to an earlier one so that
neighbours touch. The `render_*` functions turn a label map into an image
of one modality: H&E (Beer-Lambert stain mixing), fluorescence, brightfield.
Everything takes a numpy Generator; nothing touches a global RNG.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

# Stain optical-density vectors (RGB), normalised to unit length.
HEMATOXYLIN = np.array([0.65, 0.70, 0.29]) / np.linalg.norm([0.65, 0.70, 0.29])
EOSIN = np.array([0.07, 0.99, 0.11]) / np.linalg.norm([0.07, 0.99, 0.11])
# A nearly neutral absorber: unstained brightfield nuclei look grey-violet.
BRIGHTFIELD_ABSORBER = np.array([0.60, 0.62, 0.50]) / np.linalg.norm([0.60, 0.62, 0.50])


@dataclass(frozen=True)
class Nucleus:
    """An irregular ellipse: centre, semi-axes, orientation and boundary wobble."""

    cy: float
    cx: float
    ry: float
    rx: float
    angle: float
    harmonics: tuple[tuple[int, float, float], ...] = ()  # (order, amplitude, phase)
    kind: int = 0  # free for the caller, e.g. a class id

    @property
    def mean_radius(self) -> float:
        return math.sqrt(self.ry * self.rx)

    @property
    def extent(self) -> float:
        """Radius of a circle that surely contains the nucleus."""
        return max(self.ry, self.rx) * (1.0 + sum(abs(a) for _, a, _ in self.harmonics))

    def at(self, cy: float, cx: float) -> Nucleus:
        return dataclasses.replace(self, cy=cy, cx=cx)

    def boundary_distance(self, direction: float) -> float:
        """Distance from the centre to the boundary along image angle `direction` (radians)."""
        theta = direction - self.angle
        ellipse = 1.0 / math.hypot(math.cos(theta) / self.rx, math.sin(theta) / self.ry)
        return ellipse * (1.0 + sum(a * math.cos(order * theta + phase) for order, a, phase in self.harmonics))


def random_nucleus(
    rng: np.random.Generator,
    radius: tuple[float, float],
    elongation: tuple[float, float] = (1.0, 1.5),
    irregularity: float = 0.08,
    kind: int = 0,
) -> Nucleus:
    """A nucleus at the origin with mean radius and axis ratio drawn from the given ranges."""
    mean_radius = rng.uniform(*radius)
    ratio = rng.uniform(*elongation)
    # Split the ratio between the axes so the area stays that of the mean radius.
    ry, rx = mean_radius * math.sqrt(ratio), mean_radius / math.sqrt(ratio)
    harmonics = tuple((order, rng.uniform(0, irregularity), rng.uniform(0, 2 * math.pi)) for order in (2, 3, 5))
    return Nucleus(0.0, 0.0, ry, rx, rng.uniform(0, math.pi), harmonics, kind)


def rasterize(nucleus: Nucleus, shape: tuple[int, int]) -> tuple[tuple[slice, slice], np.ndarray]:
    """Boolean mask of `nucleus` inside its bounding box, clipped to an image of `shape`.

    Works on the bounding box only, so the cost depends on the nucleus size, not the image.
    """
    r = nucleus.extent
    y0, y1 = max(math.floor(nucleus.cy - r), 0), min(math.ceil(nucleus.cy + r) + 1, shape[0])
    x0, x1 = max(math.floor(nucleus.cx - r), 0), min(math.ceil(nucleus.cx + r) + 1, shape[1])
    box = (slice(y0, max(y1, y0)), slice(x0, max(x1, x0)))
    dy, dx = np.ogrid[y0 : max(y1, y0), x0 : max(x1, x0)]
    dy, dx = dy - nucleus.cy, dx - nucleus.cx
    cos, sin = math.cos(nucleus.angle), math.sin(nucleus.angle)
    u, v = dx * cos + dy * sin, dy * cos - dx * sin  # coordinates along the nucleus' own axes
    theta = np.arctan2(v, u)
    wobble = 1.0 + sum(a * np.cos(order * theta + phase) for order, a, phase in nucleus.harmonics)
    inside = (u / nucleus.rx) ** 2 + (v / nucleus.ry) ** 2 <= wobble**2
    return box, inside


def layout_nuclei(
    rng: np.random.Generator,
    shape: tuple[int, int],
    count: int,
    make_nucleus: Callable[[np.random.Generator], Nucleus],
    *,
    touching: float = 0.5,
    max_overlap: float = 0.12,
    min_area: int = 12,
    tries: int = 12,
) -> tuple[np.ndarray, list[Nucleus]]:
    """Place up to `count` nuclei; return the int32 label map and the placed nuclei.

    Label k (1-based) is `nuclei[k - 1]`; labels never overlap. With
    probability `touching` a nucleus is put just against an already placed one
    (a slight overlap, cut away, leaves a shared border). A candidate that
    would hide more than `max_overlap` of itself, or show fewer than
    `min_area` pixels, is redrawn up to `tries` times, then skipped.
    """
    labels = np.zeros(shape, np.int32)
    placed: list[Nucleus] = []
    for _ in range(count):
        for _ in range(tries):
            candidate = _position(rng, make_nucleus(rng), placed, shape, touching)
            if paint(labels, candidate, len(placed) + 1, max_overlap, min_area):
                placed.append(candidate)
                break
    return labels, placed


def _position(
    rng: np.random.Generator, nucleus: Nucleus, placed: list[Nucleus], shape: tuple[int, int], touching: float
) -> Nucleus:
    """Move `nucleus` to a random spot, or against a random placed neighbour."""
    if placed and rng.random() < touching:
        anchor = placed[rng.integers(len(placed))]
        direction = rng.uniform(0, 2 * math.pi)
        distance = (anchor.mean_radius + nucleus.mean_radius) * rng.uniform(0.85, 1.0)
        return nucleus.at(anchor.cy + distance * math.sin(direction), anchor.cx + distance * math.cos(direction))
    return nucleus.at(rng.uniform(0, shape[0]), rng.uniform(0, shape[1]))


def paint(labels: np.ndarray, nucleus: Nucleus, label: int, max_overlap: float = 1.0, min_area: int = 1) -> bool:
    """Give `label` to the free pixels of `nucleus`, unless too few show; report whether it did.

    Pixels already labelled keep their label, so earlier nuclei stay in front.
    Refuses when more than `max_overlap` of the nucleus would be hidden or
    fewer than `min_area` pixels would show.
    """
    box, inside = rasterize(nucleus, labels.shape)
    window = labels[box]
    free = inside & (window == 0)
    area, shown = int(inside.sum()), int(free.sum())
    if shown < min_area or area - shown > max_overlap * area:
        return False
    window[free] = label
    return True


def dilate(mask: np.ndarray) -> np.ndarray:
    """Grow a boolean mask by one pixel (4-neighbourhood)."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown


def boundaries(labels: np.ndarray) -> np.ndarray:
    """Boolean map of labelled pixels that have a 4-neighbour with another label."""
    edge = np.zeros(labels.shape, bool)
    vertical = labels[1:] != labels[:-1]
    horizontal = labels[:, 1:] != labels[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge & (labels > 0)


def touching_pairs(labels: np.ndarray) -> list[tuple[int, int]]:
    """Sorted list of label pairs (a < b) that share a border."""
    pairs: set[tuple[int, int]] = set()
    for a, b in ((labels[1:], labels[:-1]), (labels[:, 1:], labels[:, :-1])):
        contact = (a != b) & (a > 0) & (b > 0)
        low, high = np.minimum(a[contact], b[contact]), np.maximum(a[contact], b[contact])
        pairs.update(zip(low.tolist(), high.tolist()))
    return sorted(pairs)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Float32 noise, about unit variance, correlated over roughly `scale` pixels."""
    coarse = rng.standard_normal((max(2, math.ceil(shape[0] / scale) + 1), max(2, math.ceil(shape[1] / scale) + 1)))
    field = Image.fromarray(coarse.astype(np.float32)).resize((shape[1], shape[0]), Image.Resampling.BICUBIC)
    field = np.asarray(field, np.float32)
    return (field - field.mean()) / (field.std() + 1e-6)


def per_label(
    rng: np.random.Generator,
    labels: np.ndarray,
    low: float,
    high: float,
    background: float = 0.0,
    strength: np.ndarray | None = None,
) -> np.ndarray:
    """Map each nucleus to its own value drawn from [low, high) (times `strength[label]`).

    `strength`, when given, has one entry per label (index 0 unused), painted or not.
    """
    values = rng.uniform(low, high, labels.max() + 1 if strength is None else len(strength))
    if strength is not None:
        values *= strength
    values[0] = background
    return values[labels]


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a float image (2-D or channels-last), per channel."""
    return ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0)[: image.ndim])


def to_uint8(image: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Add Gaussian sensor noise, round and clip to 0..255."""
    noisy = image + rng.normal(0.0, noise, image.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def stain_mix(concentrations: list[np.ndarray], stains: list[np.ndarray]) -> np.ndarray:
    """Beer-Lambert: transmitted RGB (0..255 float) of stains at the given concentrations."""
    density = sum(c[..., None] * s for c, s in zip(concentrations, stains))
    return 255.0 * np.exp(-density)


def render_he(rng: np.random.Generator, labels: np.ndarray, strength: np.ndarray | None = None) -> np.ndarray:
    """H&E-like uint8 RGB: purple textured nuclei with darker rims on pink, uneven tissue."""
    shape = labels.shape
    chromatin = 1.0 + 0.25 * smooth_noise(rng, shape, 3.0)
    hematoxylin = per_label(rng, labels, 0.9, 1.7, rng.uniform(0.05, 0.2), strength) * chromatin
    hematoxylin += 0.35 * boundaries(labels) + 0.05 * np.abs(smooth_noise(rng, shape, 24.0))
    tissue = np.clip(1.0 + 0.35 * smooth_noise(rng, shape, 20.0), 0.2, None)
    eosin = rng.uniform(0.2, 0.5) * tissue * np.where(labels > 0, 0.5, 1.0)
    rgb = stain_mix([np.clip(hematoxylin, 0, None), eosin], [HEMATOXYLIN, EOSIN])
    return to_uint8(blur(rgb, 0.6), rng, noise=3.0)


def render_fluorescence(rng: np.random.Generator, labels: np.ndarray, strength: np.ndarray | None = None) -> np.ndarray:
    """Fluorescence-like uint8 grey image: bright textured nuclei on a dark background."""
    shape = labels.shape
    texture = 1.0 + 0.2 * smooth_noise(rng, shape, 2.5)
    signal = per_label(rng, labels, 70, 230, 0.0, strength) * texture * np.where(boundaries(labels), 0.75, 1.0)
    background = rng.uniform(4, 25) * (1.0 + 0.3 * smooth_noise(rng, shape, 40.0))
    return to_uint8(blur(signal, 1.0) + background, rng, noise=2.0)


def render_brightfield(rng: np.random.Generator, labels: np.ndarray, strength: np.ndarray | None = None) -> np.ndarray:
    """Brightfield-like uint8 RGB: dark grey-violet nuclei on a light, slightly uneven field."""
    shape = labels.shape
    texture = 1.0 + 0.2 * smooth_noise(rng, shape, 3.0)
    density = per_label(rng, labels, 0.5, 1.2, 0.0, strength) * texture + 0.2 * boundaries(labels)
    illumination = rng.uniform(0.8, 0.95) * (1.0 + 0.04 * smooth_noise(rng, shape, 60.0))
    rgb = stain_mix([np.clip(density, 0, None)], [BRIGHTFIELD_ABSORBER]) * illumination[..., None]
    return to_uint8(blur(rgb, 0.8), rng, noise=2.5)
