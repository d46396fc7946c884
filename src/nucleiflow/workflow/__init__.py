"""What runs while Snakemake builds the DAG: config expansion, semantic checks, final targets, input functions.

Everything in this package is free of torch, torchvision, scikit-image, OpenCV, scipy, h5py and pandas
(a test imports it in a fresh interpreter and checks), so that parsing the
workflow stays fast. It imports only the foundation below it (`nucleiflow.config`, `catalog`, `paths`,
`errors`, `download`, `reporting.paper_index`); job code may import its names, never the other way round.

* `cells`: the experiment grid: model cells, folds, cross-validation groups, specs, inference and
  cross-dataset cells
* `checks`: the semantic checks beyond the JSON schema (one-line ConfigErrors)
* `explain`: which cells the explain stage runs on and its settings per cell
* `weights`: the pretrained weights a config trains from, and their marker files
* `classification`: the classification study's file names (Tables I-VI, Figure 4)
* `targets`: the final targets, one `<stage>_targets(config) -> list[str]` per stage, and `final_targets`
* `inputs`: the rules' input and params functions, bound to one config (`Inputs`)
"""
