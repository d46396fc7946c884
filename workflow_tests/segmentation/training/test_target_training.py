"""Training on instance-aware targets: the dataset derives them after resizing and augmentation, each loss term
matches an independent computation, and the trainer fits every target (with and without a type head)."""

import json

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from nucleiflow.device import setup_device
from nucleiflow.engine import seed_everything
from nucleiflow.errors import ConfigError, DataFormatError
from nucleiflow.models import build_model
from nucleiflow.segmentation.representation.targets import BOUNDARY, INTERIOR, packed_target
from nucleiflow.segmentation.training import heads
from nucleiflow.segmentation.training.augment import build_pipeline
from nucleiflow.segmentation.training.data import SegmentationDataset, make_loader, resize_pair, to_tensor, warpable_ids
from nucleiflow.segmentation.training.heads import OutputLayout
from nucleiflow.segmentation.training.losses import (
    LOSS_TERMS,
    TERM_WEIGHTS,
    build_loss,
    build_target_loss,
    multiclass_dice_loss,
    sobel_kernels,
    target_terms,
)
from nucleiflow.segmentation.training.trainer import SegmentationTrainer, TrainSettings, batch_counts
from nucleiflow.store import Sample, Store, StoreWriter

TYPES = 6  # catalog.TYPE_HEAD_CLASSES: background + the five PanNuke types
LAYOUTS = {
    "binary": OutputLayout("binary"),
    "contour": OutputLayout("contour"),
    "hv": OutputLayout("hv"),
    "binary+types": OutputLayout("binary", TYPES),
    "contour+types": OutputLayout("contour", TYPES),
    "hv+types": OutputLayout("hv", TYPES),
}
NO_CHANGE = {"rotate": False, "hflip": 0.0, "vflip": 0.0, "brightness_contrast": 0.0}


def touching_discs(rng: np.random.Generator, shape: tuple[int, int], n: int = 8) -> np.ndarray:
    """Instance map of `n` random discs; where two overlap, a pixel goes to the disc it is relatively closer to."""
    rows, cols = np.indices(shape)
    labels = np.zeros(shape, np.int32)
    nearest = np.full(shape, np.inf)
    for label in range(1, n + 1):
        r, c = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        distance = np.hypot(rows - r, cols - c) / rng.uniform(4, 8)
        inside = (distance <= 1) & (distance < nearest)
        labels[inside], nearest[inside] = label, distance[inside]
    return labels


def scene(rng: np.random.Generator, shape: tuple[int, int]):
    """(image, instances, classes): each nucleus has a type 1..5 and a grey level telling it; darker rims."""
    instances = touching_discs(rng, shape)
    kinds = np.concatenate([[0], rng.integers(1, TYPES, instances.max())])
    classes = kinds[instances].astype(np.uint8)
    grey = np.where(instances > 0, 120 + 25 * classes.astype(int), 30)
    rims = ndimage.morphological_gradient(instances, size=3) > 0
    grey = np.where(rims & (instances > 0), grey - 60, grey)
    image = np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)
    return image, instances, classes


def write_store(path, n=4, shape=(48, 48), classes=True, seed=0) -> Store:
    rng = np.random.default_rng(seed)
    names = ("background", "neoplastic", "inflammatory", "connective", "dead", "epithelial")
    with StoreWriter(path, "pannuke" if classes else "dsb2018", class_names=names) as writer:
        for k in range(n):
            image, instances, types = scene(rng, shape)
            writer.add(f"img{k}", image, instances, types if classes else None)
    return Store(path)


@pytest.fixture(scope="module")
def typed_store(tmp_path_factory) -> Store:
    return write_store(tmp_path_factory.mktemp("typed") / "store.h5")


class Recording:
    """An albumentations pipeline that remembers the last seed and the arrays it was given and gave back."""

    def __init__(self, pipeline):
        self.pipeline, self.calls = pipeline, []

    def set_random_seed(self, seed: int) -> None:
        self.seed = seed
        self.pipeline.set_random_seed(seed)

    def __call__(self, **arrays):
        out = self.pipeline(**arrays)
        self.calls.append((self.seed, arrays, out))
        return out


