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

# The classification study's CNNs, and those with pretrained (timm, ImageNet) weights.
CNN_MODELS = ("small_cnn", "inception_resnet_v2")
PRETRAINED_CNN_MODELS = ("inception_resnet_v2",)

# Segmentation losses (`segmentation.losses.LOSSES`): soft Dice, the PanNuke study's Dice with squared terms
# in the denominator (its equation 4), binary cross-entropy (the classic U-Net study), BCE + Dice (residual U-Net).
LOSS_NAMES = ("dice", "dice_squared", "bce", "bce_dice")

# Instance-aware training targets (`segmentation.targets.TARGETS`, `segmentation.postprocess.POSTPROCESSORS`):
# the foreground mask, three classes background/interior/boundary (the DSB2018 winning solutions), and
# foreground plus horizontal/vertical distance maps (HoVer-Net, Graham et al. 2019).
INSTANCE_TARGETS = ("binary", "contour", "hv")

# Test-time augmentation (`segmentation.predictor.Predictor`): none, the four flips, or all eight flips and
# quarter turns (the dihedral group D4).
TTA_MODES = ("none", "flips", "d4")

# The optional nucleus-type head (`training.type_head`): PanNuke's background + five nucleus types
# (datasets.pannuke.CLASS_NAMES), one softmax over these channels, as HoVer-Net's type branch.
TYPE_HEAD_CLASSES = 6

# In the three option lists below the first name is the default (the schema's default, and what a spec
# written before the option existed means).
# Which conv kernels the L2 penalty covers (`models.l2_parameters`): every conv layer of the model, as the
# PanNuke study states (Section 3.1), or only the layers it adds to the smp models (the head).
L2_SCOPES = ("added_blocks", "all_conv")

# How images are scaled before the network (`segmentation.data.to_tensor`): ImageNet statistics (what smp's
# pretrained encoders expect) or plain 0-1 (the classic U-Net study, Section 3.1).
INPUT_SCALINGS = ("imagenet", "unit")

# Preprocessing of the binary training target (`segmentation.data.preprocess_mask`): none, or the classic
# U-Net study's boundary extraction followed by region filling (Section 3.1).
MASK_PREPROCESSING = ("none", "boundary_fill")

# Every dataset `format`; the segmentation ones are converted to the common store.
# image_folders: your own images/ (+ optional masks/) folder, read in place (datasets.image_folders).
DATASET_FORMATS = ("pannuke", "dsb2018", "image_folders", "class_folders")
SEGMENTATION_FORMATS = ("pannuke", "dsb2018", "image_folders")

# Explanations (residual U-Net paper, Figures 6-7): what Grad-CAM explains, and the zennit LRP composites.
EXPLAIN_TARGETS = ("predicted", "truth")
LRP_COMPOSITES = ("epsilon_plus_flat", "epsilon_plus", "epsilon_alpha2_beta1")

# Robustness sweep: image perturbations (also usable as training augmentations).
PERTURBATIONS = ("gaussian_noise", "gaussian_blur", "jpeg", "brightness_contrast", "stain")

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
