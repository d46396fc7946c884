"""Nucleus vs micronucleus image classification (the NucRec study).

Submodules, one concern each (import them directly; torch is only pulled in
by `cnn`):

* `data`: class-folder layout -> manifest, image loading, 70/30 split
* `pannuke_crops`: a public class-folder dataset of nucleus crops cut from a
  PanNuke store (five classes, or small vs normal nucleus)
* `augment`: offline albumentations augmentation of the training set
* `features`: hand-crafted feature vectors for the classic classifiers
* `classic`: the eleven scikit-learn classifiers and their evaluation grid
* `cnn`: SmallCNN / Inception-ResNet-v2 (transfer learning), dataset and per-epoch training loop
* `study`: what the workflow runs: class names per experiment, file names, split, training sets
* `paper_tables`: Tables I-VI, their companions beside the published values, Figure 4's data

Manifests are DataFrames with at least ``image_id, path, label, label_index``;
``label_index`` is the position of ``label`` in the experiment's class names
(`data.CLASS_NAMES` for NucRec, `pannuke_crops.TASK_CLASS_NAMES` for crops).
"""
