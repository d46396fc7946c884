"""Snakemake adapter: segment every image of a store or folder with one trained model (or an exported package)."""

from nucleiflow.export.load import load_predictor
from nucleiflow.io import write_csv
from nucleiflow.log import setup_logging
from nucleiflow.segmentation.inference.predict import predict_images
from nucleiflow.segmentation.inference.predictor import Predictor

log = setup_logging(snakemake.log[0])
if snakemake.params.spec is None:  # an exported package: it carries its spec, weights and post-processing
    predictor = load_predictor(snakemake.input.model, threads=snakemake.threads)
else:
    predictor = Predictor.from_model_dir(
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
