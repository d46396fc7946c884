"""Every name list of the workflow, defined once and importable without torch.

The config is checked against these at workflow start-up (parsing the DAG must
stay fast), and each registry is keyed by them: `models.registry` builds exactly
`ARCH_ENCODERS`, `datasets.CONVERTERS` converts exactly `SEGMENTATION_FORMATS`,
`classification.classic.CLASSIFIERS` holds exactly `CLASSIFIER_NAMES` and the
classification CNN builders exactly `CNN_MODELS`. workflow_tests/test_catalog.py
checks those registries and the enums of schemas/config.schema.yaml against
these lists.
"""

NO_ENCODER = "none"  # the encoder of the self-contained U-Nets

SMP_ENCODERS = ("resnet18", "resnet34", "resnet50", "efficientnet-b0", "efficientnet-b4", "mobilenet_v2")

# architecture -> valid encoders
ARCH_ENCODERS: dict[str, tuple[str, ...]] = {
    "unet": SMP_ENCODERS,
    "deeplabv3plus": SMP_ENCODERS,
    "resunet": (NO_ENCODER,),
    "classic_unet": (NO_ENCODER,),
}
ARCH_NAMES = tuple(ARCH_ENCODERS)

CLASSIFIER_NAMES = (
    "Decision Tree",
    "SVM",
    "QDA",
    "K-Nearest Neighbours",
    "AdaBoost",
    "Gaussian Naive Bayes",
    "Logistic Regression",
    "Random Forest",
    "Extra Trees",
    "Voting",
    "Histogram Gradient Boosting",
)

# The classification study's classes: NucRec's (the second is the positive class), and per crop task
# (`classification.<name>.crops.task`) those of the nuclei cut from a PanNuke store: its five nucleus types,
# or small vs normal nuclei (the second, small, is the positive class, as micronucleus in NucRec).
NUCREC_CLASS_NAMES = ("nucleus", "micronucleus")
CROP_TASK_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "five_class": ("neoplastic", "inflammatory", "connective", "dead", "epithelial"),
    "binary": ("normal", "small"),
}

# The classification study's CNNs, and those with pretrained (timm, ImageNet) weights.
CNN_MODELS = ("small_cnn", "inception_resnet_v2")
PRETRAINED_CNN_MODELS = ("inception_resnet_v2",)

# Segmentation losses (`segmentation.training.losses.LOSSES`): soft Dice, the PanNuke study's Dice with squared terms
# in the denominator (its equation 4), binary cross-entropy (the classic U-Net study), BCE + Dice (residual U-Net).
LOSS_NAMES = ("dice", "dice_squared", "bce", "bce_dice")

# Instance-aware training targets (`segmentation.representation.targets.TARGETS`,
# `segmentation.representation.postprocess.POSTPROCESSORS`):
# the foreground mask, three classes background/interior/boundary (the DSB2018 winning solutions), and
# foreground plus horizontal/vertical distance maps (HoVer-Net, Graham et al. 2019).
INSTANCE_TARGETS = ("binary", "contour", "hv")

# Test-time augmentation (`segmentation.inference.predictor.Predictor`): none, the four flips, or all eight flips and
# quarter turns (the dihedral group D4).
TTA_MODES = ("none", "flips", "d4")

# The optional nucleus-type head (`training.type_head`): PanNuke's background + five nucleus types
# (PANNUKE_CLASS_NAMES), one softmax over these channels, as HoVer-Net's type branch.
TYPE_HEAD_CLASSES = 6

# The nucleus types of the typed dataset formats, background (id 0) first: PanNuke's five (Gamper et al.
# 2020), HoVer-Net's merged CoNSeP classes (Graham et al. 2019; `hovernet_mat`). A dataset's `classes` key
# overrides them (a QuPath `geojson` export names its own). A type head predicts ids into these names.
PANNUKE_CLASS_NAMES = ("background", "neoplastic", "inflammatory", "connective", "dead", "epithelial")
CONSEP_CLASSES = ("other", "inflammatory", "epithelial", "spindle-shaped")
UNTYPED = "nucleus"  # the type name of a nucleus whose pixels the type head calls background (type id 0)
FORMAT_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "pannuke": PANNUKE_CLASS_NAMES,
    "hovernet_mat": ("background", *CONSEP_CLASSES),
}

# In the three option lists below the first name is the default (the schema's default, and what a spec
# written before the option existed means).
# Which conv kernels the L2 penalty covers (`models.l2_parameters`): every conv layer of the model, as the
# PanNuke study states (Section 3.1), or only the layers it adds to the smp models (the head).
L2_SCOPES = ("added_blocks", "all_conv")

