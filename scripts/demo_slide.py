"""Snakemake adapter: the demo's synthetic whole slide (tiled pyramidal OME-TIFF)."""

from pathlib import Path

from nucleiflow.log import setup_logging
from nucleiflow.synthetic.demo import write_demo_slide

log = setup_logging(snakemake.log[0])
log.info("wrote %s", write_demo_slide(Path(snakemake.output[0]).parent, snakemake.params.seed))
