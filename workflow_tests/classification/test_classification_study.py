"""The classification study end to end through its functions: bad input, PanNuke crops, any number of
classes, transfer learning, and the paper's Tables I-VI beside the published values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from nucleiflow.classification import classic, dataset, models, pannuke_crops, study, tables, training
from nucleiflow.classification.features import extract_features
from nucleiflow.engine import Trainer, load_checkpoint
from nucleiflow.errors import ConfigError, DataFormatError
from nucleiflow.reporting import figures
from nucleiflow.workflow import classification as study_names


def _write_class_folders(root, counts):
    """Small random RGB images in `<root>/<class>/`."""
    rng = np.random.default_rng(0)
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(root / name / f"{i:02d}.png")
    return root


def _one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- bad input, through study.make_split / training_sets as the split rule runs them --------------


def test_missing_class_folder_is_named_even_one_level_down(tmp_path):
    _write_class_folders(tmp_path / "NucRec", {"nucleus": 3})  # the release nests its class folders
    with pytest.raises(DataFormatError) as excinfo:
        study.make_split(tmp_path, 0.3, seed=0)
    message = _one_line_error(excinfo)
    assert message.startswith(str(tmp_path / "NucRec" / "micronucleus"))
    assert "expected class folders: nucleus, micronucleus" in message


def test_missing_data_folder_is_named(tmp_path):
    with pytest.raises(DataFormatError, match="nowhere: data folder not found"):
        study.make_split(tmp_path / "nowhere", 0.3, seed=0)


def test_unreadable_image_is_named(tmp_path):
    root = _write_class_folders(tmp_path, {"nucleus": 4, "micronucleus": 4})
    (root / "micronucleus" / "03.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataFormatError) as excinfo:
        study.make_split(root, 0.3, seed=0)
    assert _one_line_error(excinfo).startswith(f"{root / 'micronucleus' / '03.png'}: not a decodable image")


@pytest.mark.parametrize("count, test_fraction, needed", [(1, 0.3, 4), (2, 0.05, 20)])
def test_class_too_small_for_the_split_names_its_folder(tmp_path, count, test_fraction, needed):
    root = _write_class_folders(tmp_path, {"nucleus": 40, "micronucleus": count})
    with pytest.raises(DataFormatError) as excinfo:
        study.make_split(root, test_fraction, seed=0)
    message = _one_line_error(excinfo)
    assert message.startswith(f"{root / 'micronucleus'}: class 'micronucleus' has {count} image(s)")
    assert f"at least {needed} are needed" in message


def test_training_sets_name_an_image_the_split_lists_but_the_folder_lacks(tmp_path):
    root = _write_class_folders(tmp_path, {"nucleus": 4, "micronucleus": 4})
    split = study.make_split(root, 0.3, seed=0)
    (root / split["image_id"].iloc[0]).unlink()
    with pytest.raises(DataFormatError, match=f"lists '{split['image_id'].iloc[0]}', which is not there"):
        study.training_sets(root, split, None)


def test_five_class_crops_need_a_store_with_class_maps(dsb_store, tmp_path):
    with pytest.raises(DataFormatError, match=f"{dsb_store}: class names .* use task binary"):
        pannuke_crops.write_crops(dsb_store, tmp_path / "crops", "five_class")
    with pytest.raises(ConfigError, match="crops.task: 'three_class' is not valid; choose one of: binary, five_class"):
        pannuke_crops.write_crops(dsb_store, tmp_path / "crops", "three_class")


# --- PanNuke crops ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def five_class_crops(pannuke_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("crops") / "five_class"
    return out, pannuke_crops.write_crops(pannuke_store, out, "five_class", max_per_class=8, margin=4, seed=3)


def test_five_class_crops_layout_cap_and_manifest(five_class_crops):
    out, manifest = five_class_crops
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(pannuke_crops.FIVE_CLASS_NAMES)
    assert manifest["label"].value_counts().to_dict() == dict.fromkeys(pannuke_crops.FIVE_CLASS_NAMES, 8)
    assert (manifest["label"] == manifest["class_name"]).all()
    assert pd.read_csv(out / "crops.csv")["file"].tolist() == manifest["file"].tolist()
    for row in manifest.head(10).itertuples():
        assert row.file == f"{row.label}/{row.image_id}_{row.nucleus}.png"
        with Image.open(out / row.file) as patch:
            side = max(row.y1 - row.y0, row.x1 - row.x0) + 2 * 4
            assert patch.size == (side, side) and patch.mode == "RGB"
    assert not list(out.parent.glob(".*.tmp"))  # written through atomic_dir


def test_crops_are_reproducible_and_seeded(pannuke_store, five_class_crops, tmp_path):
    _, first = five_class_crops
    again = pannuke_crops.write_crops(pannuke_store, tmp_path / "a", "five_class", max_per_class=8, margin=4, seed=3)
    other = pannuke_crops.write_crops(pannuke_store, tmp_path / "b", "five_class", max_per_class=8, margin=4, seed=4)
    pd.testing.assert_frame_equal(first, again)
    assert first["file"].tolist() != other["file"].tolist()


def test_binary_crops_split_small_from_normal_by_the_area_quantile(pannuke_store, tmp_path):
    manifest = pannuke_crops.write_crops(
        pannuke_store, tmp_path / "crops", "binary", max_per_class=10, small_quantile=0.3, seed=0
    )
    assert manifest["label"].value_counts().to_dict() == {"normal": 10, "small": 10}
    assert (
        manifest.loc[manifest["label"] == "small", "area"].max()
        < manifest.loc[manifest["label"] == "normal", "area"].min()
    )
    assert study_names.experiment_class_names({"crops": {"task": "binary"}}) == ("normal", "small")


def test_square_patch_repeats_edge_pixels_past_the_tile():
    image = np.arange(10 * 10 * 3, dtype=np.uint8).reshape(10, 10, 3)
    patch = pannuke_crops.square_patch(image, (0, 0, 2, 4), margin=2)
    assert patch.shape == (8, 8, 3)
    assert np.array_equal(patch[0], patch[1])  # rows above the tile repeat its first row


def test_crops_feed_the_whole_study_with_five_classes(five_class_crops):
    out, _ = five_class_crops
    names = study_names.experiment_class_names({"crops": {"task": "five_class"}})
    split = study.make_split(out, 0.3, seed=0, class_names=names)
    assert split.groupby(["label", "split"]).size().unstack()["test"].tolist() == [2] * 5
    train, test = study.training_sets(out, split, None, names)
    assert set(train["label_index"]) == set(range(5))
    X_train = extract_features(study.load_images(train, 32))
    X_test = extract_features(study.load_images(test, 32))
    grid = classic.evaluate_classifiers(
        X_train,
        train["label_index"].to_numpy(),
        X_test,
        test["label_index"].to_numpy(),
        names=["Random Forest", "QDA", "SVM"],
        n_jobs=1,
        seed=0,
    )
    assert grid[["accuracy", "precision", "recall", "f1"]].stack().between(0, 1).all()
    model = models.build_classifier("small_cnn", num_classes=len(names), seed=0)
    history = training.train_classifier(
        model, train, test, epochs=1, batch_size=8, lr=1e-3, image_size=32, progress=False
    )
    assert history[["val_precision", "val_recall", "val_auc"]].stack().between(0, 1).all()


# --- metrics for any number of classes --------------------------------------------------------------


def test_multiclass_metrics_are_weighted_and_auc_is_one_vs_rest_over_present_classes():
    labels = np.array([0, 0, 0, 1, 2, 2])  # class 3 never occurs
    probs = np.full((6, 4), 0.05)
    probs[np.arange(6), [0, 0, 1, 1, 2, 0]] = 0.85
    metrics = training.epoch_metrics(labels, probs, 0.4)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    # per class precision 2/3, 1/2, 1; supports 3, 1, 2
    assert metrics["class_precision"] == pytest.approx((3 * 2 / 3 + 1 * 0.5 + 2 * 1.0) / 6)
    assert metrics["class_recall"] == pytest.approx(metrics["accuracy"])  # weighted recall is accuracy
    assert 0 < metrics["auc"] <= 1
    binary = training.epoch_metrics(np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), 0.3)
    assert binary["class_recall"] == pytest.approx(0.5) and binary["class_precision"] == pytest.approx(1.0)
    assert binary["recall"] == binary["precision"] == pytest.approx(binary["accuracy"])


# --- transfer learning ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory):
    root = _write_class_folders(tmp_path_factory.mktemp("tiny"), {"nucleus": 6, "micronucleus": 6})
    return study.training_sets(root, study.make_split(root, 0.3, seed=0), None)


def _train(model, sets, epochs, transfer):
    return training.train_classifier(
        model, *sets, epochs=epochs, batch_size=4, lr=1e-2, image_size=16, progress=False, transfer=transfer
    )


def test_head_epochs_freeze_the_backbone_then_everything_fine_tunes_at_a_lower_rate(tiny_sets):
    policy = models.TransferPolicy(head_epochs=1, fine_tune_lr_factor=0.1)
    start = models.build_classifier("small_cnn", seed=0).state_dict()
    after_head = models.build_classifier("small_cnn", seed=0)
    history = _train(after_head, tiny_sets, 1, policy)
    backbone = [k for k in start if not k.startswith("classifier.")]
    assert all(torch.equal(start[k], after_head.state_dict()[k]) for k in backbone)  # BN statistics included
    assert not torch.equal(start["classifier.weight"], after_head.state_dict()["classifier.weight"])
    assert history["lr"].tolist() == [1e-2]
    fine_tuned = models.build_classifier("small_cnn", seed=0)
    history = _train(fine_tuned, tiny_sets, 2, policy)
    assert history["lr"].tolist() == pytest.approx([1e-2, 1e-3])
    assert not torch.equal(start["features.0.0.weight"], fine_tuned.state_dict()["features.0.0.weight"])
    assert all(p.requires_grad for p in fine_tuned.parameters())


class Killed(Exception):
    pass


def test_killed_cnn_run_resumes_to_the_same_weights_in_its_transfer_phase(tiny_sets, tmp_path, monkeypatch):
    # Killed during the second head epoch: the resumed run must freeze the backbone again, then fine-tune.
    policy = models.TransferPolicy(head_epochs=2, fine_tune_lr_factor=0.1)
    kwargs = {"epochs": 3, "batch_size": 4, "lr": 1e-2, "image_size": 16, "progress": False, "transfer": policy}
    straight = models.build_classifier("small_cnn", seed=0)
    full = training.train_classifier(straight, *tiny_sets, checkpoint_dir=tmp_path / "straight", **kwargs)
    real_train_epoch = Trainer.train_epoch

    def dying_train_epoch(self, loader, epoch):
        if epoch == 2:
            raise Killed
        return real_train_epoch(self, loader, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", dying_train_epoch)
    with pytest.raises(Killed):
        training.train_classifier(
            models.build_classifier("small_cnn", seed=0), *tiny_sets, checkpoint_dir=tmp_path / "killed", **kwargs
        )
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 1

    # Another initialisation: the weights must come from the checkpoint.
    resumed = models.build_classifier("small_cnn", seed=1)
    history = training.train_classifier(resumed, *tiny_sets, checkpoint_dir=tmp_path / "killed", **kwargs)
    for name, tensor in straight.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    pd.testing.assert_frame_equal(full, history)
    assert history["lr"].tolist() == pytest.approx([1e-2, 1e-2, 1e-3])


def test_a_cnn_job_keeps_checkpoints_beside_its_history_and_extends_from_them(tiny_sets, tmp_path):
    history_path = tmp_path / "cnn" / "small_cnn_base_history.csv"
    cnn = {"epochs": 1, "batch_size": 4, "lr": 1e-2, "image_size": 16, "pretrained": True}  # small_cnn: none
    threads = torch.get_num_threads()  # run_cnn sets torch's thread count on CPU
    first = training.run_cnn("small_cnn", cnn, dataset.CLASS_NAMES, *tiny_sets, history_path, seed=0, threads=threads)
    pd.testing.assert_frame_equal(pd.read_csv(history_path), first, check_exact=False, rtol=1e-12)
    checkpoints = tmp_path / "cnn" / "checkpoints" / "small_cnn_base"
    assert training.cnn_checkpoint_dir(history_path) == checkpoints
    assert (checkpoints / "last.pt").exists() and not (checkpoints / "best.pt").exists()
    longer = training.run_cnn(
        "small_cnn", {**cnn, "epochs": 2}, dataset.CLASS_NAMES, *tiny_sets, history_path, seed=0, threads=threads
    )
    assert longer["epoch"].tolist() == [1, 2]
    pd.testing.assert_frame_equal(longer.iloc[:1], first)  # epoch 1 resumed, not retrained


def test_transfer_options_are_checked():
    assert models.TransferPolicy.from_config(None) == models.TransferPolicy()
    with pytest.raises(ConfigError, match="cnn.transfer: unknown key"):
        models.TransferPolicy.from_config({"freeze": 3})
    with pytest.raises(ConfigError, match="fine_tune_lr_factor"):
        models.TransferPolicy(fine_tune_lr_factor=2.0)


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, offline: where nucleiflow.pretrained looks for the weights."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return tmp_path


def test_missing_pretrained_weights_are_a_one_line_error_naming_the_cache_rule(empty_hub_cache):
    with pytest.raises(ConfigError) as excinfo:
        models.build_classifier("inception_resnet_v2", pretrained=True)
    message = _one_line_error(excinfo)
    assert "cnn/inception_resnet_v2" in message and str(empty_hub_cache) in message
    assert "snakemake cache_weights" in message
    assert not models.has_pretrained_weights("small_cnn") and models.has_pretrained_weights("inception_resnet_v2")


# --- Tables I-VI beside the paper, Figure 4 ---------------------------------------------------------


def _grid_results():
    names = ["Random Forest", "SVM"]
    return pd.DataFrame(
        {
            "classifier": names,
            "accuracy": [0.80, 0.70],
            "precision": [0.8, 0.7],
            "recall": [0.8, 0.7],
            "f1": [0.8, 0.7],
            "mcc": [0.6, 0.4],
            "kappa": [0.6, 0.4],
            "fit_seconds": [1.0, 2.0],
        }
    )


def _history(epochs=12):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"epoch": range(1, epochs + 1)})
    for column in training.HISTORY_COLUMNS[1:]:
        frame[column] = rng.uniform(0.5, 1.0, epochs)
    return frame


def test_tables_one_and_two_have_the_papers_columns_and_companions():
    table = tables.classic_paper_table(_grid_results())
    assert list(table.columns) == ["Classifier", "Accuracy", "Precision", "Recall", "F1 score", "MCC", "Kappa"]
    base = tables.classic_vs_paper(_grid_results(), "base").set_index("classifier")
    assert base.loc["Random Forest", "accuracy_paper"] == 0.78
    assert base.loc["Random Forest", "accuracy_diff"] == pytest.approx(0.02)
    assert base.loc["SVM", ["accuracy_paper", "kappa_paper"]].tolist() == [0.63, 0.26]  # Table I: every metric
    assert list(base.index[:2]) == ["Random Forest", "SVM"] and len(base) == 11  # paper-only rows come last
    assert np.isnan(base.loc["Extra Trees", "accuracy_ours"]) and base.loc["Extra Trees", "accuracy_paper"] == 0.78
    augmented = tables.classic_vs_paper(_grid_results(), "augmented").set_index("classifier")
    assert set(augmented["variant"]) == {"augmented"} and augmented.loc["Random Forest", "accuracy_paper"] == 0.71


def test_cnn_tables_at_report_epochs_and_beside_the_paper():
    history = _history()
    table = tables.cnn_run_table(history, [1, 10, 20])
    assert table["Epoch"].tolist() == [1, 10]
    assert list(table.columns)[:3] == ["Epoch", "Accuracy", "Loss"] and table.columns[10] == "Val AUC"
    assert table.columns[-1] == "Val recall (per class)"  # the per-class figures after the paper's columns
    companion = tables.cnn_vs_paper(history, "inception_resnet_v2", "augmented", [1, 10, 20])
    assert companion[["model", "variant", "epoch"]].values.tolist() == [["inception_resnet_v2", "augmented", 10]]
    assert companion["val_accuracy_paper"].iloc[0] == 0.96  # Table VI at its last reported epoch (100)
    assert companion["val_accuracy_ours"].iloc[0] == history.loc[9, "val_accuracy"]
    # The paper's precision (Keras, micro over the one-hot columns) sits beside ours, not the per-class one.
    assert companion["val_precision_ours"].iloc[0] == history.loc[9, "val_precision"]
    assert "val_class_precision_ours" not in companion
    assert "micro-averaged over both columns" in tables.CNN_METRICS_NOTE
    small = tables.cnn_vs_paper(history, "small_cnn", "base", [1, 10], study=None)
    assert len(small) == 1 and small["val_accuracy_paper"].isna().all()
    assert small["source"].iloc[0] == tables.NO_PUBLISHED_SOURCE
    with pytest.raises(ConfigError, match=r"report_epochs: none of \[50\] is among the 12 trained epochs"):
        tables.cnn_run_table(history, [50])


def test_table_numbers_file_names_and_targets():
    assert study_names.cnn_table_name("inception_resnet_v2", "base") == "table5_inception_resnet_v2_base"
    assert study_names.cnn_history_file(4, "small_cnn", "augmented") == "cnn/small_cnn_augmented_history.csv"
    with pytest.raises(ConfigError, match="table4_small_cnn_base: not one of the CNN tables; valid: table3_small"):
        study_names.cnn_history_file(4, "small_cnn", "base")
    assert study_names.report_targets(["small_cnn"]) == [
        "tables/table1_classic_base.csv",
        "tables/table2_classic_augmented.csv",
        "tables/table3_small_cnn_base.csv",
        "tables/table4_small_cnn_augmented.csv",
        "tables/class_counts.csv",
        "figures/classifier_comparison.png",
        "figures/figure4_cnn_runs.png",
        "tables/figure4_average_accuracy.csv",
        "paper_index.md",
    ]
    assert study_names.published_study({"dataset": "nucrec"}) == "classification"
    assert study_names.published_study({"dataset": "pannuke", "crops": {"task": "binary"}}) is None


def test_figure4_compares_the_runs_in_the_papers_order(tmp_path):
    runs = {("inception_resnet_v2", "augmented"): _history(3), ("small_cnn", "base"): _history(3)}
    stacked = tables.runs_history(runs)
    assert list(dict.fromkeys(stacked["run"])) == ["Small CNN (base)", "InceptionResNetV2 (augmented)"]
    png, pdf = figures.save_figure(
        figures.metric_curves(stacked, ("accuracy", "precision", "recall", "auc"), model_col="run"),
        tmp_path / "figure4.png",
    )
    assert png.stat().st_size > 10_000 and pdf.exists()


def test_figure4_average_accuracies_sit_beside_the_papers():
    runs = {("inception_resnet_v2", "augmented"): _history(3), ("small_cnn", "base"): _history(4)}
    table = tables.average_accuracy_vs_paper(runs)
    assert list(table["Run"]) == ["Small CNN (base)", "InceptionResNetV2 (augmented)"]
    assert table["Mean validation accuracy (paper)"].tolist() == [0.6611, 0.9722]
    assert table.loc[0, "Mean training accuracy (ours)"] == pytest.approx(
        runs[("small_cnn", "base")]["train_accuracy"].mean()
    )
    crops = tables.average_accuracy_vs_paper(runs, study=None)
    assert (
        crops["Mean training accuracy (paper)"].isna().all() and crops["Source"].iloc[0] == tables.NO_PUBLISHED_SOURCE
    )


def test_class_counts_table_totals():
    split = pd.DataFrame({"label": ["a", "a", "a", "b", "b"], "split": ["train", "train", "test", "train", "test"]})
    augmented = pd.DataFrame({"label": ["a"] * 4 + ["b"] * 4})
    table = tables.class_counts_table(split, augmented, ["a", "b"])
    assert table.to_dict("list") == {
        "Class": ["a", "b", "total"],
        "Train": [2, 1, 3],
        "Test": [1, 1, 2],
        "Augmented train": [4, 4, 8],
    }