# How images are scaled before the network (`segmentation.training.data.to_tensor`): ImageNet statistics (what smp's
# pretrained encoders expect) or plain 0-1 (the classic U-Net study, Section 3.1).
INPUT_SCALINGS = ("imagenet", "unit")

# Preprocessing of the binary training target (`segmentation.training.data.preprocess_mask`): none, or the classic
# U-Net study's boundary extraction followed by region filling (Section 3.1).
MASK_PREPROCESSING = ("none", "boundary_fill")

# Every dataset `format`; the segmentation ones are converted to the common store.
# image_folders: your own images/ (+ optional masks/) folder, read in place (datasets.image_folders).
# H&E annotation formats: hovernet_mat, HoVer-Net's Images/ + Labels/*.mat (CoNSeP, Kumar, CPM-17;
# datasets.hovernet_mat); monuseg, Aperio ImageScope XML (datasets.monuseg); geojson, images with their QuPath
# GeoJSON exports (datasets.geojson_folders).
DATASET_FORMATS = ("pannuke", "dsb2018", "image_folders", "hovernet_mat", "monuseg", "geojson", "class_folders")
SEGMENTATION_FORMATS = ("pannuke", "dsb2018", "image_folders", "hovernet_mat", "monuseg", "geojson")
# Formats whose stores carry a nucleus type per pixel (a type head can train on them). PanNuke's types are fixed;
# the others name theirs in the dataset config's `classes`.
TYPED_FORMATS = ("pannuke", "hovernet_mat", "geojson")
NAMED_CLASS_FORMATS = ("hovernet_mat", "geojson")
# The image files of a folder of your own images (`datasets.image_folders.IMAGE_SUFFIXES`; the start-up check
# that an inference folder holds an image uses this copy, importable without the image readers).
FOLDER_IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
# Formats read in place from a local folder (a `files:` entry without suffix), never downloaded or unpacked.
FOLDER_FORMATS = ("image_folders", "hovernet_mat", "monuseg", "geojson")
# The resolution (um per pixel) of a format's images when its config sets no microns_per_pixel: PanNuke's
# patches are 40x, 0.25 um/px (Gamper et al. 2020). DSB2018 mixes microscopes and magnifications: none.
FORMAT_MICRONS_PER_PIXEL = {"pannuke": 0.25}

# Explanations (residual U-Net paper, Figures 6-7): what Grad-CAM explains, and the zennit LRP composites.
EXPLAIN_TARGETS = ("predicted", "truth")
LRP_COMPOSITES = ("epsilon_plus_flat", "epsilon_plus", "epsilon_alpha2_beta1")

# Robustness sweep: image perturbations (also usable as training augmentations), and the name of the
# stain-normalised condition in a sweep table.
PERTURBATIONS = ("gaussian_noise", "gaussian_blur", "jpeg", "brightness_contrast", "stain")
STAIN_NORMALISED = "stain_normalised"

# Column labels of the per-image metrics in tables and figures: pixel metrics (segmentation.evaluation.metrics),
# then object metrics; also what a comparison or a robustness sweep may show.
METRIC_DISPLAY_NAMES = {
    "loss": "Loss",
    "acc": "Acc",
    "dice": "DCS",
    "sensitivity": "SN",
    "iou": "IoU",
    "precision": "Precision",
    "f1": "F1",
    "specificity": "Specificity",
    "mcc": "MCC",
    # object-level metrics (segmentation.evaluation.instances)
    "aji": "AJI",
    "pq": "PQ",
    "dq": "DQ",
    "sq": "SQ",
    "map": "mAP",
}


ARCH_DISPLAY = {
    "unet": "U-Net",
    "deeplabv3plus": "DeepLabV3+",
    "resunet": "Residual U-Net",
    "classic_unet": "Classic U-Net",
}
ENCODER_DISPLAY = {
    "resnet18": "ResNet-18",
    "resnet34": "ResNet-34",
    "resnet50": "ResNet-50",
    "efficientnet-b0": "EfficientNet-B0",
    "efficientnet-b4": "EfficientNet-B4",
    "mobilenet_v2": "MobileNetV2",
    NO_ENCODER: "-",
}


def model_label(arch: str, encoder: str, reg: str) -> str:
    """Human-readable model name used in every table and figure, e.g. 'U-Net / ResNet-50 (paper)'."""
    name = ARCH_DISPLAY.get(arch, arch)
    if encoder != NO_ENCODER:
        name += f" / {ENCODER_DISPLAY.get(encoder, encoder)}"
    return f"{name} ({reg})"
