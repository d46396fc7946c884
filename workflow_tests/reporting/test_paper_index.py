"""The paper index: one declarative mapping per paper names the outputs, writes paper_index.md and the README."""

import re

import pytest
from conftest import REPO

from nucleiflow.reporting import paper_index as pi
from nucleiflow.reporting.published import published_tables


def test_every_item_has_a_known_status_and_files_unless_not_reproducible():
    for paper in pi.PAPERS.values():
        assert paper.items, paper.key
        for item in paper.items:
            assert item.status in pi.STATUSES, (paper.key, item.item)
            assert bool(item.files) == (item.status != pi.NOT_REPRODUCIBLE), (paper.key, item.item)
            if item.status != pi.REPRODUCED:
                assert item.why, f"{paper.key} {item.item}: say why it is {item.status}"


def test_segmentation_papers_are_the_published_studies_and_name_their_files():
    assert set(pi.SEGMENTATION_PAPERS) <= set(published_tables(include_reference=True))
    for key in pi.SEGMENTATION_PAPERS:
        paper = pi.PAPERS[key]
        produced = {f"tables/{n}.csv" for n in pi.table_names(key).values()}
        produced |= {f"figures/{n}.png" for n in pi.figure_names(key).values()}
        produced |= {"tables/vs_paper.csv"}
        for item in paper.items:
            for path in item.files:
                if path.startswith(("tables/", "figures/")):
                    assert path in produced, (key, item.item, path)
        # Every renamed output is named after a table or figure of its paper.
        for name in {**paper.tables, **paper.figures}.values():
            assert re.match(r"(table|figure)\d+(_\d+)?_\w+$", name), name


def test_generic_experiments_keep_the_generic_names():
    assert pi.table_names(None) == {key: key for key in pi.SEG_TABLE_KEYS}
    assert pi.figure_names(None) == {key: key for key in pi.SEG_FIGURE_KEYS}
    assert pi.paper_key(None) == pi.GENERIC and pi.paper_key("pannuke") == "pannuke"
    assert pi.table_names("pannuke")["metrics"] == "table2_4_metrics"
    assert pi.figure_names("pannuke")["prediction_examples"] == "figure11_predictions"
    assert pi.figure_names("classic_unet_dsb2018")["image_3"] == "figure5_image"


def test_index_lists_every_item_with_its_file_and_the_run_status():
    text = pi.index_markdown("pannuke", "pannuke_tiny", "pannuke", evaluated=("val", "test"))
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| Item")]
    assert len(rows) == len(pi.PANNUKE.items)
    table2 = next(row for row in rows if row.startswith("| Table 2 |"))
    assert "not in this run" in table2 and "evaluate_splits" in table2
    assert "| Table 4 | Performance on the test set" in text and "[tables/table2_4_metrics.csv]" in text
    assert "| Figure 1 | Contracting block | - | not reproducible |" in text
    resunet = pi.index_markdown("resunet_dsb2018", "dsb_resunet", "dsb2018", ("test",), comparisons=("resunet_splits",))
    assert "[../../comparisons/resunet_splits/table.csv]" in resunet
    # Table 2's row of the experiment's own split is in its vs_paper too, beside the comparison.
    table2 = next(line for line in resunet.splitlines() if line.startswith("| Table 2 |"))
    assert "[tables/vs_paper.csv]" in table2
    seen = next(line for line in resunet.splitlines() if line.startswith("| Text, Section 5.2 |"))
    assert "not in this run" in seen  # evaluated on test only: the seen-data comparison needs train
    assert "`explanations/<arch>/<encoder>/<reg>/figure6_gradcam.png`" in resunet and "rule `explain`" in resunet


@pytest.mark.parametrize("paper", list(pi.PAPERS))
def test_readme_holds_the_generated_table_of_every_paper(paper):
    readme = (REPO / "README.md").read_text()
    start, end = "<!-- paper-index:start -->", "<!-- paper-index:end -->"
    assert start in readme and end in readme, "README lacks the paper-index section"
    section = readme.split(start, 1)[1].split(end, 1)[0].strip()
    assert section == pi.readme_tables().strip(), (
        "README's paper tables drifted from nucleiflow.reporting.paper_index; regenerate them with "
        "`.venv/bin/python -m nucleiflow.reporting.paper_index`"
    )


def test_pannuke_table1_is_approximated_because_the_decoders_differ():
    table1 = next(item for item in pi.PANNUKE.items if item.item == "Table 1")
    assert table1.status == pi.APPROXIMATED and "segmentation-models-pytorch" in table1.why


@pytest.mark.parametrize(
    "paper, declared",
    [
        ("pannuke", ["Kaggle", "assumption", "Dropout2d", "every convolution", "equation 4", "reduce on plateau"]),
        ("pannuke", ["median"]),
        ("resunet_dsb2018", ["BBBC038", "256 x 256", "ImageNet", "reduce on plateau", "median"]),
        ("classic_unet_dsb2018", ["Kaggle", "reduce on plateau", "median"]),
        ("classification", ["micro", "batch size", "learning rate", "head-only", "small CNN's design"]),
        ("classification", ["augmented training set", "QDA after a PCA", "Platt", "soft voting"]),
    ],
)
def test_every_paper_index_declares_the_workflows_own_choices(paper, declared):
    text = pi.index_markdown(paper, "experiment", "dataset", ("train", "val", "test"))
    notes = text.split(pi.NOTES_HEADING, 1)[1]
    for phrase in declared:
        assert phrase in notes, f"{paper}: the paper index does not declare {phrase!r}"
    assert pi.NOTES_HEADING in pi.readme_tables()


# Phrases that credited the papers with the workflow's own choices (none of the four papers says these).
MISATTRIBUTIONS = (
    "the study's setting",
    "papers' connected components",
    "the paper's SVC",
    "the paper's schedule",
    "L2 is a penalty `l2 * sum(w^2)` on the kernels of the added blocks",
)


def test_no_file_credits_the_papers_with_our_choices():
    files = [REPO / "README.md", *(REPO / "config").glob("*.yaml"), *(REPO / "src" / "nucleiflow").rglob("*.py")]
    found = [
        f"{path.relative_to(REPO)}: {phrase!r}"
        for path in files
        for phrase in MISATTRIBUTIONS
        if phrase in path.read_text()
    ]
    assert not found, found
