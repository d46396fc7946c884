"""Figure builders return Figures with the expected panels; save_figure writes PNG + PDF atomically."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from nucleiflow.errors import DataFormatError
from nucleiflow.reporting import figures
from nucleiflow.reporting.figures import (
    OVERLAY_COLORS,
    classifier_bars,
    mask_contours,
    metric_bars,
    metric_curves,
    model_palette,
    overlay_rgb,
    prediction_grid,
    save_figure,
    use_style,
)

METRICS = ("loss", "acc", "dice", "sensitivity", "iou")


@pytest.fixture(autouse=True, scope="module")
def style():
    use_style()


def training_history(models=("U-Net/ResNet-50", "DeepLabV3+/EfficientNet-B4"), epochs=4):
    rows = []
    for i, model in enumerate(models):
        for epoch in range(1, epochs + 1):
            row = {"model": model, "run": model, "epoch": epoch}
            for m in METRICS:
                row[f"train_{m}"] = 0.5 + 0.1 * i + 0.01 * epoch
                row[f"val_{m}"] = 0.45 + 0.1 * i + 0.01 * epoch
            rows.append(row)
    return pd.DataFrame(rows)


def split_summary():
    rows = [
        {"model": model, "split": split, "dice_mean": 0.8 - 0.05 * k, "dice_std": 0.02}
        for model in ("A", "B", "C")
        for k, split in enumerate(("test", "train", "val"))
    ]
    return pd.DataFrame(rows)


def masks():
    target = np.zeros((16, 16), bool)
    target[2:8, 2:8] = True
    pred = np.zeros_like(target)
    pred[4:10, 4:10] = True
    image = np.full((16, 16, 3), 128, np.uint8)
    return image, pred, target


def test_metric_curves_has_one_panel_per_metric():
    fig = metric_curves(training_history())
    assert isinstance(fig, Figure)
    assert len(fig.axes) == len(METRICS)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 4  # two models x train/val
    assert {line.get_linestyle() for line in lines} == {"-", "--"}
    assert fig.axes[2].get_title() == "DCS"


def test_metric_curves_colours_follow_the_shared_palette():
    history = training_history()
    palette = model_palette(["U-Net/ResNet-50", "DeepLabV3+/EfficientNet-B4", "Extra"])
    fig = metric_curves(history, metrics=("dice",), palette=palette)
    colours = {line.get_color() for line in fig.axes[0].get_lines()}
    assert colours == {palette["U-Net/ResNet-50"], palette["DeepLabV3+/EfficientNet-B4"]}


def test_metric_curves_missing_metric_is_a_readable_error():
    with pytest.raises(DataFormatError, match="train_mcc"):
        metric_curves(training_history(), metrics=("mcc",))


def test_model_palette_is_stable_and_distinct():
    names = ["b", "a", "c", "a"]
    palette = model_palette(names)
    assert palette == model_palette(["c", "b", "a"])
    assert len(set(palette.values())) == 3


def test_metric_bars_orders_splits_and_draws_error_bars():
    fig = metric_bars(split_summary(), "dice")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Train", "Val", "Test"]
    assert len(ax.patches) == 9  # 3 models x 3 splits
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 3 and all(c.errorbar is not None for c in bars)
    # Model A's bars follow the split order: train 0.75, val 0.70, test 0.80.
    np.testing.assert_allclose([p.get_height() for p in bars[0]], [0.75, 0.70, 0.80])


def test_metric_bars_without_std_has_no_error_bars():
    fig = metric_bars(split_summary().drop(columns="dice_std"), "dice")
    bars = [c for c in fig.axes[0].containers if isinstance(c, BarContainer)]
    assert bars and all(c.errorbar is None for c in bars)


def test_metric_bars_of_one_split_name_the_models_on_the_x_axis():
    models = ["U-Net / ResNet-50", "DeepLabV3+ / ResNet-50", "Residual U-Net"]
    test_only = pd.DataFrame({"model": models, "split": "test", "dice_mean": [0.76, 0.77, 0.73], "dice_std": 0.1})
    fig = metric_bars(test_only, "dice")
    (ax,) = fig.axes
    # Long names are wrapped at spaces, in the rows' order.
    assert [t.get_text().replace("\n", " ") for t in ax.get_xticklabels()] == models
    assert ax.get_xlabel() == "Test" and ax.get_legend() is None and not fig.legends
    np.testing.assert_allclose([p.get_height() for p in ax.patches], test_only["dice_mean"])


def test_classifier_bars_have_one_panel():
    results = pd.DataFrame(
        {
            "classifier": ["SVM", "SVM", "kNN", "kNN"] * 2,
            "variant": ["base", "augmented"] * 4,
            "accuracy": [0.9, 0.93, 0.8, 0.85, 0.91, 0.92, 0.82, 0.84],
        }
    )
    assert len(classifier_bars(results).axes) == 1


def test_overlay_colours_at_known_pixels():
    image, pred, target = masks()
    alpha = 0.5
    rgb = overlay_rgb(image, pred, target, alpha)
    grey = 128 / 255
    expected = {(5, 5): "TP", (9, 9): "FP", (2, 2): "FN"}
    for (r, c), kind in expected.items():
        np.testing.assert_allclose(rgb[r, c], (1 - alpha) * grey + alpha * np.array(OVERLAY_COLORS[kind]))
    np.testing.assert_allclose(rgb[15, 15], [grey] * 3)  # true negative untouched
    assert rgb[5, 5, 2] > rgb[5, 5, 0] and rgb[9, 9, 0] > rgb[9, 9, 2] and rgb[2, 2, 1] > rgb[2, 2, 0]


def test_overlay_accepts_grey_float_images_and_checks_sizes():
    _, pred, target = masks()
    rgb = overlay_rgb(np.zeros((16, 16)), pred, target, alpha=1.0)
    np.testing.assert_allclose(rgb[5, 5], OVERLAY_COLORS["TP"])
    with pytest.raises(ValueError, match="differ in size"):
        overlay_rgb(np.zeros((8, 8)), pred, target)


def test_mask_contours_close_at_the_border():
    mask = np.zeros((8, 8), bool)
    mask[:4, :4] = True  # touches the top-left corner
    (contour,) = mask_contours(mask)
    np.testing.assert_allclose(contour[0], contour[-1])
    assert contour.min() < 0  # runs just outside the image, enclosing the border pixels


def test_image_figures_have_the_expected_panels():
    image, pred, target = masks()
    samples = [("img 1", image, pred, target), ("img 2", image, target, target)]
    assert len(prediction_grid(samples).axes) == 8
    with pytest.raises(ValueError):
        prediction_grid([])


def test_save_figure_writes_png_and_pdf_atomically(tmp_path, monkeypatch):
    closed = []
    monkeypatch.setattr(figures.plt, "close", closed.append)
    fig = metric_curves(training_history(epochs=2), metrics=("dice",))
    paths = save_figure(fig, tmp_path / "out" / "curves.png")
    assert [p.name for p in paths] == ["curves.png", "curves.pdf"]
    assert paths[0].read_bytes().startswith(b"\x89PNG")
    assert paths[1].read_bytes().startswith(b"%PDF")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["curves.pdf", "curves.png"]
    assert closed == [fig]


def test_paper_only_figures_draw_every_panel():
    image = np.full((24, 24, 3), 120, dtype=np.uint8)
    instances = np.zeros((24, 24), dtype=np.int32)
    instances[2:8, 2:8], instances[12:20, 10:18] = 1, 2
    target = instances > 0
    shifted = np.roll(target, 2, axis=1)
    assert len(figures.sample_masks([("a", image, instances), ("b", image, instances)]).axes) == 4
    assert len(figures.filled_overlays([("a", image, instances)]).axes) == 2
    contours = figures.contour_matrix(image, target, {"U-Net": shifted, "DeepLabV3+": target})
    assert [ax.get_title() for ax in contours.axes[:3]] == ["Ground truth", "U-Net", "DeepLabV3+"]
    probability = np.linspace(0, 1, 24 * 24).reshape(24, 24)
    maps = figures.confidence_maps([("a", image, probability, target)])
    assert len(maps.axes) == 5  # four panels and the probability colour bar
    with pytest.raises(ValueError):
        figures.contour_matrix(image, target, {})
