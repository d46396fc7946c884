"""Trained models as BioImage Model Zoo packages (format 0.5), and packages read back for prediction.

`package.export_model` writes a model cell's package (folder, zip, model card); `network` is the
network both weight formats hold; `load` reads a package (folder or zip) back: its spec, weights and
post-processing settings, for `inference:` and the Predictor.
"""