# -- dataset ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_dataset_shapes_dtypes_and_values_per_target(typed_store, name):
    layout = LAYOUTS[name]
    dataset = SegmentationDataset(
        typed_store, typed_store.ids, 32, transform=build_pipeline({}), random_tiles=True, layout=layout
    )
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        for i in range(len(dataset)):
            image, target, index = dataset[i]
            assert index == i and image.shape == (3, 32, 32) and image.dtype == torch.float32
            assert target.shape == (layout.packed_channels, 32, 32) and target.dtype == torch.float32
            fg = target[0].numpy() > 0
            values = set(np.unique(target[0].numpy()))
            assert values <= ({0.0, 1.0, 2.0} if layout.target == "contour" else {0.0, 1.0})
            if layout.target == "hv":
                hv = target[1:3].numpy()
                assert np.abs(hv).max() <= 1 and not hv[:, ~fg].any()
            if layout.type_classes:
                types = target[-1].numpy()
                assert set(np.unique(types)) <= set(range(TYPES))
                # Instances and types went through one warp: typed pixels are exactly the nucleus pixels.
                np.testing.assert_array_equal(types > 0, fg)


@pytest.mark.parametrize("name", ["binary", "contour", "hv", "hv+types"])
def test_a_flip_moves_image_and_target_together(typed_store, name):
    layout = LAYOUTS[name]
    pipeline = build_pipeline({**NO_CHANGE, "hflip": 1.0})
    dataset = SegmentationDataset(typed_store, typed_store.ids, 48, transform=pipeline, seed=5, layout=layout)
    for i, image_id in enumerate(typed_store.ids):
        sample = typed_store[image_id]
        image, target, _ = dataset[i]
        flipped = sample.instances[:, ::-1]
        classes = sample.classes[:, ::-1] if layout.type_classes else None
        np.testing.assert_array_equal(target.numpy(), packed_target(layout.target, flipped, classes))
        assert torch.equal(image, to_tensor(sample.image[:, ::-1]))


def _as_mask(array: np.ndarray, transform, seed: int) -> np.ndarray:
    """`array` (H, W) moved as a mask by the pipeline drawn with `seed`."""
    transform.set_random_seed(seed)
    return transform(image=np.zeros((*array.shape, 3), np.uint8), mask=array)["mask"]


@pytest.mark.parametrize("name", ["contour", "hv", "contour+types"])
def test_the_target_is_derived_after_resizing_and_augmentation(typed_store, name):
    """Resize 48 -> 32 and rotate: the target is packed_target of the moved instance map, not the moved target."""
    layout = LAYOUTS[name]
    pipeline = build_pipeline({**NO_CHANGE, "rotate": True})
    recording = Recording(pipeline)
    dataset = SegmentationDataset(typed_store, typed_store.ids, 32, transform=recording, seed=1, layout=layout)
    for i, image_id in enumerate(typed_store.ids):
        sample = typed_store[image_id]
        _, target, _ = dataset[i]
        seed = recording.calls[-1][0]
        # Independently of the dataset's uint16 stacking: int32 ids resized and rotated on their own.
        _, instances = resize_pair(sample.image, sample.instances, 32)
        moved = _as_mask(instances, pipeline, seed)
        classes = None
        if layout.type_classes:
            classes = _as_mask(resize_pair(sample.image, sample.classes, 32)[1], pipeline, seed)
        expected = packed_target(layout.target, moved, classes)
        np.testing.assert_array_equal(target.numpy(), expected)
        # What augmenting a stored target would give: derived at 48 px, then resized and rotated as a mask.
        native = packed_target(layout.target, sample.instances)
        stale = np.stack([_as_mask(resize_pair(sample.image, c, 32)[1], pipeline, seed) for c in native])
        assert not np.array_equal(stale, expected[: len(native)])


