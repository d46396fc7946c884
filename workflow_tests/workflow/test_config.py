"""Config checks: the schema and the cross-reference checks stop bad input before any job."""

import copy
import hashlib
import os
import subprocess
import zipfile

import pytest
import yaml
from conftest import REPO, SNAKEMAKE
from PIL import Image
from test_readme_commands import readme_commands

from nucleiflow.errors import ConfigError
from nucleiflow.workflow.cells import regularization_cell, segmentation_cells
from nucleiflow.workflow.checks import check_config, check_local_sources

TINY = yaml.safe_load((REPO / "workflow_tests" / "config_tiny.yaml").read_text())


def _tiny():
    config = copy.deepcopy(TINY)
    # Defaults the schema fills in at start-up.
    config["comparisons"]["tiny_models"].setdefault("split", "test")
    config["segmentation"]["dsb_tiny"].setdefault("evaluate_splits", ["test"])
    return config


def test_grid_expands_models_times_regularization():
    cells = segmentation_cells(TINY, "pannuke_tiny")
    assert [c.label for c in cells] == ["unet/resnet18/none", "unet/resnet18/paper", "deeplabv3plus/resnet18/paper"]
    assert all(c.dataset == "pannuke" for c in cells)
    assert regularization_cell(TINY, "none") == {
        "extra_blocks": 0,
        "dropout": 0.0,
        "l2": 0.0,
        "decoder_dropout": 0.0,
        "l2_scope": "added_blocks",
    }
    assert regularization_cell(TINY, "paper")["dropout"] == 0.5


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda c: c["segmentation"]["pannuke_tiny"]["models"][0].update(encoder="resnet51"),
            "segmentation.pannuke_tiny.models[0].encoder (for unet): 'resnet51' is not valid; choose one of: ",
        ),
        (
            lambda c: c["segmentation"]["pannuke_tiny"].update(dataset="monuseg"),
            "segmentation.pannuke_tiny.dataset: 'monuseg' is not valid; choose one of: dsb2018, nucrec, pannuke",
        ),
        (
            lambda c: c["segmentation"]["pannuke_tiny"].update(split="nope"),
            "segmentation.pannuke_tiny.split: 'nope' is not valid; choose one of: official",
        ),
        (
            lambda c: c["segmentation"]["pannuke_tiny"].update(regularization=["heavy"]),
            "segmentation.pannuke_tiny.models[0].regularization: 'heavy' is not valid; choose one of: none, paper",
        ),
        (
            lambda c: c["classification"]["nucrec_tiny"].update(classifiers=["XGBoost"]),
            "classification.nucrec_tiny.classifiers: 'XGBoost' is not valid; choose one of: ",
        ),
        (
            lambda c: c["segmentation"]["dsb_tiny"].update(dataset="nucrec"),
            "segmentation.dsb_tiny.dataset: 'nucrec' has format 'class_folders'",
        ),
        (
            lambda c: c["comparisons"]["tiny_models"].update(experiments=["pannuke_tiny", "dsb_big"]),
            "comparisons.tiny_models.experiments: 'dsb_big' is not valid; choose one of: dsb_tiny, pannuke_tiny",
        ),
        (
            lambda c: (
                c["regularization"]["paper"].update(decoder_dropout=0.2),
                c["segmentation"]["dsb_tiny"].update(regularization=["paper"]),
            ),
            "segmentation.dsb_tiny.models[0]: regularization cell 'paper' sets decoder_dropout, which only",
        ),
        (
            lambda c: c["datasets"]["pannuke"].update(classes=["tumour"]),
            "datasets.pannuke.classes: format 'pannuke' has no named nucleus types; classes apply to format "
            "hovernet_mat or geojson",
        ),
        (
            lambda c: c["segmentation"]["dsb_tiny"]["training"].update(type_head=True),
            "segmentation.dsb_tiny.training.type_head: dataset 'dsb2018' (format 'dsb2018') has no nucleus types",
        ),
        (
            # The residual U-Net has no encoder: its training job would refuse ImageNet weights hours into a run.
            lambda c: c["segmentation"]["dsb_tiny"]["training"].update(encoder_weights="imagenet"),
            "segmentation.dsb_tiny.training.encoder_weights: 'imagenet' needs a pretrained encoder, and models[0] "
            "(resunet) has none; set encoder_weights: null",
        ),
        (
            lambda c: c["comparisons"]["tiny_models"].update(split="train"),
            "comparisons.tiny_models.split: 'train' is not evaluated by experiment 'pannuke_tiny'",
        ),
    ],
)
def test_cross_reference_errors_name_key_value_and_choices(edit, message):
    """Each edit of the tiny config is refused with its one-line message."""
    config = _tiny()
    edit(config)
    with pytest.raises(ConfigError) as err:
        check_config(config)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_missing_local_source_is_an_error_unless_the_workflow_makes_it(tmp_path):
    config = _tiny()
    check_local_sources(config, produced_under="resources/demo")  # demo archives: made by a rule
    config["datasets"]["nucrec"]["files"]["nucrec.zip"]["url"] = str(tmp_path / "NucRec.zip")
    with pytest.raises(ConfigError, match=r"datasets.nucrec.files.nucrec.zip.url: '.*NucRec.zip' does not exist"):
        check_local_sources(config, produced_under="resources/demo")
    config["datasets"]["pannuke"]["files"]["fold_1.zip"]["source"] = str(tmp_path / "fold_1.zip")
    with pytest.raises(ConfigError, match=r"datasets.pannuke.files.fold_1.zip.source: '.*fold_1.zip' does not exist"):
        check_local_sources(config)


