"""Nucleus vs micronucleus image classification (the NucRec study).

Submodules, one concern each (import them directly; torch is only pulled in
by `cnn`):

* `data`: class-folder layout -> manifest, image loading, 70/30 split
* `augment`: offline albumentations augmentation of the training set
* `features`: hand-crafted feature vectors for the classic classifiers
* `classic`: the eleven scikit-learn classifiers and their evaluation grid
* `cnn`: SmallCNN / Inception-ResNet-v2, dataset and per-epoch training loop

Manifests are DataFrames with at least ``image_id, path, label, label_index``;
``label_index`` is the position of ``label`` in `data.CLASS_NAMES`.
"""
