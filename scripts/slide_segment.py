"""Snakemake adapter: one segment job of a slide (its share of the chunks), resumable."""

from nucleiflow.log import setup_logging
from nucleiflow.slides.model import load_slide_model
from nucleiflow.slides.stage import segment_slide_part
from nucleiflow.threads import nvidia_gpu_present

log = setup_logging(snakemake.log[0])
# On a CPU the network runs on one thread and each of the job's threads is a post-processing worker
# process (the watershed of one chunk runs while the network works on the next). A chunk's post-processing
# takes longer than its network pass, so the workers get every thread and the network shares a core with
# them: on 2 cores, 2 workers kept the stage at 67-71 % of the network alone's throughput, 1 worker at 51 %
# (benchmarks/bench_slides.py, README). On a GPU one thread drives it, as everywhere.
workers = 0 if nvidia_gpu_present() else snakemake.threads
model = load_slide_model(
    snakemake.params.spec,
    snakemake.input.model,
    threads=1 if workers else snakemake.threads,
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
