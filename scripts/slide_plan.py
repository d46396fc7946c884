"""Snakemake adapter: a slide's plan (resolution, source level, chunks over tissue) and its tissue mask."""

from nucleiflow.log import setup_logging
from nucleiflow.slides.stage import plan_slide

log = setup_logging(snakemake.log[0])
plan = plan_slide(snakemake.input.slide, snakemake.params.options, snakemake.params.slide_mpp, snakemake.output)
log.info("%s: %d chunks over %.3f mm2 of tissue", snakemake.input.slide, len(plan["chunks"]), plan["tissue_area_mm2"])
