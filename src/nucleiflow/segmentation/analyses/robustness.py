"""How a trained model degrades under noise, blur, compression and stain change (the robustness sweep).

Every perturbation maps (image, severity, rng) to an image; severity 0 is the
identity, and for one image the effect grows with severity. Perturbations are
seeded by (config seed, image id, perturbation, severity), so every model sees
exactly the same perturbed images. The sweep evaluates a model once per
perturbation x severity with the clean evaluation's metrics (inference's
batching and metrics) and takes severity 0 from the stored clean evaluation.

Stain variation uses albumentations' H&E tooling: the image's stain vectors
are estimated by its Macenko extractor (the HEStain transform's), the
haematoxylin and eosin concentrations are scaled by 1 +- severity (seeded
direction per stain), and the change is added in optical density so the
residual the two stains do not explain is kept. Stain normalisation is
torchstain's Macenko normaliser fitted to a reference image named in the config.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from albumentations import HEStain
from albumentations.augmentations.pixel.functional import STAIN_MATRICES

from nucleiflow.catalog import STAIN_NORMALISED as NORMALISED
from nucleiflow.config import ModelSpec
from nucleiflow.errors import ConfigError, DataFormatError, choices_error, require_columns
from nucleiflow.segmentation.inference.inference import evaluate_split
from nucleiflow.segmentation.inference.predictor import Predictor
from nucleiflow.segmentation.training.data import split_ids
from nucleiflow.store import Store

log = logging.getLogger(__name__)

SPLIT = "test"  # the sweep runs on the test split
FALLBACK_STAINS = "ruifrok"  # stain vectors used when an image's own cannot be estimated (no tissue)


def _uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise, `sigma` in grey levels (0-255), independent per pixel and channel."""
    return _uint8(image + rng.normal(0.0, sigma, image.shape))


