"""The segmentation stages' tables and figures: per experiment, the robustness sweep, predictions and cross-dataset
evaluation, nuclei as objects (PanNuke per tissue, cross-validation)."""
