"""Nuclei as objects: the PanNuke table, the cross-validation summary, its rules, and explanations per target.

The tables are checked on hand-made per-image results whose per-tissue means,
skipped images and fold statistics are known by hand; the published rows
against the reference file; the rules by a dry run of a config with `folds`;
the explanations of a contour model by what they explain (the nucleus logit).
"""

from __future__ import annotations

import math
import re
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, SNAKEMAKE, RegionModel
from snakemake.utils import validate

from nucleiflow.errors import DataFormatError
from nucleiflow.reporting import reference_results as R
from nucleiflow.segmentation.reports import instances as I

NAN = float("nan")
UNET = {"arch": "unet", "encoder": "resnet18", "reg": "none"}
RESUNET = {"arch": "resunet", "encoder": "none", "reg": "none"}
TYPE_COLUMNS = [f"pq_class_{c}" for c in range(1, 6)]


def per_image(rows, **pixel) -> pd.DataFrame:
    """Per-image results: rows of (tissue, bpq, mpq, pq_class_1..5), pixel metrics constant unless given."""
    frame = pd.DataFrame(rows, columns=["tissue", "bpq", "mpq", *TYPE_COLUMNS])
    frame.insert(0, "image_id", [f"img{i}" for i in range(len(frame))])
    for metric in I.CV_PIXEL_METRICS:
        frame[metric] = pixel.get(metric, 0.5)
    return frame


# Breast: two images; Colon: one image without nuclei (skipped) and one scored; Liver: only a skipped image.
TYPED = [
    ("Breast", 0.6, 0.5, 0.4, NAN, 0.6, NAN, NAN),
    ("Breast", 0.8, 0.7, 0.8, 0.6, NAN, NAN, NAN),
    ("Colon", NAN, NAN, NAN, NAN, NAN, NAN, NAN),
    ("Colon", 0.5, 0.3, NAN, 0.3, NAN, NAN, NAN),
    ("Liver", NAN, NAN, NAN, NAN, NAN, NAN, NAN),
]


def untyped(rows):
    """The same images scored by a model without a type head: mPQ and class PQ are NaN."""
    return [(tissue, bpq, *([NAN] * 6)) for tissue, bpq, *_ in rows]


# ---------------------------------------------------------------- the PanNuke table


def test_type_names_are_the_pannuke_class_names():
    from nucleiflow.datasets.pannuke import CLASS_NAMES

    assert tuple(I.PANNUKE_TYPES.values()) == CLASS_NAMES[1:]


def test_pannuke_table_means_per_tissue_then_over_tissues_skipping_nan():
    table = I.pannuke_pq_table([per_image(TYPED), per_image(untyped(TYPED))], [UNET, RESUNET])
    typed = table[table["Model"] == "U-Net / ResNet-18 (none)"].set_index("Tissue")
    assert list(typed.index) == ["Breast", "Colon", "Liver", I.OVERALL]
    assert typed.loc["Breast", "bPQ"] == pytest.approx(0.7) and typed.loc["Breast", "mPQ"] == pytest.approx(0.6)
    # the image without nuclei is skipped, not scored 0
    assert typed.loc["Colon", "bPQ"] == pytest.approx(0.5) and typed.loc["Colon", "mPQ"] == pytest.approx(0.3)
    assert math.isnan(typed.loc["Liver", "bPQ"])  # nothing to score: left out of the mean over tissues
    assert typed.loc[I.OVERALL, "bPQ"] == pytest.approx((0.7 + 0.5) / 2)
    assert typed.loc[I.OVERALL, "mPQ"] == pytest.approx((0.6 + 0.3) / 2)
    assert list(typed["Images"]) == [2, 2, 1, 5]
    # per-class PQ: per tissue over its images with the class, overall over all images (not over tissues)
    assert typed.loc["Breast", "neoplastic PQ"] == pytest.approx(0.6)
    assert math.isnan(typed.loc["Colon", "neoplastic PQ"])
    assert typed.loc[I.OVERALL, "neoplastic PQ"] == pytest.approx(0.6)
    assert typed.loc[I.OVERALL, "inflammatory PQ"] == pytest.approx((0.6 + 0.3) / 2)
    assert typed.loc[I.OVERALL, "connective PQ"] == pytest.approx(0.6)
    assert math.isnan(typed.loc[I.OVERALL, "dead PQ"])
    plain = table[table["Model"] == "Residual U-Net (none)"].set_index("Tissue")
    assert plain.loc[I.OVERALL, "bPQ"] == pytest.approx(0.6)
    assert plain[["mPQ", *(f"{n} PQ" for n in I.PANNUKE_TYPES.values())]].isna().all().all()


