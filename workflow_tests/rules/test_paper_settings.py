"""The options behind config/paper.yaml's paper settings.

Classic U-Net study: 0-1 input scaling, boundary extraction + region filling of the masks, named test
images (split `force_test`, per-image table rows). Residual U-Net study: the Gaussian pre-filter at
inference as at training, the stage-1 test set as the test split (`test_source_set`). PanNuke study:
Dice with squared terms (equation 4), L2 and added layers per model section, decoder dropout of both U-Nets.
"""

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, Recorder
from snakemake.utils import validate

from nucleiflow.errors import ConfigError
from nucleiflow.models import build_model, l2_parameters, l2_penalty
from nucleiflow.models.registry import CONV_LAYERS
from nucleiflow.segmentation.inference.predictor import InferenceConfig, Predictor
from nucleiflow.segmentation.reports.experiment import per_image_table
from nucleiflow.segmentation.training.data import SegmentationDataset, boundary_fill, preprocess_mask, to_tensor
from nucleiflow.segmentation.training.losses import build_loss, soft_dice_loss, squared_dice_loss
from nucleiflow.splits import make_split
from nucleiflow.store import Sample
from nucleiflow.workflow.checks import check_config

# ---------------------------------------------------------------- classic U-Net study


def _ring(size=21, outer=8, inner=4):
    yy, xx = np.mgrid[:size, :size] - size // 2
    r = np.hypot(yy, xx)
    return (r <= outer) & (r > inner), r <= inner


def test_boundary_fill_fills_a_nucleus_hole_but_not_background_between_nuclei():
    ring, hole = _ring()
    one = ring.astype(np.int32)
    assert boundary_fill(one)[hole].all() and boundary_fill(one).sum() == (ring | hole).sum()
    # The same ring as two nuclei (left and right halves): the enclosed background is no nucleus's hole.
    two = np.where(ring, np.where(np.arange(21)[None, :] < 10, 1, 2), 0).astype(np.int32)
    filled = boundary_fill(two)
    assert not filled[hole].any()
    assert np.array_equal(filled, ring)
    assert np.array_equal(preprocess_mask(two, "none"), (two > 0).astype(np.uint8))
    with pytest.raises(ConfigError, match="training.mask_preprocessing: 'erode'"):
        preprocess_mask(two, "erode")


def test_dataset_targets_use_the_mask_preprocessing():
    ring, hole = _ring(size=32, outer=10, inner=5)
    sample = Sample("a", np.full((32, 32, 3), 100, np.uint8), ring.astype(np.int32), None)
    plain = SegmentationDataset({"a": sample}, ["a"], 32)[0][1][0].numpy().astype(bool)
    filled = SegmentationDataset({"a": sample}, ["a"], 32, mask_preprocessing="boundary_fill")[0][1][0]
    assert not plain[hole].any() and filled.numpy().astype(bool)[hole].all()


def test_unit_input_scaling_is_plain_zero_to_one():
    image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5
    unit = to_tensor(image, "unit")
    assert torch.allclose(unit, torch.from_numpy(image.transpose(2, 0, 1) / 255.0).float())
    assert not torch.allclose(to_tensor(image), unit)  # the default is unchanged: ImageNet statistics
    with pytest.raises(ConfigError, match="training.input_scaling"):
        to_tensor(image, "minmax")


def _meta(n=40, **extra):
    rows = [{"image_id": f"i{k:02d}", "n_nuclei": 5, "content_hash": f"h{k}"} for k in range(n)]
    frame = pd.DataFrame(rows)
    for key, values in extra.items():
        frame[key] = values
    return frame


def test_force_test_puts_named_ids_in_test_and_skips_absent_ones():
    meta = _meta()
    meta.loc[meta["image_id"] == "i33", "content_hash"] = "h5"  # an exact duplicate of i05
    spec = {"scheme": "proportions", "fractions": {"train": 0.8, "val": 0.1, "test": 0.1}}
    plain = make_split(meta, spec, seed=1)
    assert plain.set_index("image_id").loc[["i05", "i07"], "split"].tolist() != ["test", "test"]
    forced = make_split(meta, {**spec, "force_test": ["i05", "i07", "absent"]}, seed=1).set_index("image_id")
    assert forced.loc[["i05", "i07", "i33"], "split"].eq("test").all()  # the duplicate follows i05
    assert len(forced) == 40 and "absent" not in forced.index


