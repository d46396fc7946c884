"""Pretrained weights for offline compute nodes: cache them once, check before training.

Where the libraries fetch weights from (segmentation-models-pytorch 0.6.0, timm 1.0):

* smp encoders (`encoder_weights: imagenet`): `hf_hub_download` of `config.json` and
  `model.safetensors` from the Hugging Face Hub repo in the encoder's
  `pretrained_settings[weights]` (e.g. `smp-hub/resnet50.imagenet`), pinned to a commit.
* timm classifiers (`timm.create_model(name, pretrained=True)`, the classification
  study's `cnn.pretrained: true`): the model's `pretrained_cfg.hf_hub_id` (e.g.
  `timm/inception_resnet_v2.tf_in1k`) at its main branch, `model.safetensors`
  (or `pytorch_model.bin` where a repo has no safetensors).

Both land in the Hugging Face hub cache: `$HF_HUB_CACHE`, by default `$HF_HOME/hub`
(`~/.cache/huggingface/hub`). TORCH_HOME is not used for these weights.

`cache_encoder_weights` builds the model once with its weights (the library
downloads them into that cache) on a machine with internet; the workflow's
`cache_weights` rule runs it on the login node and writes a marker per
(arch, encoder) listing the files and their SHA-256. `check_weights_available`
(and `cached_weight_files`, which also returns the paths) looks into the cache
only (no network), so a job on an offline node fails at once with one line
saying what to run, instead of a network timeout deep in the library.

Which weights a config needs, and their marker files, is `nucleiflow.workflow.weights`
(read while the DAG is built); `check_offline_weights` runs at start-up too and loads
the libraries only when HF_HUB_OFFLINE is set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nucleiflow.catalog import PRETRAINED_CNN_MODELS
from nucleiflow.download import DownloadError, sha256sum
from nucleiflow.errors import ConfigError, choices_error
from nucleiflow.io import write_json
from nucleiflow.workflow.weights import CNN_ARCH, CNN_WEIGHTS, PretrainedModel, pretrained_models

CACHE_HINT = (
    "run `snakemake cache_weights --cores 1` on a machine with internet (a login node) first, with the same HF_HOME"
)


@dataclass(frozen=True)
class HubFiles:
    """Where a library fetches one set of weights: a hub repo, a revision and the files it loads."""

    repo_id: str
    revision: str | None  # a commit (smp pins one) or None for the main branch (timm)
    required: tuple[str, ...]  # every one must be cached
    any_of: tuple[str, ...] = ()  # at least one must be cached (timm: safetensors, else a pickle)

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}"


# --- where the library looks --------------------------------------------------
def hub_cache_dir() -> Path:
    """The Hugging Face hub cache both libraries download into (read now, so tests can move it)."""
    from huggingface_hub import constants  # lazy: keeps the config functions import-light

    return Path(constants.HF_HUB_CACHE)


def weights_source(arch: str, encoder: str, weights: str) -> HubFiles:
    """Which hub repo, revision and files the library loads for these weights."""
    if arch == CNN_ARCH:
        return _timm_source(encoder, weights)
    return _smp_source(arch, encoder, weights)


def _smp_source(arch: str, encoder: str, weights: str) -> HubFiles:
    from segmentation_models_pytorch.encoders import encoders as smp_encoders

    from .models.registry import get_spec

    if not get_spec(arch, encoder).uses_smp_encoder:
        raise ConfigError(f"encoder_weights: {arch} has no pretrained encoder; use null (got {weights!r})")
    settings = smp_encoders[encoder]["pretrained_settings"]
    if weights not in settings:
        raise choices_error(f"encoder_weights (for {encoder})", weights, settings)
    # smp 0.6.0 get_encoder: hf_hub_download of config.json, then model.safetensors, at a pinned commit.
    return HubFiles(settings[weights]["repo_id"], settings[weights]["revision"], ("config.json", "model.safetensors"))


def _timm_source(model: str, weights: str) -> HubFiles:
    import timm
    from timm.models._hub import hf_split  # how timm itself splits "repo@revision"

    if model not in PRETRAINED_CNN_MODELS:
        raise choices_error("cnn.models (pretrained)", model, PRETRAINED_CNN_MODELS)
    if weights != CNN_WEIGHTS:
        raise choices_error(f"weights (for {model})", weights, [CNN_WEIGHTS])
    cfg = timm.models.get_pretrained_cfg(model)
    repo_id, revision = hf_split(cfg.hf_hub_id)
    if cfg.hf_hub_filename:
        return HubFiles(repo_id, revision, (cfg.hf_hub_filename,))
    # timm's load_state_dict_from_hf: model.safetensors first, pytorch_model.bin if the repo lacks it.
    return HubFiles(repo_id, revision, (), ("model.safetensors", "pytorch_model.bin"))


def repo_cache_dir(source: HubFiles) -> Path:
    """The cache folder of the source's repo (`models--<owner>--<name>`), named as huggingface_hub does."""
    from huggingface_hub.file_download import repo_folder_name

    return hub_cache_dir() / repo_folder_name(repo_id=source.repo_id, repo_type="model")