def test_rotations_keep_the_interiors_of_touching_nuclei_apart(typed_store):
    recording = Recording(build_pipeline({**NO_CHANGE, "rotate": True}))
    dataset = SegmentationDataset(
        typed_store, typed_store.ids, 48, transform=recording, layout=LAYOUTS["contour"], random_tiles=True
    )
    touching = 0
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for i in range(len(dataset)):
            target = dataset[i][1][0].numpy()
            instances = recording.calls[-1][2]["mask"].astype(int)  # the moved ids the target was made of
            interior = target == INTERIOR
            # Every pair of 8-neighbours: two interior pixels next to each other belong to one nucleus.
            for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
                a = (slice(0, 48 - dy), slice(max(0, -dx), 48 - max(0, dx)))
                b = (slice(dy, 48), slice(max(0, dx), 48 - max(0, -dx)))
                both = interior[a] & interior[b]
                assert (instances[a][both] == instances[b][both]).all()
                nuclei = (instances[a] > 0) & (instances[b] > 0)
                touching += (nuclei & (instances[a] != instances[b])).sum()
            assert (target[instances == 0] == 0).all() and (target[instances > 0] > 0).all()
            assert (target == BOUNDARY).any()
    assert touching > 0  # the scenes do hold touching nuclei after rotation


def test_large_ids_are_relabelled_and_give_the_same_target(typed_store, tmp_path):
    sample = typed_store[typed_store.ids[0]]
    big = np.where(sample.instances > 0, sample.instances * 7919 + 100_000, 0).astype(np.int32)
    relabelled = warpable_ids(big)
    assert relabelled.dtype == np.uint16 and relabelled.max() == len(np.unique(big)) - 1
    with StoreWriter(tmp_path / "big.h5", "pannuke") as writer:
        writer.add("big", sample.image, big)
        writer.add("small", sample.image, sample.instances)
    store = Store(tmp_path / "big.h5")
    transform = build_pipeline({"rotate": True})
    for target in ("contour", "hv"):
        dataset = SegmentationDataset(store, ["big", "small"], 32, transform=transform, layout=OutputLayout(target))
        a = dataset[0][1]
        dataset.ids = ["small", "big"]  # index 0 again: the same augmentation draw
        b = dataset[0][1]
        assert torch.equal(a, b)
    # More ids than uint16 holds: float32, which keeps every id exactly.
    many = np.arange(1, 260 * 260 + 1, dtype=np.int32).reshape(260, 260)
    as_float = warpable_ids(many)
    assert as_float.dtype == np.float32 and np.array_equal(as_float.astype(np.int64), many)


def test_an_interpolating_pipeline_is_refused(typed_store):
    sample = typed_store[typed_store.ids[0]]
    # Ids 1000 apart, so a blend of two neighbours is no id of the image.
    store = {"spread": Sample("spread", sample.image, sample.instances * 1000, None)}
    smearing = A.Compose([A.Rotate(limit=(33, 33), mask_interpolation=cv2.INTER_LINEAR, p=1.0)])
    dataset = SegmentationDataset(store, ["spread"], 48, transform=smearing, layout=LAYOUTS["contour"])
    with pytest.raises(ConfigError, match="spread: the augmentation pipeline made instance ids") as caught:
        dataset[0]
    assert "\n" not in str(caught.value)
    nearest = A.Compose([A.Rotate(limit=(33, 33), p=1.0)])
    assert SegmentationDataset(store, ["spread"], 48, transform=nearest, layout=LAYOUTS["contour"])[0][1].any()


def test_a_type_head_on_a_store_without_types_is_a_one_line_error(tmp_path):
    store = write_store(tmp_path / "plain.h5", n=1, classes=False)
    dataset = SegmentationDataset(store, store.ids, 32, layout=LAYOUTS["hv+types"])
    with pytest.raises(DataFormatError, match=r"plain\.h5/img0: training.type_head needs a nucleus type map"):
        dataset[0]
    with pytest.raises(DataFormatError) as caught:
        dataset[0]
    assert "\n" not in str(caught.value)


def test_mask_preprocessing_only_goes_with_the_binary_target(typed_store):
    with pytest.raises(ConfigError, match="training.mask_preprocessing: 'boundary_fill' makes a binary mask"):
        SegmentationDataset(typed_store, typed_store.ids, 32, mask_preprocessing="boundary_fill", layout=LAYOUTS["hv"])
    # Binary with a type head keeps the preprocessed mask, types appended.
    dataset = SegmentationDataset(
        typed_store, typed_store.ids, 48, mask_preprocessing="boundary_fill", layout=LAYOUTS["binary+types"]
    )
    plain = SegmentationDataset(typed_store, typed_store.ids, 48, mask_preprocessing="boundary_fill")
    target = dataset[0][1]
    assert torch.equal(target[:1], plain[0][1])
    np.testing.assert_array_equal(target[1].numpy(), typed_store[typed_store.ids[0]].classes)