def test_test_source_set_tests_on_that_release_and_source_sets_restrict_the_pool():
    meta = _meta(source_set=["stage1_train"] * 30 + ["stage1_test"] * 10)
    spec = {"scheme": "proportions", "fractions": {"train": 0.9, "val": 0.1, "test": 0}}
    manifest = make_split(meta, {**spec, "test_source_set": "stage1_test"}, seed=3).merge(meta, on="image_id")
    assert (manifest["split"] == "test").sum() == 10
    assert manifest.groupby("source_set")["split"].agg(set).to_dict() == {
        "stage1_test": {"test"},
        "stage1_train": {"train", "val"},
    }
    with pytest.raises(ConfigError, match=r"split.test_source_set: 'stage2' .*stage1_test, stage1_train"):
        make_split(meta, {**spec, "test_source_set": "stage2"}, seed=3)
    only_train = make_split(
        meta, {**spec, "fractions": {"train": 0.8, "test": 0.2}, "source_sets": ["stage1_train"]}, 3
    )
    assert len(only_train) == 30 and set(only_train["image_id"]) == set(meta["image_id"][:30])


def test_per_image_table_accepts_a_list_of_ids():
    per_image = pd.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(6)],
            "subset": "test",
            "model": "m",
            **{m: np.linspace(0.5, 1, 6) for m in ("dice", "acc", "f1", "iou", "precision", "sensitivity")},
        }
    )
    table = per_image_table(per_image, ["i4", "i1", "absent"])
    assert sorted(table["Image"]) == ["i1", "i4"]
    assert len(per_image_table(per_image, 3)) == 3


# ---------------------------------------------------------------- residual U-Net study


@pytest.mark.parametrize("policy", ["resize", "tile"])
def test_inference_sees_the_prefiltered_input_of_training(policy):
    from nucleiflow.device import setup_device

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    sample = Sample("a", image, np.zeros((48, 48), np.int32), None)
    size = 48 if policy == "tile" else 32
    trained = SegmentationDataset({"a": sample}, ["a"], size, policy=policy, prefilter_sigma=1.5)[0][0]
    model, setup = Recorder(), setup_device("cpu")
    Predictor(model, InferenceConfig(size, policy, 4, prefilter_sigma=1.5), setup).predict_maps(image)
    assert torch.equal(model.seen[0], trained)
    unfiltered = SegmentationDataset({"a": sample}, ["a"], size, policy=policy)[0][0]
    assert not torch.equal(model.seen[0], unfiltered)  # the pre-filter changes the input


# ---------------------------------------------------------------- PanNuke study


def test_dice_squared_is_equation_4():
    logits = torch.zeros(1, 1, 2, 2)  # p = 0.5 everywhere
    target = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    # sum(p*g) = 1.5, sum(p^2) = 1.0, sum(g^2) = 3: 1 - 2 * 1.5 / 4 = 0.25 (soft Dice: 1 - 3 / 5 = 0.4).
    assert squared_dice_loss(logits, target, smooth=0.0).item() == pytest.approx(0.25)
    assert soft_dice_loss(logits, target, smooth=0.0).item() == pytest.approx(0.4)
    assert build_loss("dice_squared")(logits, target).item() == pytest.approx(1 - 4 / 5)  # smooth 1


def test_l2_scope_all_conv_covers_every_kernel_added_blocks_only_the_head():
    model = build_model("unet", "resnet18", extra_blocks=1)
    every = [m.weight for m in model.modules() if isinstance(m, CONV_LAYERS)]
    head = [m.weight for m in model.segmentation_head.modules() if isinstance(m, CONV_LAYERS)]
    assert {id(p) for p in l2_parameters(model, "all_conv")} == {id(p) for p in every}
    assert {id(p) for p in l2_parameters(model)} == {id(p) for p in head}
    assert id(model.encoder.conv1.weight) in {id(p) for p in l2_parameters(model, "all_conv")}
    expected = 0.01 * sum(float(p.detach().square().sum()) for p in every)
    assert l2_penalty(model, 0.01, "all_conv").item() == pytest.approx(expected, rel=1e-5)
    custom = build_model("classic_unet")
    assert len(l2_parameters(custom, "all_conv")) == len(l2_parameters(custom, "added_blocks"))
    with pytest.raises(ConfigError, match="regularization.l2_scope: 'encoder'"):
        l2_parameters(model, "encoder")


