"""Snakemake adapter: segment every image of a store or folder with one trained model."""

from nucleiflow.export.load import load_package_model
from nucleiflow.io import write_csv
from nucleiflow.log import setup_logging
from nucleiflow.segmentation.predict import load_model, predict_images

log = setup_logging(snakemake.log[0])
if snakemake.params.spec is None:  # an exported package: its spec, weights and post-processing
    loaded = load_package_model(snakemake.input.model, snakemake.threads)
else:
    loaded = load_model(
        snakemake.params.spec,
        snakemake.input.model,
        snakemake.threads,
        postprocess=snakemake.params.postprocess,
        params_path=snakemake.input.tuned[0] if snakemake.input.tuned else None,
    )
images, nuclei = predict_images(loaded, snakemake.input.images, snakemake.output.predictions)
write_csv(snakemake.output.images, images)
write_csv(snakemake.output.nuclei, nuclei)
log.info("%d images, %d nuclei -> %s", len(images), len(nuclei), snakemake.output.predictions)
