"""A trained model cell as a BioImage Model Zoo package (format 0.5): folder, zip and model card.

`export_model` writes, from a model folder (`model.pt`, `train_info.json`, `history.csv`, the tuned
`postprocess.json` where the experiment tunes) and the experiment's store and split:

* ``package/``: the package as a folder, ``bioimageio.yaml`` with every file it names:
  - ``weights.pt``: the state dict of `network.ExportedNetwork` (architecture `import_from`
    `nucleiflow.export.network`, kwargs: the model's spec), and ``model.torchscript.pt``, the same
    network traced (runs with PyTorch alone);
  - the input ``raw`` (batch, channel red/green/blue, y, x; uint8) with its normalisation as declared
    preprocessing (`training.input_scaling`: ImageNet mean/std or 0-1); the pre-filter
    (`training.prefilter_sigma`) runs as the network's first layer, as the format has no Gaussian step;
  - the output ``maps`` (batch, channel, y, x; float32) with one channel name per map
    (`CHANNEL_NAMES` of the target, then the type head's classes);
  - ``test_input.npy`` / ``test_output.npy``: a crop of one test image at the training size and the
    maps the workflow's own inference (`predictor.Predictor.predict_maps`, TTA off) gives for it;
  - ``cover.png``: that test image beside its predicted nuclei outlined (`predict.outline_overlay`);
  - ``postprocess.json`` (attachment): the watershed settings the workflow uses for this model (the
    tuning record, or the experiment's fixed settings), read back by `load.predictor_from_package`;
  - ``README.md``: the model card (`card.model_card`); ``environment.yaml``: the state dict's dependencies;
* ``bioimageio.zip``: the same package zipped (what the model zoo and its consumers load);
* ``model_card.html``: the card for the workflow report.

The package is validated by `bioimageio.spec` before it is published (`validate_package`);
`bioimageio.core`'s model test reproduces its test output (`workflow_tests/export/test_export.py`).
"""

from __future__ import annotations

import base64
import json
import logging
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from nucleiflow.catalog import INPUT_SCALINGS, TYPE_HEAD_CLASSES
from nucleiflow.config import ModelSpec
from nucleiflow.errors import DataFormatError
from nucleiflow.export.card import CHANNEL_NAMES, model_card, render_html
from nucleiflow.export.network import network_from_model
from nucleiflow.io import atomic_dir, atomic_path, read_json, write_text
from nucleiflow.segmentation.inference.predict import outline_overlay
from nucleiflow.segmentation.inference.predictor import NO_TTA, InferenceConfig, Predictor
from nucleiflow.segmentation.representation.postprocess import params_to_dict
from nucleiflow.segmentation.training.data import IMAGENET_MEAN, IMAGENET_STD, pad_to, resize_pair, split_ids, to_tensor
from nucleiflow.segmentation.training.heads import layout_of
from nucleiflow.store import Store

log = logging.getLogger(__name__)

FORMAT_VERSION = "0.5"
RDF_NAME = "bioimageio.yaml"
INPUT_ID = "raw"
OUTPUT_ID = "maps"
RGB = ("red", "green", "blue")
FILES = {
    "state_dict": "weights.pt",
    "torchscript": "model.torchscript.pt",
    "test_input": "test_input.npy",
    "test_output": "test_output.npy",
    "cover": "cover.png",
    "postprocess": "postprocess.json",
    "card": "README.md",
    "environment": "environment.yaml",
}
# Nothing the workflow writes may be cited as the study's own: the package cites the workflow.
WORKFLOW_CITATION = {
    "text": "nucleiflow: a Snakemake workflow regenerating four nuclei segmentation and classification studies",
    "url": "https://snakemake.github.io/snakemake-workflow-catalog/",
}


