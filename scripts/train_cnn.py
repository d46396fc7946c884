"""Snakemake adapter: train one CNN (small CNN from scratch, or InceptionResNetV2) on one variant."""

import pandas as pd

from nucleiflow.classification import study
from nucleiflow.classification.cnn import (
    TransferPolicy,
    build_classifier,
    check_input_size,
    has_pretrained_weights,
    train_classifier,
)
from nucleiflow.device import setup_device
from nucleiflow.io import write_csv
from nucleiflow.log import setup_logging

log = setup_logging(snakemake.log[0])
cnn, name = snakemake.params.cnn, snakemake.wildcards.model
class_names = snakemake.params.class_names
check_input_size(name, cnn["image_size"])
# `pretrained` applies to the models that have ImageNet weights; the small CNN always starts from scratch.
pretrained = bool(cnn.get("pretrained")) and has_pretrained_weights(name)
transfer = TransferPolicy.from_config(cnn.get("transfer")) if pretrained else None
augmented = pd.read_csv(snakemake.input.augmented[0]) if snakemake.input.augmented else None
train, test = study.training_sets(snakemake.input.root, pd.read_csv(snakemake.input.split), augmented, class_names)
setup = setup_device("auto", snakemake.threads)
model = build_classifier(name, num_classes=len(class_names), pretrained=pretrained, seed=snakemake.params.seed)
log.info(
    "%s (%s): %d classes, %s, transfer %s",
    name,
    snakemake.wildcards.variant,
    len(class_names),
    "ImageNet weights" if pretrained else "random initialisation",
    transfer,
)
history = train_classifier(
    model,
    train,
    test,
    epochs=cnn["epochs"],
    batch_size=cnn["batch_size"],
    lr=cnn["lr"],
    image_size=cnn["image_size"],
    device=setup.device,
    seed=snakemake.params.seed,
    transfer=transfer,
    num_workers=setup.loader_workers,
)
write_csv(snakemake.output[0], history)
log.info("%s/%s: final val accuracy %.4f", name, snakemake.wildcards.variant, history["val_accuracy"].iloc[-1])
