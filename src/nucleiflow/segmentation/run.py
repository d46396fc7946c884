"""One segmentation experiment cell, end to end: build, train, tune the post-processing, evaluate.

`spec` is the `ModelSpec` of a model cell; the workflow passes it as a plain
dict (rules/common.smk:model_spec) and the functions here accept either. It
also serves as the identity a checkpoint must match to be resumed (minus the
epoch budget, so training can be extended).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import pandas as pd

from nucleiflow.catalog import INPUT_SCALINGS, L2_SCOPES, MASK_PREPROCESSING
from nucleiflow.config import ModelSpec
from nucleiflow.device import setup_device
from nucleiflow.engine import seed_everything
from nucleiflow.io import atomic_path, write_csv, write_json
from nucleiflow.models import count_parameters, model_size_mb
from nucleiflow.pretrained import check_weights_available
from nucleiflow.segmentation.inference.inference import (
    evaluate_split,
    timing_summary,
    tune_model,
    tuning_ids,
    tuning_record,
)
from nucleiflow.segmentation.inference.predictor import Predictor
from nucleiflow.segmentation.representation.postprocess import DEFAULT_GRIDS
from nucleiflow.segmentation.training.data import SegmentationDataset, make_loader, split_ids
from nucleiflow.segmentation.training.heads import layout_of
from nucleiflow.segmentation.training.trainer import (
    SegmentationTrainer,
    TrainSettings,
    build_from_spec,
    checkpoint_identity,
)
from nucleiflow.store import Store

log = logging.getLogger(__name__)


def train_from_spec(
    spec: ModelSpec | dict, store_path, split_path, pipeline_path, model_dir, *, threads: int = 1, progress: bool = True
) -> dict:
    """Train one cell; writes model.pt, history.csv and train_info.json into `model_dir`."""
    spec = ModelSpec.from_dict(spec)
    training = spec.training
    model_dir = Path(model_dir)
    seed_everything(spec.seed)
    setup = setup_device(training["device"], threads, training["amp"])
    check_weights_available(spec.arch, spec.encoder, training["encoder_weights"])
    model = build_from_spec(spec, training["encoder_weights"])
    store = Store(store_path)
    manifest = pd.read_csv(split_path)
    # albumentations (which imports torch and its own pytorch helpers) only where training needs it,
    # not in every evaluation job that imports this module
    from nucleiflow.segmentation.training.augment import load_pipeline

    transform = load_pipeline(pipeline_path) if pipeline_path else None
    datasets = {
        name: SegmentationDataset(
            store,
            split_ids(manifest, name),
            training["input_size"],
            policy=training["size_policy"],
            transform=transform if name == "train" else None,
            seed=spec.seed,
            prefilter_sigma=training["prefilter_sigma"],
            random_tiles=name == "train",
            input_scaling=training.get("input_scaling", INPUT_SCALINGS[0]),
            mask_preprocessing=training.get("mask_preprocessing", MASK_PREPROCESSING[0]),
            layout=layout_of(training),
        )
        for name in ("train", "val")
    }
    loaders = {
        name: make_loader(
            ds,
            training["batch_size"],
            shuffle=name == "train",
            seed=spec.seed,
            workers=setup.loader_workers,
            pin_memory=setup.pin_memory,
        )
        for name, ds in datasets.items()
    }
    settings = TrainSettings(
        epochs=training["epochs"],
        batch_size=training["batch_size"],
        lr=training["lr"],
        loss=training["loss"],
        l2=spec.regularization["l2"],
        l2_scope=spec.regularization.get("l2_scope", L2_SCOPES[0]),
        lr_patience=training["lr_patience"],
        lr_factor=training["lr_factor"],
        lr_schedule=training["lr_schedule"],
        loss_weights=training["loss_weights"],
        early_stopping_patience=training["early_stopping_patience"],
        threshold=training["threshold"],
        layout=layout_of(training),
        seed=spec.seed,
        identity=checkpoint_identity(spec),
    )
    trainer = SegmentationTrainer(model, settings, setup, model_dir / "checkpoints", progress=progress)
    log.info(
        "training %s/%s/%s on %s: %d train, %d val images",
        spec.arch,
        spec.encoder,
        spec.reg,
        setup.device,
        len(datasets["train"]),
        len(datasets["val"]),
    )
    history = trainer.fit(loaders["train"], loaders["val"])
    # Final outputs only now, so Snakemake never sees a finished-looking model mid-training.
    publish_model(trainer.best_path, model_dir / "model.pt")
    write_csv(model_dir / "history.csv", history)
    info = {
        **trainer.summary(),
        "spec": spec.to_dict(),
        **count_parameters(model.cpu()),
        "size_mb": model_size_mb(model),
        "train_images": len(datasets["train"]),
        "val_images": len(datasets["val"]),
    }
    write_json(model_dir / "train_info.json", info)
    if not training["keep_last_checkpoint"]:
        trainer.last_path.unlink()  # optimizer state: only needed to resume or extend training
    return info


def publish_model(best: Path, target: Path) -> None:
    """Make `target` the best weights: a hard link (no extra disk) swapped in atomically."""
    tmp = target.with_name(f".{target.name}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(best, tmp)
    except OSError:  # file systems without hard links
        with atomic_path(target) as copy:
            shutil.copyfile(best, copy)
        return
    os.replace(tmp, target)


def tune_from_spec(
    spec: ModelSpec | dict,
    model_path,
    store_path,
    split_path,
    postprocess: dict | None = None,
    *,
    threads: int = 1,
    progress: bool = True,
) -> dict:
    """Tune the post-processing of the best checkpoint on the validation split; returns the postprocess.json record.

    At most `postprocess.tune_images` validation images (a sample seeded by the spec's seed) are predicted,
    with the experiment's test-time augmentation, and every setting of `postprocess.grid` (default: the
    target's `DEFAULT_GRIDS`) is scored by mean PQ. No other split is read.
    """
    spec = ModelSpec.from_dict(spec)
    config = dict(postprocess or {})
    predictor = Predictor.from_model_dir(model_path, spec=spec, postprocess=config, threads=threads, maps_only=True)
    target, tta = predictor.config.layout.target, predictor.config.tta
    grid = config.get("grid") or DEFAULT_GRIDS[target]
    ids = tuning_ids(split_ids(pd.read_csv(split_path), "val"), config.get("tune_images", 200), spec.seed)
    log.info("tuning the %s post-processing on %d validation images (TTA %s)", target, len(ids), tta)
    result = tune_model(predictor, Store(store_path), ids, grid, progress=progress)
    log.info("tuned: %s, mean validation PQ %.4f", result.params, result.mean_pq)
    return tuning_record(result, ids, grid, tta)


def evaluate_from_spec(
    spec: ModelSpec | dict,
    model_path,
    store_path,
    split_path,
    subset: str,
    *,
    predictions_path,
    threads: int = 1,
    progress: bool = True,
    postprocess: dict | None = None,
    tuned_path=None,
) -> tuple[pd.DataFrame, dict]:
    """Per-image metrics and timing of the best checkpoint on one split.

    `postprocess` is the experiment's `postprocess` section; `tuned_path` the model's tuned settings
    (postprocess.json), required when the experiment tunes (`InferenceConfig.from_spec`).
    """
    predictor = Predictor.from_model_dir(
        model_path, spec=spec, postprocess=postprocess, tuned_path=tuned_path, threads=threads
    )
    ids = split_ids(pd.read_csv(split_path), subset)
    started = time.perf_counter()
    per_image = evaluate_split(predictor, Store(store_path), ids, predictions_path=predictions_path, progress=progress)
    timing = timing_summary(per_image, str(predictor.device))
    timing["total_s"] = time.perf_counter() - started
    timing["best_epoch"] = predictor.state["best"]["epoch"]
    return per_image, timing
