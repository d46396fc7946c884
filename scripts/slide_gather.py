"""Snakemake adapter: gather a slide's chunks into its GeoJSON, table, label pyramid, summary and overview."""

from nucleiflow.log import setup_logging
from nucleiflow.slides.stage import gather_slide

log = setup_logging(snakemake.log[0])
row = gather_slide(
    snakemake.input.plan,
    snakemake.input.tissue,
    snakemake.input.thumbnail,
    snakemake.input.parts,
    snakemake.params.chunks,
    snakemake.output,
    name=snakemake.params.name,
)
log.info("%(slide)s: %(nuclei)d nuclei, %(tissue_area_mm2).3f mm2 of tissue", row)
