"""Snakemake adapter: one segment job of a slide (its share of the chunks), resumable."""

from nucleiflow.log import setup_logging
from nucleiflow.slides.model import load_slide_model
from nucleiflow.slides.stage import segment_slide_part
from nucleiflow.threads import nvidia_gpu_present

log = setup_logging(snakemake.log[0])
# On a CPU the job's threads are one for the network and the rest post-processing worker processes (the
# watershed of one chunk runs while the network works on the next); on a GPU one drives it, as everywhere.
workers = 0 if nvidia_gpu_present() else snakemake.threads - 1
model = load_slide_model(
    snakemake.params.spec,
    snakemake.input.model,
    threads=snakemake.threads - workers,
    postprocess=snakemake.params.postprocess,
    params_path=snakemake.input.tuned[0] if snakemake.input.tuned else None,
    tile_size=snakemake.params.tile_size,
    batch_size=snakemake.params.batch_size,
    type_names=snakemake.params.type_names,
)
summary = segment_slide_part(
    snakemake.input.plan,
    snakemake.input.tissue,
    model,
    [snakemake.input.model, *snakemake.input.tuned],
    snakemake.params.chunks,
    int(snakemake.wildcards.part),
    snakemake.params.parts,
    snakemake.output[0],
    workers=workers,
)
log.info("part %(part)d of %(parts)d: %(chunks)d chunks (%(resumed)d resumed), %(nuclei)d nuclei", summary)