def gaussian_blur(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur with standard deviation `sigma` pixels (kernel size from sigma)."""
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)


def jpeg(image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """JPEG compression at quality 100 - severity (severity 90: quality 10)."""
    quality = int(round(100 - severity))
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise DataFormatError(f"JPEG encoding at quality {quality} failed")
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def brightness_contrast(image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness shifted by +-severity x 255 and contrast scaled by 1 +- severity (seeded signs)."""
    brightness, contrast = rng.choice([-1.0, 1.0], size=2)
    mean = image.mean(axis=(0, 1), keepdims=True)
    return _uint8((image - mean) * (1.0 + contrast * severity) + mean + brightness * severity * 255.0)


def stain_vectors(image: np.ndarray) -> np.ndarray:
    """(2, 3) unit H and E optical-density vectors by albumentations' Macenko extractor; a preset without tissue."""
    extractor = HEStain(method="macenko", p=1.0).stain_extractor
    try:
        extractor.fit(image)
        vectors = np.asarray(extractor.stain_matrix_target, np.float64)
    except (ValueError, np.linalg.LinAlgError):
        vectors = np.full((2, 3), np.nan)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if not np.all(np.isfinite(vectors)) or np.any(norms < 1e-6):
        return np.asarray(STAIN_MATRICES[FALLBACK_STAINS], np.float64)
    vectors = vectors / norms
    if abs(float(vectors[0] @ vectors[1])) > 0.99:  # one stain only (e.g. fluorescence): not separable
        return np.asarray(STAIN_MATRICES[FALLBACK_STAINS], np.float64)
    return vectors


def stain(image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """H&E stain variation: each stain's concentration scaled by 1 +- severity (seeded sign per stain)."""
    vectors = stain_vectors(image)
    density = -np.log((image.astype(np.float64) + 1.0) / 256.0).reshape(-1, 3)
    concentrations = density @ np.linalg.pinv(vectors)  # (N, 2)
    scale = rng.choice([-1.0, 1.0], size=2) * severity
    density = density + (concentrations * scale) @ vectors
    return _uint8(256.0 * np.exp(-density) - 1.0).reshape(image.shape)


PERTURBATIONS: dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    "gaussian_noise": gaussian_noise,
    "gaussian_blur": gaussian_blur,
    "jpeg": jpeg,
    "brightness_contrast": brightness_contrast,
    "stain": stain,
}


def perturbation_seed(seed: int, image_id: str, name: str, severity: float) -> int:
    """A stable seed from the config seed, the image, the perturbation and the severity."""
    digest = hashlib.sha256(f"{seed}/{image_id}/{name}/{float(severity)!r}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def perturb(image: np.ndarray, name: str, severity: float, seed: int, image_id: str) -> np.ndarray:
    """`image` under perturbation `name` at `severity`, seeded; severity 0 returns the image itself."""
    if name not in PERTURBATIONS:
        raise choices_error("robustness perturbation", name, PERTURBATIONS)
    if severity < 0:
        raise ConfigError(f"robustness {name}: severity {severity} is negative")
    if severity == 0:
        return image
    rng = np.random.default_rng(perturbation_seed(seed, image_id, name, severity))
    return PERTURBATIONS[name](image, float(severity), rng)


class StainNormaliser:
    """torchstain's Macenko normaliser (numpy backend) fitted once to a reference image."""

    def __init__(self, reference: np.ndarray):
        import torchstain  # numpy backend; imported here so the perturbations alone do not need it

        self._normaliser = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
        self._normaliser.fit(reference)
        self.failures = 0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        try:
            normalised, _, _ = self._normaliser.normalize(I=image, stains=False)
        except (ValueError, np.linalg.LinAlgError):  # no stained tissue to decompose: left as it is
            self.failures += 1
            return image
        return _uint8(normalised)


def reference_image(store: Store, reference: str) -> np.ndarray:
    """The stain reference: an image id of the store, or the path of an RGB image file."""
    if Path(reference).is_file():
        image = cv2.imread(str(reference), cv2.IMREAD_COLOR)
        if image is None:
            raise DataFormatError(f"{reference}: not a readable image")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    try:
        return store[reference].image
    except KeyError:
        raise ConfigError(
            f"robustness.normalisation_reference: {reference!r} is neither an image id of {store.path} nor a file"
        ) from None


def conditions(spec: dict) -> list[tuple[str, float]]:
    """Every (perturbation, severity > 0) of a `robustness` config section, in config order."""
    return [(p["name"], float(s)) for p in spec["perturbations"] for s in p["severities"] if s > 0]


def sweep(
    evaluate: Callable[[Callable | None], pd.DataFrame],
    clean: pd.DataFrame,
    spec: dict,
    seed: int,
    normaliser: Callable[[np.ndarray], np.ndarray] | None = None,
) -> pd.DataFrame:
    """Per-image metrics at every perturbation x severity, one row per image and condition.

    `evaluate(image_of)` returns the per-image metrics of the loaded model with
    each sample's image replaced by `image_of(sample)`; `clean` is the stored
    clean evaluation, used as severity 0 of every perturbation (never recomputed).
    With a `normaliser`, the stain-normalised condition is added (severity NaN).
    """
    require_columns(clean, ["image_id"], "clean evaluation")
    parts = []
    for name in dict.fromkeys(p["name"] for p in spec["perturbations"]):
        parts.append(clean.assign(perturbation=name, severity=0.0))
    for name, severity in conditions(spec):
        log.info("robustness: %s at severity %g", name, severity)

        def image_of(sample, name=name, severity=severity):
            return perturb(sample.image, name, severity, seed, sample.image_id)

        parts.append(evaluate(image_of).assign(perturbation=name, severity=severity))
    if normaliser is not None:
        parts.append(evaluate(lambda sample: normaliser(sample.image)).assign(perturbation=NORMALISED, severity=np.nan))
    frame = pd.concat(parts, ignore_index=True)
    return frame[["perturbation", "severity", *[c for c in frame.columns if c not in ("perturbation", "severity")]]]


def sweep_from_spec(
    spec: ModelSpec | dict,
    model_path,
    store_path,
    split_path,
    clean_path,
    robustness: dict,
    *,
    threads: int = 1,
    postprocess: dict | None = None,
    tuned_path=None,
    progress: bool = False,
) -> pd.DataFrame:
    """The robustness sweep of one trained cell on the test split: the model is loaded once.

    Nuclei are found with the clean evaluation's settings: the model's tuned postprocess.json
    (`tuned_path`) or the experiment's fixed `postprocess` section.
    """
    spec = ModelSpec.from_dict(spec)
    predictor = Predictor.from_model_dir(
        model_path, spec=spec, postprocess=postprocess, tuned_path=tuned_path, threads=threads
    )
    store = Store(store_path)
    ids = split_ids(pd.read_csv(split_path), SPLIT)
    clean = pd.read_csv(clean_path)
    if sorted(clean["image_id"].astype(str)) != sorted(ids):
        raise DataFormatError(f"{clean_path}: its images are not the {SPLIT} split of {split_path}")
    reference = robustness.get("normalisation_reference")
    normaliser = StainNormaliser(reference_image(store, reference)) if reference else None

    def evaluate(image_of):
        return evaluate_split(predictor, store, ids, progress=progress, image_of=image_of)

    frame = sweep(evaluate, clean, robustness, spec.seed, normaliser)
    if normaliser is not None and normaliser.failures:
        log.warning("stain normalisation left %d image(s) unchanged (no stained tissue)", normaliser.failures)
    return frame