@pytest.mark.parametrize(
    "arch, rate, expected",
    [
        ("unet", [0.2, 0.5], [0.5, 0.5, 0.2, 0.2, 0.2]),
        ("deeplabv3plus", [0.2, 0.5], [0.5, 0.2]),
        ("unet", 0.3, [0.3] * 5),
    ],
)
def test_decoder_dropout_rates_land_in_their_stages(arch, rate, expected):
    model = build_model(arch, "resnet18", decoder_dropout=rate)
    assert [d.p for d in model.decoder_dropout] == expected
    if arch == "deeplabv3plus":  # smp's nn.Sequential stages are left as they are
        assert not any(isinstance(m, torch.nn.Dropout2d) for m in model.decoder.aspp.modules())
    with pytest.raises(ConfigError, match="decoder_dropout"):
        build_model(arch, "resnet18", decoder_dropout=[0.2, 0.5, 0.7])


def test_decoder_dropout_hooks_apply_each_stage_rate():
    model = build_model("unet", "resnet18", decoder_dropout=[0.0, 0.999]).train()
    outputs = []
    for block in model.decoder.blocks:
        block.register_forward_hook(lambda _m, _i, out: outputs.append(out))
    model(torch.randn(1, 3, 64, 64))
    # Hooks run in order: each recorded output is after the stage's own dropout.
    assert (outputs[0] == 0).float().mean() > 0.9 and (outputs[-1] == 0).float().mean() < 0.9


# ---------------------------------------------------------------- the paper config


def test_paper_config_uses_the_papers_settings():
    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    validate(config, str(REPO / "schemas" / "config.schema.yaml"))
    check_config(config)
    seg, dsb = config["segmentation"], config["datasets"]["dsb2018"]
    assert seg["dsb_classic_unet"]["training"]["loss"] == "bce" and seg["dsb_classic_unet"]["training"]["epochs"] == 35
    assert dsb["splits"]["classic"]["force_test"] == seg["dsb_classic_unet"]["per_image_rows"]
    assert seg["dsb_resunet_original"]["training"]["prefilter_sigma"] == 1.5
    assert dsb["splits"]["original"]["test_source_set"] == "stage1_test"
    assert {"stage1_test.zip", "stage1_solution.csv"} <= set(dsb["files"])
    assert seg["pannuke_paper"]["augmentation"] is None and seg["pannuke_paper"]["training"]["loss"] == "dice_squared"
    reg = config["regularization"]
    assert reg["unet_resnet50"]["decoder_dropout"] == [0.2, 0.5]
    # Section 5.2's seen-data comparison needs the original split's train and val evaluated; Table 2 only test.
    assert {"train", "val", "test"} <= set(seg["dsb_resunet_original"]["evaluate_splits"])
    assert seg["dsb_resunet_80_10_10"]["evaluate_splits"] == seg["dsb_resunet_70_20_10"]["evaluate_splits"] == ["test"]


def test_paper_regularization_follows_each_models_own_section():
    reg = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())["regularization"]
    # L2: "all convolutional layers" only in Section 3.1 (U-Net/ResNet-50); the added layers elsewhere.
    assert {name: cell["l2_scope"] for name, cell in reg.items()} == {
        "unet_resnet50": "all_conv",
        "unet_effnetb4": "added_blocks",
        "deeplab_resnet50": "added_blocks",
        "deeplab_effnetb4": "added_blocks",
    }
    # Added layers: one double convolution (two conv layers) per model, as Sections 3.1, 3.2 and 3.4 say.
    assert {cell["extra_blocks"] for cell in reg.values()} == {1}
    model = build_model("deeplabv3plus", "resnet18", extra_blocks=reg["deeplab_effnetb4"]["extra_blocks"])
    added = [m for m in model.segmentation_head.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(added) == 2  # "two additional convolutional layers"
    # Dropout: Table 1 on the added layers for all four, and both U-Nets also get their section's decoder rates.
    assert [reg[n]["dropout"] for n in ("unet_resnet50", "unet_effnetb4", "deeplab_resnet50", "deeplab_effnetb4")] == [
        0.7,
        0.5,
        0.7,
        0.25,
    ]
    assert reg["unet_effnetb4"]["decoder_dropout"] == 0.25 and reg["unet_resnet50"]["decoder_dropout"] == [0.2, 0.5]
