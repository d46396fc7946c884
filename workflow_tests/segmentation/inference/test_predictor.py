"""`InferenceConfig` and `Predictor`: the one way a trained model turns images into maps and nuclei.

The reference maps are computed here by hand from the network (`heads.probabilities` of the
prepared input, resized back with OpenCV), so a change of the predictor's input preparation,
batching, tiling or test-time augmentation shows as a difference.
"""

import re
from dataclasses import replace

import cv2
import numpy as np
import pytest
import tifffile
import torch
from conftest import REPO, resunet_spec, touching_discs

from nucleiflow.config import ModelSpec
from nucleiflow.device import setup_device
from nucleiflow.engine import CheckpointMismatch, save_checkpoint
from nucleiflow.errors import ConfigError, DataFormatError
from nucleiflow.io import write_json
from nucleiflow.segmentation.evaluation.instances import instances_from_binary
from nucleiflow.segmentation.inference.predictor import (
    InferenceConfig,
    Predictor,
    dihedral,
    transform_batch,
    untransform_batch,
)
from nucleiflow.segmentation.representation.postprocess import DEFAULT_PARAMS, configured_params, params_to_dict
from nucleiflow.segmentation.training.data import prepare_image, to_tensor
from nucleiflow.segmentation.training.heads import OutputLayout, probabilities
from nucleiflow.segmentation.training.trainer import build_from_spec, checkpoint_identity

CPU = setup_device("cpu", 1, False)
SIZE = 64


def spec_of(target="binary", type_head=False, **training):
    return resunet_spec(
        SIZE, **{"prefilter_sigma": 1.5, "threshold": 0.4, "target": target, "type_head": type_head} | training
    )


def seeded_model_dir(path, spec):
    """A model folder as the train stage leaves it (model.pt, train_info.json), weights from a fixed seed."""
    torch.manual_seed(0)
    model = build_from_spec(spec)
    for module in model.modules():  # non-trivial batch-norm statistics: batching must not change the maps
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    path.mkdir(parents=True, exist_ok=True)
    payload = {"model": model.state_dict(), "identity": checkpoint_identity(spec), "best": {"epoch": 4}}
    save_checkpoint(path / "model.pt", payload)
    write_json(path / "train_info.json", {"spec": spec})
    return path


def images(rng, shapes=((64, 64), (50, 70), (90, 64))):
    return [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for shape in shapes]


def reference_resized(model, image, layout, sigma=1.5, scaling="imagenet"):
    """The maps of the `resize` policy computed by hand: prepare, resize, forward, resize each channel back."""
    prepared = prepare_image(image, sigma)
    h, w = image.shape[:2]
    interpolation = cv2.INTER_AREA if h > SIZE else cv2.INTER_LINEAR
    small = cv2.resize(prepared, (SIZE, SIZE), interpolation=interpolation) if (h, w) != (SIZE, SIZE) else prepared
    with torch.no_grad():
        maps = probabilities(model(to_tensor(small, scaling)[None]), layout)[0].numpy()
    if (h, w) == (SIZE, SIZE):
        return maps
    return np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR) for c in maps])


# ---------------------------------------------------------------- the configuration