def test_an_inference_folder_without_images_is_refused_at_start_up(tmp_path):
    config = _tiny()
    (tmp_path / "mine" / "images").mkdir(parents=True)
    (tmp_path / "mine" / "images" / "notes.txt").write_text("not an image")
    for folder in (tmp_path / "mine", tmp_path / "mine" / "images"):  # the folder, or its images/ itself
        config["inference"] = {"own": {"model": "dsb_tiny/resunet/none/none", "images": str(folder)}}
        with pytest.raises(ConfigError, match=rf"inference.own.images: '{folder}' holds no image \(valid: .png"):
            check_local_sources(config, produced_under="resources/demo")
    Image.new("RGB", (8, 8)).save(tmp_path / "mine" / "images" / "a.png")
    check_local_sources(config, produced_under="resources/demo")


def _dry_run(config: dict, workdir) -> subprocess.CompletedProcess:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [
            SNAKEMAKE,
            "-n",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--configfile",
            str(path),
            "--directory",
            str(workdir),
            "--cores",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "edit, line",
    [
        (
            lambda c: c["segmentation"]["pannuke_tiny"]["models"][0].update(arch="unett"),
            "config segmentation.pannuke_tiny.models.0.arch: 'unett' is not one of "
            "['unet', 'deeplabv3plus', 'resunet', 'classic_unet']",
        ),
        (
            lambda c: c["segmentation"]["dsb_tiny"]["training"].update(epochs=-1),
            "config segmentation.dsb_tiny.training.epochs: -1 is less than the minimum of 1",
        ),
        (
            lambda c: c["datasets"]["pannuke"].update(format="kumar"),
            "config datasets.pannuke.format: 'kumar' is not one of "
            "['pannuke', 'dsb2018', 'image_folders', 'hovernet_mat', 'monuseg', 'geojson', 'class_folders']",
        ),
        (
            lambda c: c["segmentation"]["pannuke_tiny"]["models"][1].update(encoder="vgg16"),
            "segmentation.pannuke_tiny.models[1].encoder (for deeplabv3plus): 'vgg16' is not valid; choose one of:",
        ),
    ],
)
def test_snakemake_stops_before_any_job_with_one_line(tmp_path, edit, line):
    config = _tiny()
    edit(config)
    result = _dry_run(config, tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert line in output, output[-2000:]
    assert "rule " not in output.split(line)[0]  # no job was scheduled before the error
    assert not (tmp_path / "resources").exists() and not (tmp_path / "results").exists()


@pytest.mark.parametrize("name", ["paper.yaml", "dsb2018_cpu.yaml"])
def test_shipped_configs_pass_the_start_up_checks(name):
    """What snakemake runs before any job (schema with defaults, then the cross-reference checks)."""
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config" / name).read_text())
    validate(config, str(REPO / "schemas" / "config.schema.yaml"))
    check_config(config)


def test_cpu_config_runs_from_local_sources(tmp_path):
    """config/dsb2018_cpu.yaml plus a second config file of `source:` paths: the README's real-release run."""
    release = tmp_path / "bbbc038"
    release.mkdir()
    files = {name: release / name for name in ("stage1_train.zip", "stage1_test.zip", "stage1_solution.csv")}
    for path in files.values():
        path.touch()  # the dry-run checks that each source exists; only the real run verifies and reads it
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        yaml.safe_dump({"datasets": {"dsb2018": {"files": {n: {"source": str(p)} for n, p in files.items()}}}})
    )
    result = subprocess.run(
        [SNAKEMAKE, "-n", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path / "run"), "--cores", "1"]
        + ["--configfile", str(REPO / "config" / "dsb2018_cpu.yaml"), str(sources)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    # Every release file is linked from its source (the download rule's input), none is fetched.
    for name, path in files.items():
        assert f"input: {path}" in output and f"resources/dsb2018/download/{name}" in output, name
    assert "dsb_resunet_original/models/resunet/none/none/model.pt" in output
    assert "comparisons/dsb_recipe_val/table.csv" in output
    # Every README command over this config (the recipe search, the classic U-Net study, Tables 1 and 2)
    # names outputs of the same plan.
    commands = [c for c in readme_commands() if "config/dsb2018_cpu.yaml sources.yaml" in c and " -- " in c]
    assert len(commands) >= 4, commands
    for command in commands:
        for target in command.split(" -- ", 1)[1].split():
            assert target in output, (target, command)


def test_a_local_source_copied_again_reruns_nothing(tmp_path):
    """A release file re-copied beside the project (same bytes, newer mtime) must not re-run the workflow.

    The real DSB2018 release, copied anew into ../shared, made Snakemake re-link, unpack, convert and split it
    and plan every training again; with a month of GPU time downstream that is the costliest rerun there is.
    Both sides of the link count: download's input (the held file) and unpack's (the link, which Snakemake
    dates by its target).
    """
    source = tmp_path / "stage1_train.zip"
    # Over Snakemake's 1 MB limit for input checksums (release files are 10s of MB): its mtime decides.
    with zipfile.ZipFile(source, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("0a1b/images/0a1b.png", os.urandom(2**21))
    entry = {"source": str(source), "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
    sources = tmp_path / "sources.yaml"
    sources.write_text(yaml.safe_dump({"datasets": {"dsb2018": {"files": {"stage1_train.zip": entry}}}}))
    target = "resources/dsb2018/unpacked/stage1_train"
    command = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(tmp_path / "run"), "--cores", "1"]
    command += ["--configfile", str(REPO / "workflow_tests" / "config_tiny.yaml"), str(sources), "--", target]
    made = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0 and (tmp_path / "run" / target).is_dir(), (made.stdout + made.stderr)[-3000:]
    checksum = tmp_path / "run" / "resources/dsb2018/download/checksums/stage1_train.zip.sha256"
    assert checksum.read_text() == f"{entry['sha256']}  stage1_train.zip\n"
    later = (tmp_path / "run" / target).stat().st_mtime + 3600
    os.utime(source, (later, later))  # copied again: same content, newer mtime
    planned = subprocess.run(command[:1] + ["-n"] + command[1:], capture_output=True, text=True, timeout=120)
    output = planned.stdout + planned.stderr
    assert planned.returncode == 0, output[-3000:]
    assert "Nothing to be done" in output, output[-3000:]
    # A release the user replaces (a new path) re-runs what reads it, although its link is ancient.
    replaced = tmp_path / "new" / "stage1_train.zip"
    replaced.parent.mkdir()
    replaced.write_bytes(source.read_bytes())
    sources.write_text(
        yaml.safe_dump({"datasets": {"dsb2018": {"files": {"stage1_train.zip": {"source": str(replaced)}}}}})
    )
    planned = subprocess.run(command[:1] + ["-n"] + command[1:], capture_output=True, text=True, timeout=120)
    assert "rule unpack:" in planned.stdout + planned.stderr, (planned.stdout + planned.stderr)[-3000:]


def test_only_a_held_files_link_is_read_as_ancient():
    """unpack and convert ignore the date of a held file's link, never of a downloaded or rule-made file."""
    from nucleiflow.workflow.inputs import Inputs

    files = {
        "stage1_train.zip": {"source": "/data/stage1_train.zip"},
        "stage1_test.zip": {"url": "https://example.org/stage1_test.zip"},
        "stage1_solution.csv": {"source": "/data/stage1_solution.csv"},
    }
    inputs = Inputs({"datasets": {"dsb2018": {"files": files}}}, ancient=lambda path: f"ancient:{path}")
    archive = type("Wildcards", (), {"dataset": "dsb2018", "archive": "stage1_train"})
    assert inputs.download_archive(archive) == "ancient:resources/dsb2018/download/stage1_train.zip"
    archive.archive = "stage1_test"
    assert inputs.download_archive(archive) == "resources/dsb2018/download/stage1_test.zip"
    assert inputs.unpacked_dirs(archive) == [
        "resources/dsb2018/unpacked/stage1_train",  # made by unpack: its own date counts
        "resources/dsb2018/unpacked/stage1_test",
        "ancient:resources/dsb2018/download/stage1_solution.csv",
    ]
    # ...and their readers go by the checksum files download writes instead
    assert inputs.held_checksums(archive) == []
    archive.archive = "stage1_train"
    assert inputs.held_checksums(archive) == ["resources/dsb2018/download/checksums/stage1_train.zip.sha256"]
    convert = type("Wildcards", (), {"dataset": "dsb2018"})
    assert inputs.held_checksums(convert) == ["resources/dsb2018/download/checksums/stage1_solution.csv.sha256"]


def test_type_names_and_resolution_of_a_dataset_for_its_models():
    from nucleiflow.catalog import CONSEP_CLASSES, PANNUKE_CLASS_NAMES
    from nucleiflow.workflow.cells import dataset_microns_per_pixel, dataset_type_names

    config = {
        "datasets": {
            "pannuke": {"format": "pannuke"},
            "consep": {"format": "hovernet_mat", "microns_per_pixel": 0.25},
            "lizard": {"format": "hovernet_mat", "classes": ["a", "b"]},
            "dsb2018": {"format": "dsb2018"},
        }
    }
    assert dataset_type_names(config, "pannuke") == list(PANNUKE_CLASS_NAMES)
    assert dataset_type_names(config, "consep") == ["background", *CONSEP_CLASSES]
    assert dataset_type_names(config, "lizard") == ["background", "a", "b"]  # the config's classes win
    assert dataset_type_names(config, "dsb2018") == []
    assert dataset_microns_per_pixel(config, "pannuke") == 0.25  # PanNuke: 40x
    assert dataset_microns_per_pixel(config, "consep") == 0.25
    assert dataset_microns_per_pixel(config, "dsb2018") is None
