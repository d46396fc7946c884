"""Snakemake adapter: the demo's folder of new images (16-bit TIFF and PNG, some with masks)."""

from nucleiflow.log import setup_logging
from nucleiflow.synthetic.image_folders import write_image_folders

log = setup_logging(snakemake.log[0])
written = write_image_folders(snakemake.output[0], **snakemake.params.options)
log.info("wrote %d images (%d with masks) to %s", written["images"], written["masks"], snakemake.output[0])