# -- losses -------------------------------------------------------------------------------------------------


def _logits_and_target(layout: OutputLayout, n=2, size=12, seed=0):
    """Random logits and a valid packed target (from random touching discs and types) for `layout`."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, layout.channels, size, size, generator=generator)
    rng = np.random.default_rng(seed)
    targets = []
    for _ in range(n):
        _, instances, classes = scene(rng, (size, size))
        targets.append(packed_target(layout.target, instances, classes if layout.type_classes else None))
    return logits, torch.from_numpy(np.stack(targets))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    """Over axis 1, in float64."""
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _cross_entropy(logits: torch.Tensor, index: torch.Tensor) -> float:
    """Mean over pixels of -log softmax at the true class, by hand in float64."""
    logp = _log_softmax(logits.double().numpy())
    picked = np.take_along_axis(logp, index.long().numpy()[:, None], axis=1)
    return float(-picked.mean())


def _dice(logits: torch.Tensor, index: torch.Tensor, classes, smooth=1.0) -> float:
    """1 - mean over images and `classes` of (2 sum pg + s) / (sum p + sum g + s), by hand in float64."""
    probs = np.exp(_log_softmax(logits.double().numpy()))
    index = index.long().numpy()
    scores = []
    for k in range(probs.shape[0]):
        for c in classes:
            p, g = probs[k, c], (index[k] == c).astype(float)
            scores.append((2 * (p * g).sum() + smooth) / (p.sum() + g.sum() + smooth))
    return 1 - float(np.mean(scores))


def _msge(pred: np.ndarray, true: np.ndarray, focus: np.ndarray) -> float:
    """HoVer-Net's MSGE by hand: a 5 x 5 kernel of dx / (dx^2 + dy^2), correlated with zero padding."""
    kx, ky = np.zeros((5, 5)), np.zeros((5, 5))
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            if dx or dy:
                kx[dy + 2, dx + 2] = dx / (dx * dx + dy * dy)
                ky[dy + 2, dx + 2] = dy / (dx * dx + dy * dy)
    total = 0.0
    for k in range(pred.shape[0]):
        for channel, kernel in ((0, kx), (1, ky)):
            grad = [ndimage.correlate(m[k, channel].astype(float), kernel, mode="constant") for m in (pred, true)]
            total += (focus[k] * (grad[0] - grad[1]) ** 2).sum()
    return total / (2 * focus.sum())


def test_sobel_kernels_are_hovernets_and_point_along_columns_and_rows():
    kx3, ky3 = sobel_kernels(3)
    sobel = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 2
    assert torch.equal(kx3, sobel) and torch.equal(ky3, sobel.T)
    kx, ky = sobel_kernels()
    assert kx.shape == (5, 5) and kx[2, 4] == 0.5 and kx[0, 4] == 0.25 and kx[2, 2] == 0 and torch.equal(ky, kx.T)


def test_contour_loss_terms_match_hand_computed_values():
    layout = LAYOUTS["contour"]
    logits, target = _logits_and_target(layout)
    loss = build_target_loss(layout, "bce")  # the configured loss does not enter a contour loss
    terms = loss.terms(logits, target)
    assert set(terms) == {"ce", "dice"}
    assert terms["ce"].item() == pytest.approx(_cross_entropy(logits, target[:, 0]), rel=1e-5)
    assert terms["dice"].item() == pytest.approx(_dice(logits, target[:, 0], [1, 2]), rel=1e-5)
    assert loss(logits, target).item() == pytest.approx(terms["ce"].item() + terms["dice"].item(), rel=1e-6)


@pytest.mark.parametrize("foreground_loss", ["dice", "bce_dice"])
def test_hv_loss_terms_match_hand_computed_values(foreground_loss):
    layout = LAYOUTS["hv"]
    logits, target = _logits_and_target(layout, size=16)
    loss = build_target_loss(layout, foreground_loss)
    terms = loss.terms(logits, target)
    assert set(terms) == {"foreground", "mse", "msge"}
    # The configured loss on the foreground logit, as a binary model would get it.
    assert torch.equal(terms["foreground"], build_loss(foreground_loss)(logits[:, :1], target[:, :1]))
    pred, true = logits[:, 1:3].double().numpy(), target[:, 1:3].double().numpy()
    assert terms["mse"].item() == pytest.approx(((pred - true) ** 2).mean(), rel=1e-5)
    focus = target[:, 0].numpy() > 0.5
    assert terms["msge"].item() == pytest.approx(_msge(pred, true, focus), rel=1e-5)
    assert TERM_WEIGHTS == {"msge": 2.0}  # HoVer-Net's lambda_b
    total = terms["foreground"] + terms["mse"] + 2 * terms["msge"]
    assert loss(logits, target).item() == pytest.approx(total.item(), rel=1e-6)


