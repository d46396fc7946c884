"""Snakemake adapter: serialise the augmentation pipeline and draw a preview."""

from nucleiflow.log import setup_logging
from nucleiflow.reporting import figures
from nucleiflow.segmentation.training import augment
from nucleiflow.store import Store

log = setup_logging(snakemake.log[0])
pipeline = augment.build_pipeline(snakemake.params.spec)
augment.save_pipeline(pipeline, snakemake.output.pipeline)
store = Store(snakemake.input[0])
pairs = [(s.image, s.mask) for s in (store[i] for i in store.ids[:3])]
figures.use_style()
views = augment.preview_views(pipeline, pairs, n_views=4, seed=snakemake.params.seed)
figures.save_figure(figures.augmentation_preview(views), snakemake.output.preview)
log.info("pipeline %s: %s", snakemake.wildcards.pipeline, pipeline)
