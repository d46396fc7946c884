"""Pretrained weights offline: the cache check, caching from a pre-filled cache, the cache_weights rule.

No test touches the network: the Hugging Face cache is moved to a temporary
folder and offline mode is on; "downloaded" weights are written into that
cache where huggingface_hub itself looks for them.
"""

import json
import os
import re
import subprocess

import huggingface_hub
import pytest
import torch
import yaml
from conftest import REPO, SNAKEMAKE
from huggingface_hub.file_download import repo_folder_name
from safetensors.torch import save_file
from segmentation_models_pytorch.encoders import encoders as smp_encoders
from segmentation_models_pytorch.encoders import get_encoder

from nucleiflow.download import DownloadError, sha256sum
from nucleiflow.errors import ConfigError
from nucleiflow.io import read_json
from nucleiflow.models import build_model
from nucleiflow.pretrained import (
    PretrainedModel,
    cache_encoder_weights,
    check_weights_available,
    cnn_weights_inputs,
    segmentation_weights_inputs,
    weights_for,
    weights_marker_path,
    weights_targets,
    write_weights_marker,
)

FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache in tmp, offline (the library reads both at call time)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))  # for subprocesses (the rule's job)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def _snapshot(cache, repo_id, revision):
    """Where huggingface_hub keeps `repo_id` at `revision` (a commit) in `cache`."""
    return cache / repo_folder_name(repo_id=repo_id, repo_type="model") / "snapshots" / revision


def _smp_snapshot(cache, encoder):
    settings = smp_encoders[encoder]["pretrained_settings"]["imagenet"]
    return _snapshot(cache, settings["repo_id"], settings["revision"]), settings


def _fill_smp_cache(cache, encoder, state_dict):
    """Put `state_dict` where smp 0.6.0 loads `encoder`'s imagenet weights from."""
    folder, _ = _smp_snapshot(cache, encoder)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    save_file({k: v.contiguous() for k, v in state_dict.items()}, folder / "model.safetensors")
    return folder


def _config(**segmentation_training):
    training = {"epochs": 1, **segmentation_training}
    return {
        "segmentation": {
            "pre": {
                "dataset": "pannuke",
                "training": training,
                "models": [
                    {"arch": "unet", "encoder": "resnet50", "regularization": ["none", "paper"]},
                    {"arch": "deeplabv3plus", "encoder": "resnet50"},
                    {"arch": "resunet"},
                ],
            },
            "scratch": {
                "dataset": "pannuke",
                "training": {"encoder_weights": None},
                "models": [{"arch": "unet", "encoder": "resnet18"}],
            },
        },
        "classification": {
            "cls": {"dataset": "nucrec", "cnn": {"models": ["small_cnn", "inception_resnet_v2"], "pretrained": True}}
        },
    }


# --- config -> targets ------------------------------------------------------
def test_targets_are_the_pretrained_models_of_the_config_once_each():
    assert weights_targets(_config(encoder_weights="imagenet")) == [
        "resources/weights/unet/resnet50.json",
        "resources/weights/deeplabv3plus/resnet50.json",
        "resources/weights/cnn/inception_resnet_v2.json",
    ]
    assert weights_targets(_config()) == ["resources/weights/cnn/inception_resnet_v2.json"]
    assert weights_targets({"segmentation": {}}) == []


def test_training_inputs_name_the_marker_only_when_weights_are_pretrained():
    config = _config(encoder_weights="imagenet")
    assert segmentation_weights_inputs(config, "pre", "unet", "resnet50") == ["resources/weights/unet/resnet50.json"]
    assert segmentation_weights_inputs(config, "pre", "resunet", "none") == []
    assert segmentation_weights_inputs(config, "scratch", "unet", "resnet18") == []
    assert cnn_weights_inputs(config, "cls", "inception_resnet_v2") == [
        "resources/weights/cnn/inception_resnet_v2.json"
    ]
    assert cnn_weights_inputs(config, "cls", "small_cnn") == []
    assert weights_for(config, "unet", "resnet50") == "imagenet"
    with pytest.raises(ConfigError, match=r"resources/weights/unet/resnet18.json: .*unet/resnet18"):
        weights_for(config, "unet", "resnet18")


