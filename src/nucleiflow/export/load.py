"""Reading an exported package back: a model trained elsewhere on this workflow, without its training outputs.

A package (a folder with ``rdf.yaml`` / ``bioimageio.yaml``, or its zip) written by `package.export_model`
carries in ``config.nucleiflow`` the model's spec and its experiment's ``postprocess`` section; its
state-dict weights are `network.ExportedNetwork`'s, whose ``model.*`` entries are the trained model's own
weights; its ``postprocess.json`` attachment holds the watershed settings. `load_package_model` turns
them into the same `Predictor` as `Predictor.from_model_dir` gives for the trained folder
(`predictor_from_package`, or `load_predictor` for either), so predicting from the package equals
predicting from the folder.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from nucleiflow.errors import DataFormatError

if TYPE_CHECKING:
    from nucleiflow.segmentation.inference.predictor import Predictor

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
NETWORK_PREFIX = "model."  # ExportedNetwork.model: the trained model inside the package's network


@dataclass(frozen=True)
class Package:
    """An unpacked package: its folder, its description (the parsed YAML) and the workflow's part of it."""

    folder: Path
    rdf: dict

    @property
    def meta(self) -> dict:
        return self.rdf["config"]["nucleiflow"]

    @property
    def spec(self) -> dict:
        return self.meta["spec"]

    @property
    def postprocess(self) -> dict:
        """The experiment's `postprocess` section the model was evaluated with."""
        return dict(self.meta.get("postprocess") or {})

    @property
    def tuned(self) -> bool:
        """Whether the attachment holds settings tuned on the validation split (else the fixed ones)."""
        return bool(json.loads(self.postprocess_path.read_text()).get("tuned", True))

    @property
    def state_dict_path(self) -> Path:
        return self.folder / self.rdf["weights"]["pytorch_state_dict"]["source"]

    @property
    def postprocess_path(self) -> Path:
        """The postprocess.json attachment: the watershed settings (tuned or fixed) every use applies."""
        for attachment in self.rdf.get("attachments") or []:
            if Path(attachment["source"]).name == "postprocess.json":
                return self.folder / attachment["source"]
        raise DataFormatError(f"{self.folder}: the package has no postprocess.json attachment")


def rdf_file(folder: Path) -> Path | None:
    return next((folder / name for name in RDF_NAMES if (folder / name).is_file()), None)


def is_package(path) -> bool:
    """Whether `path` is an exported package: a .zip, or a folder holding rdf.yaml / bioimageio.yaml."""
    path = Path(path)
    return (path.is_file() and path.suffix == ".zip") or (path.is_dir() and rdf_file(path) is not None)


def package_meta(source) -> dict:
    """A package's `config.nucleiflow` (spec, post-processing, type names, resolution), read without unpacking.

    Cheap enough for the workflow to call while it builds the DAG (the slide stage's resolution).
    DataFormatError naming the file when it is not a package this workflow wrote.
    """
    source = Path(source)
    text = None
    if source.is_dir():
        found = rdf_file(source)
        text = found.read_text() if found else None
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            names = [n for n in zf.namelist() if Path(n).name in RDF_NAMES and len(Path(n).parts) <= 2]
            text = zf.read(sorted(names, key=len)[0]).decode() if names else None
    if text is None:
        raise DataFormatError(f"{source}: not a model package (a zip or a folder with {' or '.join(RDF_NAMES)})")
    rdf = yaml.safe_load(text)
    meta = ((rdf or {}).get("config") or {}).get("nucleiflow") if isinstance(rdf, dict) else None
    if not isinstance(meta, dict):
        raise DataFormatError(f"{source}: a model package without config.nucleiflow (not exported by this workflow)")
    return meta


