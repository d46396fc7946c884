"""tools/compare_tables.py: two runs' tables at their printed digits, timing cells apart from the rest."""

import importlib.util

from conftest import REPO

spec = importlib.util.spec_from_file_location("compare_tables", REPO / "tools" / "compare_tables.py")
compare_tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_tables)

METRICS = "| Model | Dice | IoU |\n|:--|--:|--:|\n| U-Net | 0.8123 | 0.7001 |\n"
TIMING = "| Model | inference_s |\n|:--|--:|\n| U-Net | 0.0228 |\n"


def write(root, rel, text):
    path = root / "results" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_equal_tables_timing_cells_and_a_changed_metric_are_told_apart(tmp_path):
    before, after = tmp_path / "before", tmp_path / "after"
    for root in (before, after):
        write(root, "d/e/tables/metrics.md", METRICS)
    write(before, "d/e/tables/timing.md", TIMING)
    write(after, "d/e/tables/timing.md", TIMING.replace("0.0228", "0.0238"))
    report = compare_tables.compare(before, after)
    assert report["equal"] == ["results/d/e/tables/metrics.md"]
    assert report["timing_only"] == ["results/d/e/tables/timing.md"] and not report["different"]
    write(after, "d/e/tables/metrics.md", METRICS.replace("0.7001", "0.7002"))
    (after / "results/d/e/tables/timing.md").unlink()
    report = compare_tables.compare(before, after)
    assert report["different"] == [("results/d/e/tables/metrics.md", ["U-Net / IoU: 0.7001 -> 0.7002"])]
    assert report["missing"] == ["results/d/e/tables/timing.md"]
