"""Snakemake adapter: one trained model cell as a BioImage Model Zoo package (folder, zip, model card)."""

from nucleiflow.export.package import export_model
from nucleiflow.log import setup_logging

log = setup_logging(snakemake.log[0])
meta = export_model(
    snakemake.params.spec,
    snakemake.input.model.rsplit("/", 1)[0],
    snakemake.input.store,
    snakemake.input.split,
    {key: snakemake.output[key] for key in ("package", "zip", "card")},
    postprocess=snakemake.params.postprocess,
    tuned_path=snakemake.input.tuned[0] if snakemake.input.tuned else None,
    evaluation=snakemake.params.evaluation,
    settings=snakemake.params.settings,
    threads=snakemake.threads,
)
log.info("package of %s written to %s (test image %s)", meta["spec"]["arch"], snakemake.output.zip, meta["test_image"])
