"""Nuclei as objects end to end: cross-validation with hv + type head on PanNuke, a contour model on DSB2018."""

import json

import pandas as pd
import pytest
from conftest import copy_checkout
from test_readme_commands import config_files_read, run_in

COMMAND = (
    ".venv/bin/snakemake --workflow-profile profiles/local --cores 2 --configfile workflow_tests/config_instances.yaml"
)
FOLDS = ("official", "official_rot2")


@pytest.mark.e2e
def test_instance_targets_cross_validation_and_pannuke_metrics_end_to_end(tmp_path):
    root = copy_checkout(tmp_path)
    result = run_in(root, COMMAND, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert config_files_read(output, root) == ["workflow_tests/config_instances.yaml"]
    results = root / "results"

    # Every model's watershed was tuned on its validation split and the record says so.
    cells = [(results / "pannuke", f"pannuke_cv_{fold}", "unet/resnet18/none", fold, "hv") for fold in FOLDS]
    cells.append((results / "dsb2018", "dsb_contour", "resunet/none/none", "tiny", "contour"))
    for dataset_dir, experiment, cell, split, target in cells:
        record = json.loads((dataset_dir / experiment / "models" / cell / "postprocess.json").read_text())
        assert record["target"] == target and record["split"] == "val" and record["val_images"] >= 1
        assert 0.0 <= record["mean_pq"] <= 1.0 and len(record["trials"]) > 1
        assert record["tta"] == ("flips" if target == "hv" else "none")
        manifest = pd.read_csv(dataset_dir / "splits" / f"{split}.csv")
        assert set(record["val_ids"]) <= set(manifest.loc[manifest["split"] == "val", "image_id"])

    # PanNuke: per-image benchmark columns (type head: mPQ scored), one table per fold experiment.
    for fold in FOLDS:
        experiment = results / "pannuke" / f"pannuke_cv_{fold}"
        per_image = pd.read_csv(experiment / "evaluation/unet/resnet18/none/test_per_image.csv")
        for column in ("tissue", "bpq", "mpq", *(f"pq_class_{c}" for c in range(1, 6)), "aji", "pq", "map"):
            assert column in per_image.columns
        assert per_image["aji"].between(0, 1).all()
        table = pd.read_csv(experiment / "tables" / "pannuke_pq.csv")
        assert table.iloc[:, :3].astype(str).apply(lambda row: "mean over tissues" in " ".join(row), axis=1).any()

    # Cross-validation: a row per fold and the mean ± std, beside the published results.
    cv = pd.read_csv(results / "pannuke" / "pannuke_cv" / "tables" / "cross_validation.csv")
    text = cv.to_string()
    assert "mean ± std (2 folds)" in text and "CellViT" in text
    folds = pd.read_csv(results / "pannuke" / "pannuke_cv" / "tables" / "cross_validation_folds.csv")
    assert len(folds) == len(FOLDS)
    assert (results / "pannuke" / "pannuke_cv" / "figures" / "cross_validation.png").stat().st_size > 0

    # The contour model on DSB2018: object metrics from its tuned watershed.
    contour = pd.read_csv(results / "dsb2018" / "dsb_contour" / "evaluation/resunet/none/none/test_per_image.csv")
    assert contour[["aji", "pq", "map"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (results / "dsb2018" / "dsb_contour" / "tables" / "object_metrics.csv").exists()
