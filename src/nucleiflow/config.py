"""The typed spec of one trained model: its cell, its training and regularization settings, defaults applied once.

The bottom layer under both the workflow (`nucleiflow.workflow` builds specs from the config while the DAG is
built) and the jobs (training, evaluation and inference read them back): standard library only.
`TrainingSettings` and `RegularizationSettings` hold the schema's defaults (schemas/config.schema.yaml), so a
spec written before an option existed means that option's default, and no consumer re-defaults a setting.
Both read like the plain dicts they are stored as (`spec.training["loss"]`, `spec.training.loss`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar

from nucleiflow.errors import ConfigError

NO_REGULARIZATION = "none"  # the built-in regularization cell
ALL_IMAGES = "all"  # evaluate_on split: every labelled image of the dataset's store


class _Settings(Mapping):
    """A frozen dataclass of settings that also reads as the mapping it is stored as.

    It iterates in the order of the section it was read from, then the defaulted keys: Snakemake compares
    params by their repr, so a spec read from the config must give back the config's dict, key order included.
    """

    _order: tuple[str, ...] = ()
    # Keys added after results were made: left out while absent from the section and at their default, so the
    # spec of an unchanged config (Snakemake's params, a checkpoint's identity) stays as it was before them.
    _added_keys: ClassVar[tuple[str, ...]] = ()

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter((*self._order, *(name for name in self._names() if name not in self._order and self._listed(name))))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def _listed(self, name: str) -> bool:
        if name not in self._added_keys:
            return True
        default = next(f.default for f in fields(self) if f.name == name)  # type: ignore[arg-type]
        return getattr(self, name) != default

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))  # type: ignore[arg-type]

    @classmethod
    def from_section(cls, section: Mapping, what: str):
        """The settings of a config section or stored spec; defaults for absent keys, ConfigError for unknown ones."""
        if isinstance(section, cls):
            return section
        unknown = [key for key in section if key not in cls._names()]
        if unknown:
            raise ConfigError(f"{what}: unknown key(s) {unknown}; valid: {', '.join(cls._names())}")
        try:
            settings = cls(**{key: _copied(value) for key, value in section.items()})
        except TypeError:
            required = [f.name for f in fields(cls) if f.default is MISSING]  # type: ignore[arg-type]
            missing = [name for name in required if name not in section]
            raise ConfigError(f"{what}: missing key(s) {missing}") from None
        object.__setattr__(settings, "_order", tuple(section))
        return settings

    def to_dict(self) -> dict:
        return {name: _copied(getattr(self, name)) for name in self}


@dataclass(frozen=True, eq=False)  # compared as a mapping (Mapping.__eq__), also with plain dicts
class TrainingSettings(_Settings):
    """An experiment's `training` section (schema: segmentation.<experiment>.training) with its defaults."""

    epochs: int
    batch_size: int = 8
    lr: float = 0.0001
    loss: str = "dice"
    input_scaling: str = "imagenet"
    target: str = "binary"
    type_head: bool = False
    mask_preprocessing: str = "none"
    input_size: int = 256
    size_policy: str = "resize"
    encoder_weights: str | None = None
    lr_patience: int = 5
    lr_factor: float = 0.5
    lr_schedule: str = "plateau"
    loss_weights: dict | None = None
    early_stopping_patience: int = 0
    prefilter_sigma: float = 0.0
    threshold: float = 0.5
    device: str = "auto"
    amp: bool = True
    keep_last_checkpoint: bool = True

    _added_keys: ClassVar[tuple[str, ...]] = ("lr_schedule", "loss_weights")

    @classmethod
    def from_section(cls, section: Mapping, what: str = "training") -> TrainingSettings:
        return super().from_section(section, what)


@dataclass(frozen=True, eq=False)  # compared as a mapping (Mapping.__eq__), also with plain dicts
class RegularizationSettings(_Settings):
    """A regularization cell (schema: regularization.<name>, less `augmentation`); the defaults are cell "none"."""

    extra_blocks: int = 0
    dropout: float = 0.0
    l2: float = 0.0
    decoder_dropout: float | list[float] = 0.0  # one rate, or [rate, deeper rate]
    l2_scope: str = "added_blocks"

    @classmethod
    def from_section(cls, section: Mapping, what: str = "regularization") -> RegularizationSettings:
        return super().from_section(section, what)


@dataclass(frozen=True)
class ModelCell:
    """One training job: experiment x model x regularization cell."""

    experiment: str
    dataset: str
    arch: str
    encoder: str
    reg: str

    @property
    def label(self) -> str:
        return f"{self.arch}/{self.encoder}/{self.reg}"

    @property
    def wildcards(self) -> dict:
        return {
            "dataset": self.dataset,
            "experiment": self.experiment,
            "arch": self.arch,
            "encoder": self.encoder,
            "reg": self.reg,
        }


@dataclass(frozen=True)
class ModelSpec:
    """Everything that defines one trained model; also the identity its checkpoints must match.

    The workflow passes it to jobs as a plain dict (`to_dict`: Snakemake compares
    params to decide re-runs); the package takes it back with `from_dict`.
    `regularization` and `training` are typed settings with their defaults (given
    as dicts, they are converted once, here).
    """

    dataset: str
    experiment: str
    split: str
    augmentation: str | None
    arch: str
    encoder: str
    reg: str
    regularization: RegularizationSettings
    training: TrainingSettings
    seed: int

    def __post_init__(self) -> None:
        what = f"model spec {self.experiment}/{self.arch}/{self.encoder}/{self.reg}"
        reg = RegularizationSettings.from_section(self.regularization, f"{what} regularization")
        object.__setattr__(self, "regularization", reg)
        object.__setattr__(self, "training", TrainingSettings.from_section(self.training, f"{what} training"))

    def to_dict(self) -> dict:
        """The plain dict, keys in field order (plain dicts for the settings)."""
        return {f.name: _copied(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, spec: Mapping | ModelSpec) -> ModelSpec:
        """The spec from its dict (a ModelSpec is returned as it is); ConfigError naming missing or unknown keys."""
        if isinstance(spec, ModelSpec):
            return spec
        names = [f.name for f in fields(cls)]
        missing = [name for name in names if name not in spec]
        unknown = [key for key in spec if key not in names]
        if missing or unknown:
            problem = f"missing key(s) {missing}" if missing else f"unknown key(s) {unknown}"
            raise ConfigError(f"model spec: {problem}; expected keys: {', '.join(names)}")
        return cls(**{name: _copied(spec[name]) for name in names})


def _copied(value):
    if isinstance(value, _Settings):
        return value.to_dict()
    if isinstance(value, list):
        return list(value)
    return dict(value) if isinstance(value, Mapping) else value


def tunes_postprocess(target: str, postprocess_config: Mapping) -> bool:
    """Whether an experiment tunes its post-processing: `postprocess.tune`, or by default contour and hv only."""
    tune = postprocess_config.get("tune")
    return target != "binary" if tune is None else bool(tune)