def test_pannuke_table_is_written_with_blank_cells_for_a_model_without_type_head(tmp_path):
    paths = []
    for name, rows in (("typed", TYPED), ("plain", untyped(TYPED))):
        paths.append(tmp_path / f"{name}.csv")
        per_image(rows).to_csv(paths[-1], index=False)
    out = tmp_path / "tables" / "pannuke_pq.csv"
    I.write_pannuke_pq_table([str(p) for p in paths], [UNET, RESUNET], str(out), "exp")
    assert all(out.with_suffix(ext).exists() for ext in (".csv", ".md", ".tex"))
    written = pd.read_csv(out)
    assert len(written) == 8 and written["bPQ"].iloc[3] == pytest.approx(0.6)
    overall = next(
        line
        for line in out.with_suffix(".md").read_text().splitlines()
        if "Residual U-Net" in line and I.OVERALL in line
    )
    cells = [cell.strip() for cell in overall.strip("|").split("|")]
    assert float(cells[3]) == pytest.approx(0.6) and cells[4] == "" and set(cells[5:]) == {""}


def test_pannuke_table_needs_the_pannuke_columns():
    frame = per_image(TYPED).drop(columns=["tissue"])
    with pytest.raises(DataFormatError, match="tissue") as err:
        I.pannuke_pq_table([frame], [UNET])
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- cross-validation


def fold(dice, tissues, mpq=True) -> pd.DataFrame:
    """One fold's per-image results: Dice per image, bPQ per image by tissue {tissue: [bpq, ...]}."""
    rows = [(t, b, b - 0.1 if mpq else NAN, *([NAN] * 5)) for t, values in tissues.items() for b in values]
    frame = per_image(rows)
    frame["dice"] = dice
    return frame


# fold means of Dice: 0.6, 0.7, 0.8; fold bPQ (mean of the tissue means): 0.5, 0.6, 0.7, although the
# image means are 0.4333, 0.5667, 0.7: the benchmark's per-tissue averaging must be the one used.
FOLDS = {
    "official": fold([0.5, 0.7, 0.6], {"A": [0.2, 0.4], "B": [0.7]}),
    "official_rot2": fold([0.7, 0.7, 0.7], {"A": [0.4, 0.6], "B": [0.7]}),
    "official_rot3": fold([0.9, 0.7, 0.8], {"A": [0.7, 0.7], "B": [0.7]}),
}


def cv_inputs(models=(UNET,), untyped_models=()):
    frames, cells = [], []
    for name, frame in FOLDS.items():
        for model in models:
            frames.append(frame)
            cells.append({**model, "fold": name, "experiment": f"cv_{name}", "dataset": "pannuke"})
        for model in untyped_models:
            frames.append(frame.assign(mpq=NAN))
            cells.append({**model, "fold": name, "experiment": f"cv_{name}", "dataset": "pannuke"})
    return frames, cells


def test_fold_scores_use_the_benchmark_averaging_per_fold():
    scores = I.fold_scores(*cv_inputs())
    assert list(scores["fold"]) == list(FOLDS)
    np.testing.assert_allclose(scores["dice"], [0.6, 0.7, 0.8])
    np.testing.assert_allclose(scores["bpq"], [0.5, 0.6, 0.7])
    np.testing.assert_allclose(scores["mpq"], [0.4, 0.5, 0.6])


def test_mean_and_sample_std_across_folds_by_hand():
    summary = I.cross_validation_summary(I.fold_scores(*cv_inputs())).set_index("model")
    row = summary.loc["U-Net / ResNet-18 (none)"]
    assert row["folds"] == 3
    # mean 0.7; sample std sqrt(((-0.1)^2 + 0 + 0.1^2) / (3 - 1)) = 0.1 (the population std would be 0.0816)
    assert row["dice_mean"] == pytest.approx(0.7) and row["dice_std"] == pytest.approx(0.1)
    assert row["bpq_mean"] == pytest.approx(0.6) and row["bpq_std"] == pytest.approx(0.1)
    assert row["mpq_mean"] == pytest.approx(0.5) and row["mpq_std"] == pytest.approx(0.1)
    assert row["iou_std"] == pytest.approx(0.0)


