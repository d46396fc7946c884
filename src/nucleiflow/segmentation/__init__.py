"""Nuclei segmentation: targets, models' training, inference, post-processing, metrics, explanations, reports."""