def test_paper_config_caches_its_four_encoders_and_the_inception_net(tmp_path):
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    encoders = [
        f"resources/weights/{arch}/{encoder}.json"
        for arch in ("unet", "deeplabv3plus")
        for encoder in ("resnet50", "efficientnet-b4")
    ]
    assert sorted(weights_targets(paper)) == sorted(encoders + ["resources/weights/cnn/inception_resnet_v2.json"])
    # The rule file parses and asks for one job per marker.
    (tmp_path / "resources" / "nucrec").mkdir(parents=True)
    (tmp_path / "resources" / "nucrec" / "NucRec.zip").touch()  # NucRec needs a login; only existence is checked
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(f'include: "{REPO}/rules/common.smk"\ninclude: "{REPO}/rules/weights.smk"\n')
    result = subprocess.run(
        [
            SNAKEMAKE,
            "-n",
            "cache_weights",
            "-s",
            str(snakefile),
            "--configfile",
            str(REPO / "config" / "paper.yaml"),
            "-d",
            str(tmp_path),
            "--cores",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.M))
    assert counts["cache_encoder_weights"] == "5" and counts["cache_weights"] == "1"


# --- the cache check --------------------------------------------------------
def test_check_fails_offline_with_one_line_naming_the_rule(hub_cache):
    with pytest.raises(ConfigError) as info:
        check_weights_available("unet", "resnet50", "imagenet")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("encoder weights imagenet for unet/resnet50 are not in the cache (")
    assert str(hub_cache) in message and "snakemake cache_weights --cores 1" in message
    with pytest.raises(ConfigError, match=r"cnn/inception_resnet_v2 .*snakemake cache_weights"):
        check_weights_available("cnn", "inception_resnet_v2", "imagenet")


def test_check_passes_when_the_files_are_where_the_library_looks(hub_cache):
    folder, settings = _smp_snapshot(hub_cache, "resnet50")
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    with pytest.raises(ConfigError):  # config.json alone is not enough
        check_weights_available("unet", "resnet50", "imagenet")
    (folder / "model.safetensors").write_bytes(b"fake")
    check_weights_available("unet", "resnet50", "imagenet")
    check_weights_available("deeplabv3plus", "resnet50", "imagenet")  # same encoder, same files
    # ... and that is where smp's own download call finds them without a network.
    found = huggingface_hub.hf_hub_download(
        settings["repo_id"], "model.safetensors", revision=settings["revision"], local_files_only=True
    )
    assert os.path.samefile(found, folder / "model.safetensors")


def test_check_passes_for_a_cached_timm_classifier(hub_cache):
    import timm
    from timm.models._hub import hf_split

    repo_id, revision = hf_split(timm.models.get_pretrained_cfg("inception_resnet_v2").hf_hub_id)
    repo = _snapshot(hub_cache, repo_id, FAKE_COMMIT).parents[1]
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / (revision or "main")).write_text(FAKE_COMMIT)
    (repo / "snapshots" / FAKE_COMMIT).mkdir(parents=True)
    (repo / "snapshots" / FAKE_COMMIT / "model.safetensors").write_bytes(b"fake")
    check_weights_available("cnn", "inception_resnet_v2", "imagenet")


def test_check_rejects_what_has_no_pretrained_weights():
    check_weights_available("resunet", "none", None)  # training from scratch needs nothing
    with pytest.raises(ConfigError, match="resunet has no pretrained encoder"):
        check_weights_available("resunet", "none", "imagenet")
    with pytest.raises(ConfigError, match=r"encoder_weights \(for resnet50\): 'imagenet21k' is not valid"):
        check_weights_available("unet", "resnet50", "imagenet21k")
    with pytest.raises(ConfigError, match="small_cnn"):
        check_weights_available("cnn", "small_cnn", "imagenet")