def test_cross_validation_table_folds_summary_and_published_rows():
    table = I.cross_validation_table(I.fold_scores(*cv_inputs((UNET,), (RESUNET,))), published=True)
    assert list(table.columns) == ["Model", "Fold", "Dice", "IoU", "AJI", "PQ", "mAP", "bPQ", "mPQ", "Source"]
    unet = table[table["Model"] == "U-Net / ResNet-18 (none)"].set_index("Fold")
    assert list(unet.index) == [*FOLDS, "mean ± std (3 folds)"]
    assert unet.loc["official", "Dice"] == "0.6000"
    assert unet.loc["mean ± std (3 folds)", "Dice"] == "0.7000 ± 0.1000"
    assert unet.loc["mean ± std (3 folds)", "bPQ"] == "0.6000 ± 0.1000"
    plain = table[table["Model"] == "Residual U-Net (none)"].set_index("Fold")
    assert plain.loc["mean ± std (3 folds)", "mPQ"] == ""  # no type head
    published = table[table["Model"].str.endswith("(published)")].set_index("Model")
    assert published.loc["CellViT-SAM-H (published)", "bPQ"] == "0.6793"
    assert published.loc["CellViT-SAM-H (published)", "mPQ"] == "0.4980"
    assert published.loc["CellViT256 (published)", "bPQ"] == "0.6696"
    assert published.loc["CellViT256 (published)", "mPQ"] == "0.4846"
    assert (published["Dice"] == "").all()
    assert all(
        "Medical Image Analysis" in source and "inference_results.json" in source for source in published["Source"]
    )
    assert "HoVer-Net (published)" not in published.index  # its numbers could not be checked: left out
    assert (
        not I.cross_validation_table(I.fold_scores(*cv_inputs()), published=False)["Model"]
        .str.contains("published")
        .any()
    )


def test_cross_validation_outputs_are_written(tmp_path):
    frames, cells = cv_inputs((UNET,), (RESUNET,))
    paths = []
    for i, frame in enumerate(frames):
        paths.append(str(tmp_path / f"{i}.csv"))
        frame.to_csv(paths[-1], index=False)
    outputs = {
        "table": str(tmp_path / "tables" / "cross_validation.csv"),
        "folds": str(tmp_path / "tables" / "cross_validation_folds.csv"),
        "figure": str(tmp_path / "figures" / "cross_validation.png"),
    }
    I.write_cross_validation(paths, cells, outputs, "cv", published=True)
    for path in (*outputs.values(), outputs["table"].replace(".csv", ".md"), outputs["figure"].replace(".png", ".pdf")):
        assert (tmp_path / path).stat().st_size > 0
    folds = pd.read_csv(outputs["folds"])
    assert len(folds) == 6 and set(folds["fold"]) == set(FOLDS)
    assert "CellViT-SAM-H" in (tmp_path / "tables" / "cross_validation.md").read_text()


def test_fold_scores_without_pannuke_columns_have_no_bpq():
    frames, cells = cv_inputs()
    frames = [frame.drop(columns=["tissue", "bpq", "mpq"]) for frame in frames]
    scores = I.fold_scores(frames, cells)
    assert scores["bpq"].isna().all() and I.cv_metrics(scores) == list(I.CV_PIXEL_METRICS)


# ---------------------------------------------------------------- published results


def test_published_numbers_and_their_sources():
    reference = R.reference_results("pannuke").set_index(["method", "metric"])
    assert reference.loc[("CellViT-SAM-H", "bpq"), "mean"] == 0.6793
    assert reference.loc[("CellViT-SAM-H", "mpq"), "mean"] == 0.4980
    assert reference.loc[("CellViT256", "bpq"), "mean"] == 0.6696
    assert reference.loc[("CellViT256", "mpq"), "mean"] == 0.4846
    assert reference["source"].str.len().min() > 50
    methods = {m["method"]: m for m in R.load_reference_results()["pannuke"]["methods"]}
    assert all(v["mean"] is None and v["note"] for v in methods["HoVer-Net"]["values"].values())


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ({"mean": None}, "null mean: say why"),
        ({"mean": 0.5}, "needs a non-empty 'source'"),
        ({"mean": "0.5", "source": "paper"}, "not a number"),
        ({"mean": 0.5, "source": "paper", "digits": 4}, "unknown field"),
    ],
)
def test_reference_file_checks_are_one_line(value, pattern):
    document = {
        "format_version": 1,
        "benchmarks": {"b": {"metrics": ["bpq"], "methods": [{"method": "M", "paper": "P", "values": {"bpq": value}}]}},
    }
    with pytest.raises(DataFormatError, match=pattern) as err:
        R._check_document(document)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- the rules