def test_msge_vanishes_for_exact_and_offset_maps_and_without_foreground():
    layout = LAYOUTS["hv"]
    logits, target = _logits_and_target(layout, size=16)
    loss = build_target_loss(layout)
    exact = loss.terms(torch.cat([logits[:, :1], target[:, 1:3]], 1), target)
    assert exact["mse"].item() == 0.0 and exact["msge"].item() == 0.0
    # A constant offset: MSE sees it everywhere; gradients differ only where the 5 x 5 kernel meets the zero
    # padding, so with foreground kept 2 px off the image edge MSGE is 0.
    offset = torch.cat([logits[:, :1], target[:, 1:3] + 0.5], 1)
    assert loss.terms(offset, target)["mse"].item() == pytest.approx(0.25, rel=1e-5)
    inner = target.clone()
    edge = torch.ones(inner.shape[0], 16, 16, dtype=torch.bool)
    edge[:, 2:-2, 2:-2] = False
    inner[:, 0][edge] = 0.0
    assert inner[:, 0].sum() > 0
    assert loss.terms(offset, inner)["msge"].item() == pytest.approx(0.0, abs=1e-10)
    # No foreground at all: MSGE is 0, not NaN.
    assert loss.terms(logits, torch.zeros_like(target))["msge"].item() == 0.0


@pytest.mark.parametrize("name", ["binary+types", "contour+types", "hv+types"])
def test_type_head_terms_match_hand_computed_values(name):
    layout = LAYOUTS[name]
    logits, target = _logits_and_target(layout, size=14, seed=3)
    loss = build_target_loss(layout, "bce_dice")
    terms = loss.terms(logits, target)
    types, index = logits[:, layout.types], target[:, -1]
    assert types.shape[1] == TYPES
    assert terms["type_ce"].item() == pytest.approx(_cross_entropy(types, index), rel=1e-5)
    assert terms["type_dice"].item() == pytest.approx(_dice(types, index, range(TYPES)), rel=1e-5)
    # The target part is what a model without a type head gets.
    plain = build_target_loss(OutputLayout(layout.target), "bce_dice")
    base = plain.terms(logits[:, : layout.target_channels].contiguous(), target[:, :-1])
    for key, value in base.items():
        assert terms[key].item() == pytest.approx(value.item(), rel=1e-6)
    expected = sum(TERM_WEIGHTS.get(k, 1.0) * v for k, v in terms.items())
    assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_multiclass_dice_of_a_confident_correct_prediction_is_zero():
    index = torch.tensor([[[0, 1], [2, 1]]])
    logits = 50.0 * F.one_hot(index, 3).permute(0, 3, 1, 2).float()
    assert multiclass_dice_loss(logits, index).item() == pytest.approx(0.0, abs=1e-6)
    assert multiclass_dice_loss(-logits, index, [1, 2]).item() > 0.5


@pytest.mark.parametrize("name", ["dice", "dice_squared", "bce", "bce_dice"])
def test_the_binary_target_loss_is_the_configured_loss_bit_for_bit(name):
    logits, target = _logits_and_target(LAYOUTS["binary"], size=16)
    assert torch.equal(build_target_loss(LAYOUTS["binary"], name)(logits, target), build_loss(name)(logits, target))
    assert torch.equal(build_target_loss(loss=name)(logits, target[:, 0]), build_loss(name)(logits, target[:, 0]))


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_shape_mismatches_are_refused_with_the_expected_shape(name):
    layout = LAYOUTS[name]
    logits, target = _logits_and_target(layout, size=8)
    loss = build_target_loss(layout)
    with pytest.raises(ValueError, match=rf"takes \(N, {layout.channels}, H, W\)"):
        loss(logits[:, :-1], target)
    with pytest.raises(ValueError, match="target shape .* does not match logits"):
        loss(logits, target[..., :-1])
    with pytest.raises(ConfigError, match="training.loss: 'focal'"):
        build_target_loss(layout, "focal")


