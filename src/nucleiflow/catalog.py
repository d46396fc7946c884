"""Names of the model zoo, importable without torch.

The config is checked against this at workflow start-up (parsing the DAG must
stay fast); `models.registry` builds exactly these.
"""

SMP_ENCODERS = ("resnet18", "resnet34", "resnet50", "efficientnet-b0", "efficientnet-b4", "mobilenet_v2")

# architecture -> valid encoders ("none" for the self-contained U-Nets)
ARCH_ENCODERS: dict[str, tuple[str, ...]] = {
    "unet": SMP_ENCODERS,
    "deeplabv3plus": SMP_ENCODERS,
    "resunet": ("none",),
    "classic_unet": ("none",),
}

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

DATASET_FORMATS = ("pannuke", "dsb2018", "class_folders")
SEGMENTATION_FORMATS = ("pannuke", "dsb2018")

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
    "none": "-",
}


def model_label(arch: str, encoder: str, reg: str) -> str:
    """Human-readable model name used in every table and figure, e.g. 'U-Net / ResNet-50 (paper)'."""
    name = ARCH_DISPLAY.get(arch, arch)
    if encoder != "none":
        name += f" / {ENCODER_DISPLAY.get(encoder, encoder)}"
    return f"{name} ({reg})"