def test_config_from_spec_reads_training_and_postprocess(tmp_path):
    spec = spec_of("contour", size_policy="tile")
    config = InferenceConfig.from_spec(spec, {"tune": False, "min_size": 7, "tta": "flips"})
    assert (config.input_size, config.size_policy, config.batch_size) == (SIZE, "tile", 2)
    assert (config.threshold, config.prefilter_sigma, config.input_scaling) == (0.4, 1.5, "imagenet")
    assert config.layout == OutputLayout("contour") and config.tta == "flips" and config.images_per_batch == 1
    assert config.watershed == replace(DEFAULT_PARAMS["contour"], foreground_threshold=0.4, min_size=7)
    # A tuning record wins over the fixed settings.
    tuned = replace(DEFAULT_PARAMS["contour"], marker_threshold=0.7)
    write_json(tmp_path / "postprocess.json", {"target": "contour", "params": params_to_dict(tuned)})
    assert InferenceConfig.from_spec(spec, {"tune": False}, tmp_path / "postprocess.json").watershed == tuned
    with pytest.raises(DataFormatError, match="tuned for target 'contour', but the model's target is 'hv'"):
        InferenceConfig.from_spec(spec_of("hv"), {}, tmp_path / "postprocess.json")
    # An experiment that tunes must hand over its record, unless only maps are wanted.
    with pytest.raises(ConfigError, match="postprocess.tune: the contour model's settings are tuned"):
        InferenceConfig.from_spec(spec, {})
    assert InferenceConfig.from_spec(spec, {}, maps_only=True).watershed == configured_params("contour", {}, 0.4)
    with pytest.raises(ConfigError, match="postprocess.tta: 'rot'"):
        InferenceConfig.from_spec(spec, {"tune": False, "tta": "rot"})
    with pytest.raises(ConfigError, match="training.size_policy"):
        InferenceConfig(SIZE, size_policy="crop")
    # No watershed given: the target's fixed settings at the threshold (binary: connected components).
    assert InferenceConfig(SIZE, threshold=0.3).watershed == configured_params("binary", {}, 0.3)


# ---------------------------------------------------------------- loading


def test_from_model_dir_reads_the_recorded_spec_and_checks_the_checkpoint(tmp_path):
    spec = spec_of()
    folder = seeded_model_dir(tmp_path / "model", spec)
    predictor = Predictor.from_model_dir(folder, postprocess={"tune": False}, batch_size=5)
    assert predictor.spec == ModelSpec.from_dict(spec) and predictor.config.batch_size == 5
    assert predictor.device == torch.device("cpu") and predictor.state["best"]["epoch"] == 4
    assert not predictor.model.training
    # The file itself, with the workflow's spec, is the same model.
    same = Predictor.from_model_dir(folder / "model.pt", spec=spec, postprocess={"tune": False})
    image = images(np.random.default_rng(1))[0]
    np.testing.assert_array_equal(same.predict_maps(image), predictor.predict_maps(image))
    other = spec_of(prefilter_sigma=0.0)
    with pytest.raises(CheckpointMismatch, match="checkpoint was made for"):
        Predictor.from_model_dir(folder, spec=other, postprocess={"tune": False})
    (folder / "train_info.json").unlink()
    with pytest.raises(DataFormatError, match="no train_info.json beside model.pt; pass the model's spec"):
        Predictor.from_model_dir(folder)


def test_a_trained_model_predicts_channels_last_with_the_maps_of_the_default_format(tmp_path):
    """Channels-last on the CPU too (`device.for_inference`): a faster kernel choice, the same maps."""
    spec = spec_of("hv", type_head=True)
    predictor = Predictor.from_model_dir(seeded_model_dir(tmp_path / "m", spec), postprocess={"tune": False})
    assert predictor.setup.channels_last and predictor.device == torch.device("cpu")
    convolution = next(m for m in predictor.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert convolution.weight.is_contiguous(memory_format=torch.channels_last)
    assert not convolution.weight.is_contiguous()  # really another layout, not a 1 x 1 kernel that is both
    nchw_model = build_from_spec(spec)
    nchw_model.load_state_dict(predictor.model.state_dict())
    nchw = Predictor(nchw_model.eval(), predictor.config, CPU, spec=spec)
    assert not nchw.setup.channels_last
    for image in images(np.random.default_rng(5)):
        np.testing.assert_allclose(predictor.predict_maps(image), nchw.predict_maps(image), atol=1e-5)


# ---------------------------------------------------------------- maps


@pytest.mark.parametrize("target,type_head", [("binary", False), ("contour", False), ("hv", True)])
def test_maps_are_the_networks_probabilities_at_image_size(tmp_path, target, type_head):
    spec = spec_of(target, type_head)
    predictor = Predictor.from_model_dir(seeded_model_dir(tmp_path / "m", spec), postprocess={"tune": False})
    layout = predictor.config.layout
    for image in images(np.random.default_rng(2)):
        maps = predictor.predict_maps(image)
        assert maps.dtype == np.float32 and maps.shape == (layout.channels, *image.shape[:2])
        np.testing.assert_allclose(maps, reference_resized(predictor.model, image, layout), atol=1e-5)


@pytest.mark.parametrize("policy", ["resize", "tile"])
def test_a_batch_gives_the_maps_of_each_image_alone(tmp_path, policy):
    spec = spec_of("hv", size_policy=policy)
    predictor = Predictor.from_model_dir(seeded_model_dir(tmp_path / "m", spec), postprocess={"tune": False})
    batch = images(np.random.default_rng(3))  # three images, batch size 2: one full batch and one short
    together = predictor.predict_maps_batch(batch)
    assert len(together) == 3
    for image, maps in zip(batch, together):
        np.testing.assert_allclose(maps, predictor.predict_maps(image), atol=1e-5)
        assert maps.shape[1:] == image.shape[:2]


def test_tiles_of_a_pixelwise_model_stitch_to_the_whole_image():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 9, 1)
    layout = OutputLayout("hv", 6)
    tiled = Predictor(conv, InferenceConfig(32, "tile", 4, layout=layout), CPU)
    image = images(np.random.default_rng(4), [(75, 90)])[0]
    with torch.no_grad():
        whole = probabilities(conv(to_tensor(image)[None]), layout)[0].numpy()
    np.testing.assert_allclose(tiled.predict_maps(image), whole, atol=1e-5)