def cv_config() -> dict:
    """The tiny config with a three-fold cross-validation over PanNuke's fold rotations."""
    config = yaml.safe_load((REPO / "workflow_tests" / "config_tiny.yaml").read_text())
    config["datasets"]["pannuke"]["splits"] |= {
        # the PanNuke benchmark's rotations: train, validate, test on folds (1,2,3), (2,3,1), (3,1,2)
        "official_rot2": {"scheme": "folds", "train": [2], "val": [3], "test": [1]},
        "official_rot3": {"scheme": "folds", "train": [3], "val": [1], "test": [2]},
    }
    config["segmentation"]["pannuke_cv"] = {
        "dataset": "pannuke",
        "folds": ["official", "official_rot2", "official_rot3"],
        "models": [{"arch": "unet", "encoder": "resnet18"}],
        "training": {"epochs": 1, "batch_size": 2, "lr": 0.001, "loss": "dice", "input_size": 64},
        "evaluate_splits": ["test"],
    }
    return config


def test_instance_targets_of_a_config_with_folds():
    from nucleiflow.workflow.cells import (
        cross_validation_cells,
        cross_validation_groups,
        cross_validation_published,
        expand_folds,
    )
    from nucleiflow.workflow.targets import instance_targets

    config = cv_config()
    validate(config, str(REPO / "schemas" / "config.schema.yaml"))
    expand_folds(config)
    groups = cross_validation_groups(config)
    assert groups == {"pannuke_cv": ["pannuke_cv_official", "pannuke_cv_official_rot2", "pannuke_cv_official_rot3"]}
    targets = instance_targets(config)
    assert "results/pannuke/pannuke_cv/tables/cross_validation.csv" in targets
    assert "results/pannuke/pannuke_cv/figures/cross_validation.png" in targets
    # every PanNuke experiment that tests: the tiny one and each fold; DSB2018 has no PanNuke table
    assert sorted(t for t in targets if t.endswith("pannuke_pq.csv")) == [
        f"results/pannuke/{name}/tables/pannuke_pq.csv"
        for name in ("pannuke_cv_official", "pannuke_cv_official_rot2", "pannuke_cv_official_rot3", "pannuke_tiny")
    ]
    cells = cross_validation_cells(config, "pannuke_cv")
    assert [c["fold"] for c in cells] == ["official", "official_rot2", "official_rot3"]
    assert cross_validation_published(config, "pannuke_cv")