def export_model(
    spec: ModelSpec | dict,
    model_dir,
    store_path,
    split_path,
    out: dict,
    *,
    postprocess: dict | None = None,
    tuned_path=None,
    evaluation: dict | None = None,
    settings: dict | None = None,
    threads: int = 1,
) -> dict:
    """Write the package folder, zip and card of one model cell; returns the package's `config.nucleiflow`.

    `out`: paths `package` (folder), `zip` and `card` (HTML). `evaluation`: the cell's test-split
    per-image table (`path`) and the command that made it (`command`), plus optional `cross`
    ({"tested on": per-image CSV}) for the card. `settings`: the experiment's `export` section.
    """
    spec = ModelSpec.from_dict(spec)
    settings = dict(settings or {})
    model_dir = Path(model_dir)
    # On the CPU in full precision: the test tensors must not depend on the training device.
    predictor = Predictor.from_model_dir(
        model_dir, spec=spec, postprocess=postprocess, tuned_path=tuned_path, device="cpu", threads=threads
    )
    config = predictor.config
    store = Store(store_path)
    image_id = test_image_id(pd.read_csv(split_path), settings.get("test_image"), split_path)
    image = store.image(image_id)
    layout = config.layout
    channel_names = output_channels(spec, store.class_names)
    # The expected output is what the workflow's own inference gives for the test input, TTA off.
    crop = test_crop(image, config.input_size, config.size_policy)
    plain = Predictor(predictor.model, replace(config, tta=NO_TTA), predictor.setup, spec=spec)
    expected = plain.predict_maps(crop).astype(np.float32)[None]
    network = network_from_model(spec.to_dict(), predictor.model)
    x = to_tensor(crop, config.input_scaling)[None]
    with torch.no_grad(), warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.export, but it is the zoo's PyTorch format; the tracer's
        # shape checks (`blocks.py`) become constants, which holds for the package's fixed input size.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(network, x, check_trace=False)
        deviation = float((traced(x) - torch.from_numpy(expected)).abs().max())
    log.info("exported network vs the workflow's inference on %s: max |difference| %.3g", image_id, deviation)
    # Cover: the whole test image, predicted as the workflow predicts (its TTA, tuned settings).
    labels, _ = predictor.predict_nuclei(image)
    record = postprocess_record(tuned_path, config)
    meta = {
        "format": 1,
        "spec": spec.to_dict(),
        "postprocess": dict(postprocess or {}),
        "output_layout": {"target": layout.target, "type_classes": layout.type_classes},
        "channels": list(channel_names),
        "input_scaling": config.input_scaling,
        "test_image": image_id,
        "network_deviation": deviation,
        # What the model's outputs mean beyond the maps: the type head's class names (background first)
        # and the training data's resolution, so a package predicts and reads slides as its folder does.
        "class_names": list(store.class_names),
        "microns_per_pixel": settings.get("microns_per_pixel"),
    }
    training = training_summary(model_dir, spec, store, split_path)
    Path(out["package"]).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export.", dir=Path(out["package"]).parent) as staging:
        staging = Path(staging)
        np.save(staging / FILES["test_input"], crop.transpose(2, 0, 1)[None].astype(np.float32))
        np.save(staging / FILES["test_output"], expected)
        torch.save(network.state_dict(), staging / FILES["state_dict"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(traced, str(staging / FILES["torchscript"]))
        cover = np.concatenate([image, outline_overlay(image, labels)], axis=1)
        Image.fromarray(cover).save(staging / FILES["cover"])
        (staging / FILES["postprocess"]).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        (staging / FILES["environment"]).write_text(environment_yaml())
        card = model_card(
            spec,
            training=training,
            evaluation=evaluation,
            postprocess=record,
            channels=channel_names,
            test_image=image_id,
            n_nuclei=int(labels.max(initial=0)),
            settings=settings,
        )
        (staging / FILES["card"]).write_text(card)
        descr = describe(spec, staging, channel_names, meta, settings, config.input_size)
        write_package(descr, out["package"], out["zip"])
        cover_uri = "data:image/png;base64," + base64.b64encode((staging / FILES["cover"]).read_bytes()).decode()
    validate_package(out["zip"])
    write_text(out["card"], render_html(card, cover_uri))
    return meta


def test_image_id(manifest: pd.DataFrame, wanted: str | None, split_path) -> str:
    """The configured test image, else the first test image (sorted ids: the same one every run)."""
    try:
        ids = sorted(split_ids(manifest, "test"))
    except ValueError:
        raise DataFormatError(f"{split_path}: no test images to draw the package's test input from") from None
    if wanted is None:
        return ids[0]
    if wanted not in ids:
        raise DataFormatError(f"export.test_image: {wanted!r} is not a test image of {split_path}; e.g. {ids[0]!r}")
    return wanted


def test_crop(image: np.ndarray, size: int, policy: str) -> np.ndarray:
    """The test input (size, size, 3) uint8: the image resized (policy resize) or its central tile (tile)."""
    if policy == "resize":
        return np.ascontiguousarray(resize_pair(image, image[..., 0], size)[0])
    padded = pad_to(image, size)
    top, left = (padded.shape[0] - size) // 2, (padded.shape[1] - size) // 2
    return np.ascontiguousarray(padded[top : top + size, left : left + size])


def output_channels(spec: ModelSpec, class_names) -> tuple[str, ...]:
    """One name per output channel: the target's maps, then `type_<class>` per type-head class."""
    layout = layout_of(spec.training)
    names = CHANNEL_NAMES[layout.target]
    if layout.type_classes:
        classes = list(class_names)
        if len(classes) != TYPE_HEAD_CLASSES:
            classes = [f"class_{k}" for k in range(TYPE_HEAD_CLASSES)]
        names += tuple(f"type_{name}" for name in classes)
    return names


def postprocess_record(tuned_path, config: InferenceConfig) -> dict:
    """The attachment: the tuning record (tuned models) or the fixed settings, with the TTA every use applies."""
    if tuned_path is not None:
        record = read_json(tuned_path)
        return {**record, "tta": config.tta, "tuned": True, "source": "tuned on the validation split"}
    return {
        "target": config.layout.target,
        "params": params_to_dict(config.watershed),
        "tta": config.tta,
        "tuned": False,
        "source": "the experiment's fixed postprocess settings",
    }


def training_summary(model_dir: Path, spec: ModelSpec, store: Store, split_path) -> dict:
    """What the card says about training: epochs run and best, images per split, the dataset."""
    info = read_json(model_dir / "train_info.json") if (model_dir / "train_info.json").exists() else {}
    history = pd.read_csv(model_dir / "history.csv") if (model_dir / "history.csv").exists() else pd.DataFrame()
    manifest = pd.read_csv(split_path)
    counts = manifest["split"].value_counts().to_dict()
    return {
        "epochs_run": int(len(history)) if len(history) else info.get("epochs_run"),
        "epochs_configured": spec.training["epochs"],
        "best_epoch": info.get("best_epoch"),
        "images": {split: int(counts.get(split, 0)) for split in ("train", "val", "test")},
        "dataset": store.dataset,
        "parameters": info.get("total") or info.get("parameters"),
        "device": info.get("device"),
        "seconds": info.get("seconds") or info.get("train_seconds"),
    }


def environment_yaml() -> str:
    """The state dict's conda environment: the versions this export ran with."""
    import segmentation_models_pytorch
    import timm

    torch_version = torch.__version__.split("+")[0]
    return (
        "# Environment of the state-dict weights; the TorchScript weights need PyTorch only.\n"
        "# The architecture is nucleiflow.export.network:ExportedNetwork: install the workflow's package\n"
        "# (pip install --no-deps -e <workflow checkout>) next to these.\n"
        "name: nucleiflow-model\n"
        "channels: [conda-forge, nodefaults]\n"
        "dependencies:\n"
        "  - python=3.11\n"
        "  - pip\n"
        "  - pip:\n"
        f"      - torch=={torch_version}\n"
        f"      - segmentation-models-pytorch=={segmentation_models_pytorch.__version__}\n"
        f"      - timm=={timm.__version__}\n"
        f"      - numpy=={np.__version__}\n"
    )


def describe(spec: ModelSpec, staging: Path, channel_names, meta: dict, settings: dict, size: int):
    """The bioimageio.spec 0.5 `ModelDescr` of the staged files."""
    from bioimageio.spec.model import v0_5 as bio

    training = spec.training
    layout = layout_of(training)
    scaling = training.get("input_scaling", INPUT_SCALINGS[0])
    preprocessing = []
    if scaling == "imagenet":
        preprocessing.append(
            bio.FixedZeroMeanUnitVarianceDescr(
                kwargs=bio.FixedZeroMeanUnitVarianceAlongAxisKwargs(
                    mean=[float(255.0 * m) for m in IMAGENET_MEAN],
                    std=[float(255.0 * s) for s in IMAGENET_STD],
                    axis=bio.AxisId("channel"),
                )
            )
        )
    else:
        preprocessing.append(bio.ScaleLinearDescr(kwargs=bio.ScaleLinearKwargs(gain=1.0 / 255.0, offset=0.0)))
    sigma = float(training.get("prefilter_sigma") or 0.0)
    prefilter = f"; Gaussian pre-filter sigma {sigma:g} px in the network" if sigma else ""
    space_in = [bio.SpaceInputAxis(id=bio.AxisId(axis), size=size) for axis in ("y", "x")]
    space_out = [
        bio.SpaceOutputAxis(id=bio.AxisId(axis), size=bio.SizeReference(tensor_id=INPUT_ID, axis_id=axis))
        for axis in ("y", "x")
    ]
    inputs = [
        bio.InputTensorDescr(
            id=bio.TensorId(INPUT_ID),
            description=(
                f"RGB 0-255 (8 bit as float32), {size} px ({training['size_policy']} policy), "
                f"{scaling} scaling{prefilter}"
            )[:128],
            axes=[
                bio.BatchAxis(),
                bio.ChannelAxis(channel_names=[bio.Identifier(c) for c in RGB]),
                *space_in,
            ],
            test_tensor=bio.FileDescr(source=staging / FILES["test_input"]),
            data=bio.IntervalOrRatioDataDescr(type="float32", range=(0.0, 255.0)),
            preprocessing=preprocessing,
        )
    ]
    outputs = [
        bio.OutputTensorDescr(
            id=bio.TensorId(OUTPUT_ID),
            description=f"{layout.target} maps (channel names); nuclei: the watershed of postprocess.json"[:128],
            axes=[
                bio.BatchAxis(),
                bio.ChannelAxis(channel_names=[bio.Identifier(c) for c in channel_names]),
                *space_out,
            ],
            test_tensor=bio.FileDescr(source=staging / FILES["test_output"]),
            data=bio.IntervalOrRatioDataDescr(type="float32"),
        )
    ]
    version = bio.Version(torch.__version__.split("+")[0])
    weights = bio.WeightsDescr(
        pytorch_state_dict=bio.PytorchStateDictWeightsDescr(
            source=staging / FILES["state_dict"],
            architecture=bio.ArchitectureFromLibraryDescr(
                callable=bio.Identifier("ExportedNetwork"),
                import_from="nucleiflow.export.network",
                kwargs={"spec": json.loads(json.dumps(spec.to_dict()))},
            ),
            pytorch_version=version,
            dependencies=bio.FileDescr(source=staging / FILES["environment"]),
        ),
        torchscript=bio.TorchscriptWeightsDescr(
            source=staging / FILES["torchscript"], pytorch_version=version, parent="pytorch_state_dict"
        ),
    )
    authors = [bio.Author(**author) for author in settings.get("authors") or [{"name": "nucleiflow workflow"}]]
    cite = [bio.CiteEntry(**entry) for entry in settings.get("cite") or []] or [bio.CiteEntry(**WORKFLOW_CITATION)]
    name = settings.get("name") or f"nucleiflow {spec.experiment} {spec.arch} {spec.encoder} {spec.reg}"
    return bio.ModelDescr(
        name=name,
        description=(
            f"Nuclei segmentation ({layout.target} target{', type head' if layout.type_classes else ''}) "
            f"trained on {spec.dataset} ({spec.split} split) by the nucleiflow workflow: {spec.arch}"
            + (f" with a {spec.encoder} encoder" if spec.encoder != "none" else "")
            + f", regularization {spec.reg}."
        ),
        authors=authors,
        cite=cite,
        license=bio.LicenseId(settings.get("license") or "CC-BY-4.0"),
        documentation=bio.FileDescr(source=staging / FILES["card"]),
        covers=[bio.FileDescr(source=staging / FILES["cover"])],
        attachments=[bio.FileDescr(source=staging / FILES["postprocess"])],
        tags=["nuclei", "segmentation", "instance-segmentation", layout.target, spec.arch, "pytorch", "2d"],
        inputs=inputs,
        outputs=outputs,
        weights=weights,
        config={"nucleiflow": meta},
    )


def write_package(descr, folder, zip_path) -> None:
    """The package as a folder and as a zip, each replaced atomically."""
    from bioimageio.spec import save_bioimageio_package, save_bioimageio_package_as_folder

    with atomic_dir(folder) as tmp:
        save_bioimageio_package_as_folder(descr, output_path=tmp)
    with atomic_path(zip_path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        tmp.unlink()
        save_bioimageio_package(descr, output_path=tmp)


def validate_package(source) -> None:
    """DataFormatError unless bioimageio.spec loads `source` (folder, yaml or zip) as a valid 0.5 model."""
    from bioimageio.spec import InvalidDescr, load_description

    descr = load_description(source, perform_io_checks=True, format_version="discover")
    if isinstance(descr, InvalidDescr) or descr.validation_summary.status == "failed":
        raise DataFormatError(f"{source}: not a valid BioImage Model Zoo package: {descr.validation_summary.format()}")
    log.info("%s: valid bioimageio %s %s", source, descr.type, descr.format_version)
