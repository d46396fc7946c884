"""Snakemake adapter: write the embedded synthetic archives (real release layouts)."""

from pathlib import Path

from nucleiflow.log import setup_logging
from nucleiflow.synthetic.demo import write_demo_archives

log = setup_logging(snakemake.log[0])
out_dir = Path(snakemake.output[0]).parents[1]  # resources/demo
for name, path in write_demo_archives(out_dir, **snakemake.params.options).items():
    log.info("wrote %s: %s", name, path)
