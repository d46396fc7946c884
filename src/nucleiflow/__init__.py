"""nucleiflow: the logic behind the nuclei-analysis Snakemake workflow.

Each module is one concern (data formats, models, training, metrics, figures);
the workflow's ``scripts/`` are thin adapters around these functions.
"""

__version__ = "0.1.0"