@pytest.mark.parametrize("name", ["contour+types", "hv+types"])
def test_half_precision_and_autocast_give_the_float32_loss(name):
    layout = LAYOUTS[name]
    logits, target = _logits_and_target(layout, size=16)
    logits = logits.bfloat16().float()  # representable in bfloat16, so the cast below loses nothing
    loss = build_target_loss(layout, "bce_dice")
    reference = loss(logits, target)
    half = loss(logits.bfloat16(), target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = loss(logits, target)
    assert half.dtype == autocast.dtype == torch.float32
    assert half.item() == pytest.approx(reference.item(), rel=1e-6)
    assert autocast.item() == pytest.approx(reference.item(), rel=1e-6)


@pytest.mark.parametrize("name", ["contour", "hv", "binary+types", "hv+types"])
def test_a_one_conv_model_overfits_one_image(name):
    layout = LAYOUTS[name]
    rng = np.random.default_rng(2)
    image, instances, classes = scene(rng, (32, 32))
    x = to_tensor(image, "unit")[None]
    y = torch.from_numpy(packed_target(layout.target, instances, classes if layout.type_classes else None))[None]
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, layout.channels, 5, padding=2)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    loss_fn = build_target_loss(layout, "bce_dice")
    first = {k: v.item() for k, v in loss_fn.terms(model(x), y).items()}
    for _ in range(30):
        optimiser.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimiser.step()
    last = {k: v.item() for k, v in loss_fn.terms(model(x), y).items()}
    assert sum(last.values()) < 0.8 * sum(first.values()), (first, last)
    for key in ("ce", "type_ce", "mse"):  # the terms a linear model can surely reduce
        if key in first:
            assert last[key] < first[key], (key, first, last)


# -- training -----------------------------------------------------------------------------------------------


def test_batch_counts_count_nucleus_pixels_for_every_target():
    # Two pixels per class in a 2 x 4 image; truth: contour classes 0, 1, 2, 2 | 0, 0, 1, 2.
    truth = torch.tensor([[[[0.0, 1, 2, 2], [0, 0, 1, 2]]]])
    # Contour prediction: background, interior, boundary, background | interior, background, boundary, interior.
    predicted = torch.tensor([[0, 1, 2, 0], [1, 0, 2, 1]])
    logits = 10.0 * F.one_hot(predicted, 3).permute(2, 0, 1)[None].float()
    # nucleus predicted: F T T F | T F T T; truth: F T T T | F F T T -> tp 4, fp 1, fn 1, tn 2
    counts = batch_counts(logits, truth, 0.5, LAYOUTS["contour"])
    assert counts.tolist() == [[4, 1, 1, 2]]
    # hv: only the foreground logit counts; the h/v channels do not.
    fg = torch.where(predicted > 0, 5.0, -5.0)[None, None]
    hv_logits = torch.cat([fg, 100 * torch.randn(1, 2, 2, 4)], 1)
    hv_truth = torch.cat([(truth > 0).float(), torch.zeros(1, 2, 2, 4)], 1)
    assert batch_counts(hv_logits, hv_truth, 0.5, LAYOUTS["hv"]).tolist() == [[4, 1, 1, 2]]
    # A type head changes nothing.
    typed = torch.cat([logits, torch.randn(1, TYPES, 2, 4)], 1)
    assert batch_counts(typed, torch.cat([truth, truth], 1), 0.5, LAYOUTS["contour+types"]).tolist() == [[4, 1, 1, 2]]
    # Binary as before: sigmoid(logit) > threshold vs target > 0.5, with or without a channel axis.
    binary = batch_counts(fg, (truth > 0).float(), 0.5)
    assert binary.tolist() == [[4, 1, 1, 2]] and torch.equal(binary, batch_counts(fg, (truth[:, 0] > 0).float(), 0.5))


