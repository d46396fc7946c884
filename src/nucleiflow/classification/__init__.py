"""Nucleus vs micronucleus image classification (the NucRec study).

Submodules, one concern each (import them directly; torch is only pulled in
by `models` and `training`):

* `dataset`: class-folder layout -> manifest, image loading, 70/30 split, the CNN image dataset
* `pannuke_crops`: a public class-folder dataset of nucleus crops cut from a
  PanNuke store (five classes, or small vs normal nucleus)
* `augment`: offline albumentations augmentation of the training set
* `features`: hand-crafted feature vectors for the classic classifiers
* `classic`: the eleven scikit-learn classifiers and their evaluation grid
* `models`: SmallCNN / Inception-ResNet-v2, their builders and the transfer-learning policy
* `training`: CNN training through the shared engine (`nucleiflow.engine`), per-epoch metrics and history
* `study`: what the workflow runs: class names per experiment, file names, split, training sets
* `tables`: Tables I-VI, their companions beside the published values, Figure 4's data

Manifests are DataFrames with at least ``image_id, path, label, label_index``;
``label_index`` is the position of ``label`` in the experiment's class names
(`dataset.CLASS_NAMES` for NucRec, `pannuke_crops.TASK_CLASS_NAMES` for crops).
"""