def _cached(source: HubFiles, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    # Reads the cache only: never a network call, whatever HF_HUB_OFFLINE says.
    found = try_to_load_from_cache(source.repo_id, filename, cache_dir=hub_cache_dir(), revision=source.revision)
    return Path(found) if isinstance(found, str) else None


def cached_files(source: HubFiles) -> list[Path] | None:
    """The cached files the library would load, or None if any is missing."""
    found_required = [_cached(source, name) for name in source.required]
    required = [path for path in found_required if path is not None]
    if len(required) < len(found_required):
        return None
    if not source.any_of:
        return required
    alternatives = (_cached(source, name) for name in source.any_of)
    found = next((path for path in alternatives if path is not None), None)
    return None if found is None else [*required, found]


def cached_weight_files(arch: str, encoder: str, weights: str) -> list[Path]:
    """The cached files the library loads for these weights; a one-line ConfigError naming the rule if missing."""
    source = weights_source(arch, encoder, weights)
    files = cached_files(source)
    if files is None:
        raise ConfigError(
            f"encoder weights {weights} for {arch}/{encoder} are not in the cache "
            f"({repo_cache_dir(source)}); {CACHE_HINT}"
        )
    return files


def check_weights_available(arch: str, encoder: str, weights: str | None) -> None:
    """ConfigError (one line, naming the rule to run) unless the weights are in the local cache.

    Only the cache is read, so the answer is the same on- and offline (no
    network probe); call it before building a pretrained model on a node that
    may have no internet. `weights=None` (train from scratch) needs nothing.
    """
    if weights is not None:
        cached_weight_files(arch, encoder, weights)


def hub_offline() -> bool:
    """Whether Hugging Face downloads are switched off (HF_HUB_OFFLINE, as huggingface_hub reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def check_offline_weights(config: dict) -> None:
    """Offline, every pretrained weight the config trains from must already be cached.

    With HF_HUB_OFFLINE set nothing can fetch them, not even the cache rule, so the
    run stops at start-up, before any job, with one line naming the first missing
    weights, the cache folder and the command that caches them. Online, the
    `cache_encoder_weights` jobs fetch what is missing.
    """
    if not hub_offline():
        return
    for model in pretrained_models(config):
        try:
            cached_weight_files(model.arch, model.encoder, model.weights)
        except ConfigError as err:
            raise ConfigError(f"HF_HUB_OFFLINE is set and {err}") from None


# --- caching (needs internet) ---------------------------------------------------
def _build_with_weights(arch: str, encoder: str, weights: str) -> None:
    """Build the model with its weights, so the library downloads exactly what it loads."""
    if arch == CNN_ARCH:
        import timm

        # timm itself, not classification.models.build_classifier: that one only reads the cache.
        timm.create_model(encoder, pretrained=True)
    else:
        from .models import build_model

        build_model(arch, encoder, encoder_weights=weights)


def cache_encoder_weights(arch: str, encoder: str, weights: str = "imagenet") -> list[Path]:
    """Download the weights into the library's cache (if not there yet); return the cached files."""
    source = weights_source(arch, encoder, weights)
    try:
        _build_with_weights(arch, encoder, weights)
    except OSError as err:  # huggingface_hub's HTTP and offline errors are OSErrors
        reason = str(err).strip().splitlines()[0].rstrip(".") if str(err).strip() else type(err).__name__
        raise DownloadError(
            f"could not fetch {weights} weights for {arch}/{encoder} from {source.url}: {reason}; "
            "run this on a machine with internet and HF_HUB_OFFLINE unset"
        ) from None
    files = cached_files(source)
    if files is None:
        raise ConfigError(
            f"{weights} weights for {arch}/{encoder} loaded but are not under {repo_cache_dir(source)}; "
            "was HF_HUB_CACHE changed while running?"
        )
    return files


def write_weights_marker(path: str | Path, model: PretrainedModel, files: list[Path]) -> dict:
    """Write the marker JSON (source, cache folder, files with SHA-256 and size); returns its content."""
    source = weights_source(model.arch, model.encoder, model.weights)
    marker = {
        "arch": model.arch,
        "encoder": model.encoder,
        "weights": model.weights,
        "repo_id": source.repo_id,
        "revision": source.revision,
        "url": source.url,
        "cache_dir": str(hub_cache_dir()),
        "files": [{"path": str(f), "sha256": sha256sum(f), "bytes": f.stat().st_size} for f in files],
    }
    write_json(path, marker)
    return marker
