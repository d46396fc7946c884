"""Snakemake adapter: write one split manifest (image_id, split)."""

from nucleiflow.io import write_csv
from nucleiflow.log import setup_logging
from nucleiflow.splits import make_split
from nucleiflow.store import Store

log = setup_logging(snakemake.log[0])
store = Store(snakemake.input[0])
labelled = store.metadata[store.metadata["image_id"].isin(store.labelled_ids)]  # unlabelled images: prediction only
manifest = make_split(labelled, snakemake.params.spec, snakemake.params.seed)
write_csv(snakemake.output[0], manifest)
log.info("split %s: %s", snakemake.wildcards.split, manifest["split"].value_counts().to_dict())