@pytest.mark.parametrize("name", ["contour", "hv", "binary+types", "hv+types"])
def test_trainer_fits_every_target(typed_store, tmp_path, name):
    layout = LAYOUTS[name]
    seed_everything(3)
    ids = typed_store.ids
    train = SegmentationDataset(
        typed_store, ids[:3], 32, policy="tile", transform=build_pipeline({}), random_tiles=True, layout=layout
    )
    val = SegmentationDataset(typed_store, ids[3:], 32, policy="tile", layout=layout)
    loaders = (
        make_loader(train, 3, shuffle=True, seed=3, workers=0, pin_memory=False),
        make_loader(val, 2, shuffle=False, seed=3, workers=0, pin_memory=False),
    )
    settings = TrainSettings(epochs=2, batch_size=3, lr=1e-3, loss="bce_dice", seed=3, layout=layout, identity={"t": 1})
    model = build_model("resunet", classes=layout.channels)
    trainer = SegmentationTrainer(model, settings, setup_device("cpu", 1), tmp_path, progress=False)
    history = trainer.fit(*loaders)
    assert list(history["epoch"]) == [1, 2]
    numbers = history.drop(columns=["seconds"]).to_numpy(float)
    assert np.isfinite(numbers).all()
    assert history[["train_dice", "val_dice", "val_iou"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (tmp_path / "best.pt").exists() and trainer.best["epoch"] in (1, 2)
    summary = json.loads(json.dumps(trainer.summary()))
    assert summary["settings"]["layout"] == {"target": layout.target, "type_classes": layout.type_classes}
    with torch.no_grad():
        maps = heads.probabilities(trainer.model(next(iter(loaders[1]))[0]), layout)
    assert maps.shape[1] == layout.channels


def test_hv_with_type_head_trains_on_the_converted_synthetic_pannuke_store(pannuke_store, tmp_path):
    store = Store(pannuke_store)
    layout = LAYOUTS["hv+types"]
    seed_everything(4)
    common = {"policy": "tile", "layout": layout, "seed": 4}
    train = SegmentationDataset(store, store.ids[:4], 64, transform=build_pipeline({}), random_tiles=True, **common)
    val = SegmentationDataset(store, store.ids[4:6], 64, **common)
    _, target, _ = train[0]
    assert target.shape == (4, 64, 64) and set(np.unique(target[3].numpy())) <= set(range(TYPES))
    np.testing.assert_array_equal(target[3].numpy() > 0, target[0].numpy() > 0)  # a type on every nucleus pixel
    loaders = (
        make_loader(train, 2, shuffle=True, seed=4, workers=0, pin_memory=False),
        make_loader(val, 2, shuffle=False, seed=4, workers=0, pin_memory=False),
    )
    settings = TrainSettings(epochs=1, batch_size=2, lr=1e-3, loss="bce_dice", seed=4, layout=layout, identity={"p": 1})
    model = build_model("resunet", classes=layout.channels)
    history = SegmentationTrainer(model, settings, setup_device("cpu", 1), tmp_path, progress=False).fit(*loaders)
    assert np.isfinite(history[["train_loss", "val_loss", "val_dice"]].to_numpy()).all()
    assert 0 <= history["val_dice"].iloc[0] <= 1


@pytest.mark.parametrize("name", ["binary", "contour", "hv+types"])
def test_configured_loss_weights_replace_term_by_term(name):
    layout = LAYOUTS[name]
    logits, target = _logits_and_target(layout, size=14, seed=5)
    terms = build_target_loss(layout, "bce_dice").terms(logits, target)
    assert set(terms) == set(target_terms(layout)) and set(terms) <= set(LOSS_TERMS)
    first = target_terms(layout)[0]
    weighted = build_target_loss(layout, "bce_dice", {first: 3.0})
    expected = sum((3.0 if k == first else TERM_WEIGHTS.get(k, 1.0)) * v for k, v in terms.items())
    assert weighted(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_loss_weight_for_a_term_the_target_lacks_or_below_zero_is_refused():
    with pytest.raises(ConfigError, match=r"^training.loss_weights \(target binary\): 'msge' is not valid; "):
        build_target_loss(LAYOUTS["binary"], "dice", {"msge": 1.0})
    with pytest.raises(ConfigError, match=r"^training.loss_weights.foreground: -1 is not valid; use a number >= 0$"):
        build_target_loss(LAYOUTS["hv"], "dice", {"foreground": -1})