# --- caching ------------------------------------------------------------------
def test_cache_builds_from_the_cache_and_the_marker_lists_the_files(hub_cache, tmp_path):
    torch.manual_seed(0)
    weights = get_encoder("resnet18").state_dict()
    folder = _fill_smp_cache(hub_cache, "resnet18", weights)

    files = cache_encoder_weights("unet", "resnet18")
    assert [f.name for f in files] == ["config.json", "model.safetensors"]
    assert all(f.parent == folder for f in files)
    model = build_model("unet", "resnet18", encoder_weights="imagenet")
    assert torch.equal(model.encoder.state_dict()["conv1.weight"], weights["conv1.weight"])  # loaded, not random

    marker_path = tmp_path / weights_marker_path("unet", "resnet18")
    write_weights_marker(marker_path, PretrainedModel("unet", "resnet18", "imagenet"), files)
    marker = read_json(marker_path)
    assert marker["repo_id"] == "smp-hub/resnet18.imagenet"
    assert [entry["sha256"] for entry in marker["files"]] == [sha256sum(f) for f in files]


def test_cache_offline_without_weights_fails_with_one_line(hub_cache):
    with pytest.raises(DownloadError) as info:
        cache_encoder_weights("unet", "resnet18")
    message = str(info.value)
    assert "\n" not in message
    assert "https://huggingface.co/smp-hub/resnet18.imagenet" in message and "HF_HUB_OFFLINE" in message


def test_rule_writes_markers_and_index_from_a_filled_cache(hub_cache, tmp_path):
    _fill_smp_cache(hub_cache, "resnet18", get_encoder("resnet18").state_dict())
    config = yaml.safe_load((REPO / "workflow_tests" / "config_tiny.yaml").read_text())
    experiment = config["segmentation"]["pannuke_tiny"]
    experiment["training"]["encoder_weights"] = "imagenet"
    experiment["models"] = [{"arch": "unet", "encoder": "resnet18"}]  # one job: each imports torch (seconds)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(f'include: "{REPO}/rules/common.smk"\ninclude: "{REPO}/rules/weights.smk"\n')
    result = subprocess.run(
        [
            SNAKEMAKE,
            "cache_weights",
            "-s",
            str(snakefile),
            "--configfile",
            str(config_file),
            "-d",
            str(tmp_path / "run"),
            "--cores",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    index = json.loads((tmp_path / "run" / "resources" / "weights" / "index.json").read_text())
    assert list(index) == ["resources/weights/unet/resnet18.json"]
    files = index["resources/weights/unet/resnet18.json"]["files"]
    assert [os.path.basename(f["path"]) for f in files] == ["config.json", "model.safetensors"]
    assert all(f["path"].startswith(str(hub_cache)) and f["sha256"] == sha256sum(f["path"]) for f in files)


def test_cached_weights_are_passed_to_timm_as_a_local_file(hub_cache):
    """InceptionResNetV2 starts from the weights file in the cache: its tensors, a new head of the asked size."""
    import timm
    from timm.models._hub import hf_split

    from nucleiflow.classification.models import build_classifier, pretrained_weights_file

    # "Downloaded" ImageNet weights: a seeded random net saved where timm's hub download would put them.
    torch.manual_seed(7)
    imagenet = timm.create_model("inception_resnet_v2", pretrained=False).state_dict()
    repo_id, revision = hf_split(timm.models.get_pretrained_cfg("inception_resnet_v2").hf_hub_id)
    snapshot = _snapshot(hub_cache, repo_id, FAKE_COMMIT)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / (revision or "main")).write_text(FAKE_COMMIT)
    save_file({k: v.contiguous() for k, v in imagenet.items()}, snapshot / "model.safetensors")
    assert pretrained_weights_file("inception_resnet_v2") == snapshot / "model.safetensors"

    model = build_classifier("inception_resnet_v2", num_classes=5, pretrained=True, seed=0)
    loaded = model.state_dict()
    for name in ("conv2d_1a.conv.weight", "conv2d_7b.conv.weight", "conv2d_7b.bn.running_mean"):
        assert torch.equal(loaded[name], imagenet[name]), name  # loaded from the file, not random
    head = model.get_classifier()
    assert head.out_features == 5 and imagenet["classif.weight"].shape[0] == 1000  # ImageNet's head dropped
    scratch = build_classifier("inception_resnet_v2", num_classes=5, pretrained=False, seed=0).state_dict()
    assert not torch.equal(scratch["conv2d_1a.conv.weight"], imagenet["conv2d_1a.conv.weight"])