def test_a_model_with_the_wrong_channels_is_refused():
    predictor = Predictor(torch.nn.Conv2d(3, 1, 1), InferenceConfig(SIZE, layout=OutputLayout("hv")), CPU)
    with pytest.raises(DataFormatError, match="gives 1 output channels; target 'hv'"):
        predictor.predict_maps(np.zeros((SIZE, SIZE, 3), np.uint8))


# ---------------------------------------------------------------- test-time augmentation


def test_transforms_are_the_numpy_flips_and_turns_and_undo_exactly():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 255, (8, 8, 3)).astype(np.uint8)
    maps = torch.from_numpy(rng.normal(size=(2, 5, 8, 8)).astype(np.float32))
    assert len(dihedral("none")) == 1 and len(dihedral("flips")) == 4 and len(set(dihedral("d4"))) == 8
    for flip, k in dihedral("d4"):
        forward = transform_batch(torch.from_numpy(image.transpose(2, 0, 1).copy())[None], flip, k)[0]
        expected = np.rot90(image[:, ::-1] if flip else image, k, axes=(0, 1))
        np.testing.assert_array_equal(forward.numpy().transpose(1, 2, 0), expected)
        # Scalar channels: untransform is the inverse of transform.
        np.testing.assert_array_equal(untransform_batch(transform_batch(maps, flip, k), flip, k), maps)


class CentredField(torch.nn.Module):
    """An hv "model" seeing one centred round nucleus whatever it is shown: foreground, h = x - c, v = y - c.

    The scene is symmetric under every flip and quarter turn, so a correct TTA gives back exactly these
    maps; averaging h and v as plain channels would cancel them.
    """

    def forward(self, x):
        n = x.shape[-1]
        offsets = torch.arange(n, dtype=torch.float32) - (n - 1) / 2
        h = offsets[None, :].expand(n, n) / n
        v = offsets[:, None].expand(n, n) / n
        maps = torch.stack([torch.full((n, n), 5.0), h, v])
        return maps[None].expand(len(x), -1, -1, -1).clone()


@pytest.mark.parametrize("mode", ["flips", "d4"])
def test_tta_turns_the_hv_vectors_back(mode):
    config = InferenceConfig(SIZE, input_scaling="unit", layout=OutputLayout("hv"))
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    plain = Predictor(CentredField(), config, CPU).predict_maps(image)
    averaged = Predictor(CentredField(), replace(config, tta=mode), CPU).predict_maps(image)
    assert np.abs(plain[1:]).max() > 0.4
    np.testing.assert_allclose(averaged, plain, atol=1e-6)