def open_package(source, unpack_dir=None) -> Package:
    """The package at `source` (folder or zip; a zip is unpacked to `unpack_dir`, default a temporary folder).

    DataFormatError naming the file when it is not a package this workflow wrote.
    """
    from nucleiflow.archive import safe_extract_zip

    source = Path(source)
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise DataFormatError(f"{source}: not a model package (a zip or a folder with {' or '.join(RDF_NAMES)})")
        if unpack_dir is None:
            unpack_dir = tempfile.mkdtemp(prefix="nucleiflow-package-")
            atexit.register(shutil.rmtree, unpack_dir, ignore_errors=True)  # the weights are read by then
        folder = safe_extract_zip(source, unpack_dir)
    elif source.is_dir():
        folder = source
    else:
        raise DataFormatError(f"{source}: no such model package (a zip or a folder with {' or '.join(RDF_NAMES)})")
    rdf_path = rdf_file(folder)
    if rdf_path is None:
        raise DataFormatError(f"{source}: not a model package: no {' or '.join(RDF_NAMES)} inside")
    rdf = yaml.safe_load(rdf_path.read_text())
    if not isinstance(rdf, dict) or "nucleiflow" not in (rdf.get("config") or {}):
        raise DataFormatError(
            f"{rdf_path}: a model package without config.nucleiflow; only packages this workflow exported "
            "(rule export_model) carry the spec and post-processing it needs"
        )
    if "pytorch_state_dict" not in (rdf.get("weights") or {}):
        raise DataFormatError(f"{rdf_path}: the package has no pytorch_state_dict weights")
    return Package(folder, rdf)


def model_state(package: Package) -> dict:
    """The trained model's state dict from the package's network weights (the `model.` entries)."""
    import torch

    network = torch.load(package.state_dict_path, map_location="cpu", weights_only=True)
    state = {key[len(NETWORK_PREFIX) :]: value for key, value in network.items() if key.startswith(NETWORK_PREFIX)}
    if not state:
        raise DataFormatError(f"{package.state_dict_path}: no {NETWORK_PREFIX}* weights (not an exported network)")
    return state


def predictor_from_package(
    source, *, device: str | None = None, batch_size: int | None = None, threads: int = 1, maps_only: bool = False
):
    """The `Predictor` of a package (folder or zip): its spec's settings, its weights, its postprocess.json.

    The same configuration and weights as `Predictor.from_model_dir` of the trained folder, so the maps and
    nuclei are the same; `device`, `batch_size`, `threads` and `maps_only` as there.
    """
    from dataclasses import replace

    from nucleiflow.config import ModelSpec
    from nucleiflow.segmentation.inference.predictor import InferenceConfig, Predictor, model_on_device

    package = open_package(source)
    spec = ModelSpec.from_dict(package.spec)
    # Tuned settings come from the attachment; fixed ones from the experiment's postprocess section, as for
    # the trained folder (the attachment then records the same values).
    tuned_path = package.postprocess_path if package.tuned else None
    config = InferenceConfig.from_spec(spec, package.postprocess, tuned_path, maps_only=maps_only)
    if batch_size is not None:
        config = replace(config, batch_size=batch_size)
    model, setup = model_on_device(spec, model_state(package), threads, device)
    return Predictor(model, config, setup, spec=spec, type_names=package.meta.get("class_names"))


def load_predictor(
    path: str | Path,
    *,
    spec: Mapping | None = None,
    postprocess: Mapping | None = None,
    tuned_path: str | Path | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    threads: int = 1,
    maps_only: bool = False,
    type_names: Sequence[str] | None = None,
) -> Predictor:
    """The predictor of a trained model folder (or its model.pt), or of an exported model package.

    Args:
        path: a model folder / model.pt (`Predictor.from_model_dir`, with `spec`, `postprocess`, `tuned_path`
            and `type_names`), or a package written by the export stage: its bioimageio.zip or its folder
            (rdf.yaml inside), which carries its spec, weights, post-processing settings and type names.
        device, batch_size, threads, maps_only: as in `Predictor.from_model_dir`.

    Returns:
        The predictor; a package's equals the one of the folder it was exported from.

    Raises:
        DataFormatError: a zip or folder that is not a package of this workflow (`open_package`).
    """
    from nucleiflow.segmentation.inference.predictor import Predictor

    if is_package(path):
        return predictor_from_package(path, device=device, batch_size=batch_size, threads=threads, maps_only=maps_only)
    return Predictor.from_model_dir(
        path,
        spec=spec,
        type_names=type_names,
        postprocess=postprocess,
        tuned_path=tuned_path,
        device=device,
        batch_size=batch_size,
        threads=threads,
        maps_only=maps_only,
    )
