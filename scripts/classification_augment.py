"""Snakemake adapter: the offline augmented training set (originals + generated), built once for every consumer."""

import pandas as pd

from nucleiflow.classification.augment import augment_training_set
from nucleiflow.classification.study import find_class_root
from nucleiflow.io import write_csv
from nucleiflow.log import setup_logging

log = setup_logging(snakemake.log[0])
class_names = snakemake.params.class_names
split = pd.read_csv(snakemake.input.split)
manifest = augment_training_set(
    split[split["split"] == "train"],
    find_class_root(snakemake.input.root, class_names),
    snakemake.output.images,
    n_total=snakemake.params.size,
    image_size=snakemake.params.image_size,
    seed=snakemake.params.seed,
    class_names=class_names,
)
write_csv(snakemake.output.manifest, manifest)
log.info("augmented training set: %d images", len(manifest))