@pytest.mark.parametrize("mode", ["flips", "d4"])
def test_tta_of_a_pixelwise_model_is_the_plain_prediction(mode):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 9, 1)  # 1 x 1 convolution: exactly equivariant for scalar channels
    config = InferenceConfig(SIZE, layout=OutputLayout("contour", 6))
    image = images(np.random.default_rng(6), [(64, 64)])[0]
    plain = Predictor(conv, config, CPU).predict_maps(image)
    np.testing.assert_allclose(Predictor(conv, replace(config, tta=mode), CPU).predict_maps(image), plain, atol=1e-5)


# ---------------------------------------------------------------- nuclei


class Echo(torch.nn.Module):
    """Logits that make the foreground probability the red channel's mask, and every nucleus type 2."""

    def __init__(self, layout):
        super().__init__()
        self.layout = layout

    def forward(self, x):
        sure = torch.where(x[:, :1] > 0.5, 10.0, -10.0)
        types = torch.full((len(x), self.layout.type_classes, *x.shape[2:]), -10.0)
        if self.layout.type_classes:
            types[:, 2] = 10.0
        return torch.cat([sure, types], dim=1)


def test_nuclei_from_maps_are_the_targets_postprocessing_with_types():
    labels = touching_discs([(15, 15), (40, 40), (50, 12)], [7, 9, 5])
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[..., 0] = np.where(labels > 0, 255, 0)
    layout = OutputLayout("binary", 6)
    predictor = Predictor(Echo(layout), InferenceConfig(SIZE, input_scaling="unit", layout=layout), CPU)
    maps = predictor.predict_maps(image)
    found, types = predictor.predict_nuclei(image)
    np.testing.assert_array_equal(found, instances_from_binary(labels > 0, min_size=0))
    assert found.dtype == np.int32 and types == {1: 2, 2: 2, 3: 2}
    np.testing.assert_array_equal(predictor.foreground_probability(maps) > 0.5, labels > 0)
    untyped = Predictor(Echo(OutputLayout("binary")), replace(predictor.config, layout=OutputLayout("binary")), CPU)
    assert untyped.nuclei_from_maps(untyped.predict_maps(image))[1] is None


def test_contour_foreground_is_interior_plus_boundary():
    config = InferenceConfig(SIZE, layout=OutputLayout("contour"))
    maps = np.stack([np.full((4, 4), 0.2), np.full((4, 4), 0.5), np.full((4, 4), 0.3)]).astype(np.float32)
    np.testing.assert_allclose(Predictor(torch.nn.Identity(), config, CPU).foreground_probability(maps), 0.8)


def test_model_inputs_are_the_training_inputs(tmp_path):
    spec = spec_of(size_policy="tile")
    predictor = Predictor.from_model_dir(seeded_model_dir(tmp_path / "m", spec), postprocess={"tune": False})
    image = images(np.random.default_rng(7), [(80, 100)])[0]
    mask = np.zeros((80, 100), bool)
    mask[40:44, 50:54] = True
    shown, masks, batch = predictor.model_inputs([image], [mask])
    assert shown[0].shape == (SIZE, SIZE, 3) and batch.shape == (1, 3, SIZE, SIZE)
    centre = prepare_image(image, 1.5)[8:72, 18:82]  # the centre tile of the pre-filtered image
    np.testing.assert_array_equal(shown[0], centre)
    np.testing.assert_array_equal(batch[0].numpy(), to_tensor(centre).numpy())
    assert masks[0].sum() == 16 and masks[0][32:36, 32:36].all()


def test_the_readme_example_runs(tmp_path, capsys):
    """The README's Python example, with its model folder and image replaced by a seeded model and a TIFF."""
    section = (REPO / "README.md").read_text().split("### From Python: one `Predictor`")[1].split("\n## ")[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    folder = seeded_model_dir(tmp_path / "model", spec_of())
    image = tmp_path / "cell_01.tif"
    tifffile.imwrite(image, images(np.random.default_rng(8), [(70, 90)])[0])
    code = code.replace('"results/dsb2018/dsb_resunet/models/resunet/none/none"', repr(str(folder)))
    code = code.replace('"data/my_cells/images/cell_01.tif"', repr(str(image)))
    assert str(folder) in code and str(image) in code
    exec(compile(code, "README.md", "exec"), {})
    assert re.match(r"resize WatershedParams\(.*min_distance=3\) \d+ nuclei", capsys.readouterr().out)