def test_dry_run_of_a_config_with_folds_plans_the_instance_rules(checkout, tmp_path):
    path = tmp_path / "config_cv.yaml"
    path.write_text(yaml.safe_dump(cv_config(), sort_keys=False))
    result = subprocess.run(
        [SNAKEMAKE, "-n", "--cores", "1", "--configfile", str(path)],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", output, flags=re.M))
    assert counts["cross_validation_table"] == "1"
    assert counts["pannuke_pq_table"] == "4"
    assert "results/pannuke/pannuke_cv/tables/cross_validation.csv" in output
    # each fold is tested on its own test fold
    for fold in ("official", "official_rot2", "official_rot3"):
        assert f"results/pannuke/pannuke_cv_{fold}/evaluation/unet/resnet18/none/test_per_image.csv" in output


# ---------------------------------------------------------------- explanations of instance targets

SIZE = 32


def test_contour_explanations_target_the_nucleus_logit():
    from nucleiflow.segmentation.analyses import explain as E
    from nucleiflow.segmentation.training.heads import OutputLayout, foreground_logit

    layout = OutputLayout("contour")
    region = torch.zeros(1, 1, SIZE, SIZE)
    region[..., 4:14, 18:28] = 1.0
    model = E.prepare_for_attribution(RegionModel(region, channels=3, silent=(0,)))
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    logits, prob, mask = E.target_mask(model, x, layout=layout)
    softmax = torch.softmax(logits, dim=1)
    torch.testing.assert_close(prob[:, 0], softmax[:, 1] + softmax[:, 2])  # nucleus = interior + boundary
    assert prob.shape == mask.shape == (1, 1, SIZE, SIZE) and mask.sum() > 0
    explained_model = E.ForegroundLogit(model, layout)
    cam = E.gradcam(explained_model, x, mask, model.features)[0]
    relevance, explained = E.lrp(explained_model, x, mask, "epsilon_plus")
    nucleus_logit = foreground_logit(logits, layout)
    assert explained[0] == pytest.approx(float((nucleus_logit * mask[:, 0]).sum()), rel=1e-5)
    assert explained[0] != pytest.approx(float((logits[:, 0] * mask[:, 0]).sum()), rel=1e-2)  # not channel 0
    inside = np.zeros((SIZE, SIZE), bool)
    inside[3:15, 17:29] = True  # the region and the 3x3 convolution's one-pixel border
    for name, heat in (("Grad-CAM", cam), ("LRP", relevance[0])):
        assert np.abs(heat).sum() > 0, f"{name} explained nothing"
        share = np.abs(heat[inside]).sum() / np.abs(heat).sum()
        assert share > 0.95, f"{name}: only {share:.1%} of the mass lies in the region"


def test_foreground_logit_wrapper_leaves_a_binary_model_unchanged():
    from nucleiflow.models.resunet import build_resunet
    from nucleiflow.segmentation.analyses import explain as E

    torch.manual_seed(0)
    model = E.prepare_for_attribution(build_resunet(filters=(4, 8, 16)))
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(E.ForegroundLogit(model)(x), model(x), rtol=0, atol=0)
    _, prob, mask = E.target_mask(model, x)
    with torch.no_grad():
        torch.testing.assert_close(prob, torch.sigmoid(model(x)))
    direct, _ = E.lrp(model, x, mask, "epsilon_plus_flat")
    wrapped, _ = E.lrp(E.ForegroundLogit(model), x, mask, "epsilon_plus_flat")
    np.testing.assert_array_equal(direct, wrapped)


def test_explain_cell_runs_for_a_contour_model(monkeypatch, tmp_path, pannuke_store):
    """The explain job end to end for a contour-target model: figures, table, and the nucleus logit explained."""
    from nucleiflow.device import IN_PROCESS
    from nucleiflow.models.resunet import build_resunet
    from nucleiflow.segmentation.analyses import explain as E
    from nucleiflow.segmentation.inference import predictor
    from nucleiflow.segmentation.training.heads import layout_of
    from nucleiflow.store import Store
    from nucleiflow.workflow.cells import model_spec

    config = yaml.safe_load((REPO / "workflow_tests" / "config_tiny.yaml").read_text())
    validate(config, str(REPO / "schemas" / "config.schema.yaml"))
    config["segmentation"]["dsb_tiny"]["training"]["target"] = "contour"
    spec = model_spec(config, dataset="dsb2018", experiment="dsb_tiny", arch="resunet", encoder="none", reg="none")
    layout = layout_of(spec.training)
    torch.manual_seed(0)
    model = build_resunet(filters=(4, 8, 16), classes=layout.channels)
    monkeypatch.setattr(predictor, "load_trained", lambda *args, **kwargs: (model, IN_PROCESS, {}))
    ids = Store(pannuke_store).labelled_ids
    split = tmp_path / "split.csv"
    pd.DataFrame({"image_id": ids, "split": ["test"] * len(ids)}).to_csv(split, index=False)
    settings = {
        "images": list(ids[:2]),
        "n": 2,
        "seed": 0,
        "target": "predicted",
        "gradcam_layer": "up_blocks.1",
        "filter_layer": "bridge.0.0",
        "composite": "epsilon_plus_flat",
        "max_filters": 8,
    }
    outputs = {name: str(tmp_path / f"{name}.png") for name in ("filters", "gradcam", "lrp")}
    outputs["table"] = str(tmp_path / "lrp_statistics.csv")
    table = E.explain_cell(spec.to_dict(), "unused.pt", pannuke_store, split, settings, outputs)
    assert all(
        (tmp_path / f"{name}.{ext}").exists() for name in ("filters", "gradcam", "lrp") for ext in ("png", "pdf")
    )
    samples = [Store(pannuke_store)[image_id] for image_id in settings["images"]]
    inputs = predictor.Predictor(model, predictor.InferenceConfig.from_spec(spec, maps_only=True), IN_PROCESS)
    _, _, x = inputs.model_inputs([s.image for s in samples], [s.mask for s in samples])
    _, _, mask = E.target_mask(model, x, threshold=spec.training["threshold"], layout=layout)
    with torch.no_grad():
        expected = (E.ForegroundLogit(model, layout)(x) * mask).flatten(1).sum(1).numpy()
    np.testing.assert_allclose(table["explained_score"].iloc[:2], expected, rtol=1e-4)
