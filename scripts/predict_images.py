"""Snakemake adapter: segment every image of a store or folder with one trained model (or an exported package)."""

from nucleiflow.export.load import load_predictor
from nucleiflow.io import write_csv
from nucleiflow.log import setup_logging
from nucleiflow.segmentation.inference.predict import predict_images

log = setup_logging(snakemake.log[0])
# A model cell's folder with its spec, experiment settings and tuned record; or an exported package, which
# carries its own (spec None).
predictor = load_predictor(
    snakemake.input.model,
    spec=snakemake.params.spec,
    postprocess=snakemake.params.postprocess,
    tuned_path=snakemake.input.tuned[0] if snakemake.input.tuned else None,
    threads=snakemake.threads,
    type_names=snakemake.params.type_names,
)
images, nuclei = predict_images(predictor, snakemake.input.images, snakemake.output.predictions)
write_csv(snakemake.output.images, images)
write_csv(snakemake.output.nuclei, nuclei)
log.info("%d images, %d nuclei -> %s", len(images), len(nuclei), snakemake.output.predictions)
