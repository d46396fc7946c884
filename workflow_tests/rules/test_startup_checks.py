"""What a real `snakemake` run refuses, and how, when a local file or cached pretrained weights are missing.

Each test runs the README's snakemake from the root of a fresh checkout with a small config of its own.
"""

import os
import re
import subprocess

import pytest
import yaml
from conftest import SNAKEMAKE, copy_checkout

ONE_CLASSIFIER = {"nucrec_small": {"dataset": "nucrec", "classifiers": ["Decision Tree"]}}


def _run(root, config: dict, *args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    (root / "startup.yaml").write_text(yaml.safe_dump(config))
    return subprocess.run(
        [SNAKEMAKE, *args, "--cores", "1", "--configfile", "startup.yaml"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _assert_no_job_ran(root, output: str) -> None:
    assert not re.search(r"^(local)?rule \w+:", output, flags=re.M), output[-3000:]
    assert "Job stats" not in output
    assert _made_files(root, "results") == _made_files(root, "resources") == []


def _made_files(root, folder: str) -> list:
    """Files under `folder` that the checkout did not bring (it holds a .gitkeep or nothing)."""
    return [path for path in (root / folder).rglob("*") if path.is_file() and path.name != ".gitkeep"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"url": "resources/nucrec/NucRec.zip"},
            "datasets.nucrec.files.NucRec.zip.url: 'resources/nucrec/NucRec.zip' does not exist",
        ),
        (
            {"url": "https://example.org/NucRec.zip", "source": "/nowhere/NucRec.zip"},
            "datasets.nucrec.files.NucRec.zip.source: '/nowhere/NucRec.zip' does not exist",
        ),
    ],
    ids=["path", "held-copy"],
)
def test_a_missing_local_file_stops_the_run_before_any_job_starts(tmp_path, entry, message):
    root = copy_checkout(tmp_path)
    result = _run(root, _nucrec_config(entry))  # a real run, not a dry-run
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output.splitlines(), output[-3000:]  # one line, naming the key and the path
    _assert_no_job_ran(root, output)


def test_the_same_config_starts_once_the_file_is_there(tmp_path):
    """The control: with the file in place the DAG builds (a classification without a `cnn` block included)."""
    root = copy_checkout(tmp_path)
    (root / "resources" / "nucrec").mkdir(parents=True)
    (root / "resources" / "nucrec" / "NucRec.zip").touch()  # only existence is checked at start-up
    result = _run(root, _nucrec_config({"url": "resources/nucrec/NucRec.zip"}), "-n")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", output, flags=re.M))
    assert counts["download"] == "1" and counts["classic_ml"] == "2"


def _nucrec_config(entry: dict) -> dict:
    return {
        "seed": 1,
        "datasets": {"nucrec": {"format": "class_folders", "files": {"NucRec.zip": entry}}},
        "classification": ONE_CLASSIFIER,
    }


def test_offline_without_cached_weights_stops_the_run_before_any_job_starts(tmp_path):
    """Offline (HF_HUB_OFFLINE) nothing can fetch pretrained weights, not even the cache rule: the run stops at
    start-up with one line naming the weights, the cache folder and the command that caches them."""
    root = copy_checkout(tmp_path / "checkout")
    hub = tmp_path / "hub"
    hub.mkdir()
    config = yaml.safe_load((root / "workflow_tests" / "config_tiny.yaml").read_text())
    experiment = config["segmentation"]["pannuke_tiny"]
    experiment["training"]["encoder_weights"] = "imagenet"
    experiment["models"] = [{"arch": "unet", "encoder": "resnet18"}]
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    result = _run(root, config, env=env)  # a real run, not a dry-run
    output = result.stdout + result.stderr
    assert result.returncode != 0
    expected = (
        f"HF_HUB_OFFLINE is set and encoder weights imagenet for unet/resnet18 are not in the cache ({hub}/"
        "models--smp-hub--resnet18.imagenet); run `snakemake cache_weights --cores 1`"
    )
    assert any(line.startswith(expected) for line in output.splitlines()), output[-3000:]
    _assert_no_job_ran(root, output)
    # Online, the same config starts: the cache rule is planned to fetch the weights.
    online = _run(root, config, "-n", env={**env, "HF_HUB_OFFLINE": "0"})
    assert online.returncode == 0, (online.stdout + online.stderr)[-3000:]
    assert re.search(r"^cache_encoder_weights\s+1$", online.stdout, flags=re.M)
