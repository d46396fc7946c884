"""The README's commands, run as written from the root of a fresh checkout.

A command that needs what this machine lacks (the real downloads, a GPU, a cluster) is
dry-run (`-n`); the demo's own commands are dry-run through `make -n demo`; the tiny
end-to-end run (test_workflow.py) and `make test` (.ci/run) execute theirs for real.
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SHARED_DATA, copy_checkout, dry_run, link_shared_data, run_in

from nucleiflow.workflow.cells import expand_folds

README = REPO / "README.md"
PAPER_COMMAND = (
    ".venv/bin/snakemake --workflow-profile profiles/local --cores 16 --resources gpu=1 --configfile config/paper.yaml"
)
TINY_COMMAND = (
    ".venv/bin/snakemake --workflow-profile profiles/local --cores 2 --configfile workflow_tests/config_tiny.yaml"
)
REPORT_COMMAND = ".venv/bin/snakemake --report results/report.html"
OWN_IMAGES_COMMAND = ".venv/bin/snakemake -c2 results/inference/my_cells/tables/summary.csv"
SHARED_SLIDES_COMMAND = (
    ".venv/bin/snakemake -c2 results/slides/shared/CMU-1-Small-Region/nuclei.geojson "
    "results/slides/shared/TCGA-CR-7395-01A-01-TS1/nuclei.geojson --configfile config.yaml config/shared_slides.yaml"
)

# How each README command is proven. A command added to the README must be added here.
DRY_RUN, MAKE_TARGET, BENCHMARK_ARGS = "dry-run", "make -n", "benchmark arguments"
HOW_PROVEN = {
    "make demo": "the demo; its snakemake commands are dry-run by test_demo_commands_are_the_readme_commands",
    "make test": "CI: .ci/run runs it (test_ci_runs_the_readme_test_command)",
    PAPER_COMMAND: DRY_RUN,
    ".venv/bin/snakemake --workflow-profile profiles/slurm --configfile config/paper.yaml": DRY_RUN,
    ".venv/bin/snakemake cache_weights --cores 1 --configfile config/paper.yaml": DRY_RUN,
    TINY_COMMAND: "test_workflow.py::test_tiny_config_runs_every_stage_end_to_end runs it from a fresh checkout",
    REPORT_COMMAND: "the demo (make demo) runs it",
    "make .venv/.installed": MAKE_TARGET,
    "make lint": MAKE_TARGET,
    "make bioimageio-venv": MAKE_TARGET,
    ".venv/bin/snakemake -c2 results/dsb2018/dsb_resunet_70_20_10/export/resunet/none/none/bioimageio.zip": (
        "test_output_tree.py: the demo's output tree holds this package (the demo config exports it)"
    ),
    "make lock": MAKE_TARGET,
    "make clean": MAKE_TARGET,
    "snakemake --lint": "test_workflow.py::test_lint_is_clean runs it; `make lint` wraps it",
    "pip install -r requirements.lock": "test_lock_file_is_what_the_environment_holds",
    "tools/slurm-local/start.sh": "test_slurm.py starts the cluster it runs the workflow on with it",
    "tools/slurm-local/stop.sh": "test_slurm.py stops the cluster with it when it started it",
    # GPU benchmarks: their arguments are parsed by the benchmark's own parser (no GPU here).
    ".venv/bin/python benchmarks/bench_training.py --device cuda --encoder resnet50 --size 256 --batch 16 "
    "--steps 50": BENCHMARK_ARGS,
    ".venv/bin/python benchmarks/bench_data_pipeline.py --device cuda --encoder resnet50 --size 256 --batch 16 "
    "--workers 0,3,7 --amp --store results/pannuke/store.h5": BENCHMARK_ARGS,
    ".venv/bin/python benchmarks/bench_explain.py": BENCHMARK_ARGS,
    ".venv/bin/python benchmarks/bench_instance_targets.py --workdir /tmp/targets": BENCHMARK_ARGS,
    ".venv/bin/python benchmarks/bench_instance_targets.py --workdir /tmp/targets --tta d4": BENCHMARK_ARGS,
    ".venv/bin/snakemake -c2 results/dsb2018/dsb_resunet/explanations/resunet/none/none/lrp_statistics.csv": DRY_RUN,
    OWN_IMAGES_COMMAND: "test_own_images_readme_steps_plan_the_prediction",
    # The H&E model reads ../shared/data: dry-run beside it (skipped where it is absent).
    ".venv/bin/snakemake --workflow-profile profiles/local --cores 2 --configfile config/hne.yaml": (
        "test_datasets_hne.py::test_hne_config_dry_runs_beside_the_shared_data"
    ),
    SHARED_SLIDES_COMMAND: (
        "test_readme_commands.py::test_the_readme_command_plans_both_shared_slides (needs ../shared)"
    ),
    ".venv/bin/python benchmarks/bench_slides.py --threads 1": BENCHMARK_ARGS,
    ".venv/bin/python benchmarks/bench_slides.py --device cuda --batch 64 --parts throughput cmu": BENCHMARK_ARGS,
    # The real DSB2018 release (README, "Measured on the real release").
    ".venv/bin/snakemake --workflow-profile profiles/local --cores 1 --configfile config/dsb2018_cpu.yaml "
    "sources.yaml": "test_config.py::test_cpu_config_runs_from_local_sources dry-runs it with stand-in sources",
    ".venv/bin/python tools/build_dsb2018_stage1_test.py --out /scratch/me/dsb2018": BENCHMARK_ARGS,
    ".venv/bin/python benchmarks/bench_dsb2018_convert.py": BENCHMARK_ARGS,
    ".venv/bin/python benchmarks/dsb2018_otsu_baseline.py results/dsb2018/store.h5": BENCHMARK_ARGS,
    ".venv/bin/python benchmarks/dsb2018_eda_vs_paper.py results/dsb2018/store.h5": BENCHMARK_ARGS,
    ".venv/bin/python benchmarks/bench_training.py --store results/dsb2018/store.h5 --arch resunet --encoder none "
    "--size 256 --batch 8 --loss bce_dice": BENCHMARK_ARGS,
    ".venv/bin/python benchmarks/dsb2018_per_modality.py results/dsb2018/store.h5 "
    "results/dsb2018/dsb_recipe_hv/evaluation/resunet/none/none/test_per_image.csv": BENCHMARK_ARGS,
    ".venv/bin/python benchmarks/dsb2018_per_modality.py results/dsb2018/store.h5 "
    "results/dsb2018/dsb_recipe_contour/evaluation/resunet/none/none/test_per_image.csv": BENCHMARK_ARGS,
    ".venv/bin/snakemake --workflow-profile profiles/local --cores 2 --configfile config/dsb2018_cpu.yaml "
    "sources.yaml -- results/comparisons/dsb_recipe_val/table.csv results/comparisons/dsb_recipe_test/table.csv": (
        "test_config.py::test_cpu_config_runs_from_local_sources dry-runs the config with stand-in sources and "
        "finds the recipe comparisons planned"
    ),
    ".venv/bin/snakemake --workflow-profile profiles/local --cores 2 --configfile config/dsb2018_cpu.yaml "
    "sources.yaml --set-threads train_segmentation=2 evaluate_segmentation=2 -- "
    "results/dsb2018/dsb_classic_unet/paper_index.md results/dsb2018/dsb_classic_unet/tables/table2_per_image.csv "
    "results/dsb2018/dsb_classic_unet/tables/robustness_auc.csv "
    "results/dsb2018/dsb_classic_unet/explanations/classic_unet/none/none/lrp_statistics.csv": (
        "test_config.py::test_cpu_config_runs_from_local_sources dry-runs the config with stand-in sources and "
        "finds the classic U-Net study's outputs planned"
    ),
    ".venv/bin/snakemake --workflow-profile profiles/local --cores 2 --configfile config/dsb2018_cpu.yaml "
    "sources.yaml -- results/dsb2018/dsb_model_comparison/tables/metrics.csv "
    "results/dsb2018/dsb_model_comparison/figures/contours.png "
    "results/dsb2018/dsb_model_comparison/tables/robustness_auc.csv "
    "results/dsb2018/dsb_model_comparison/explanations/unet/resnet50/none/lrp_statistics.csv "
    "results/dsb2018/dsb_model_comparison/explanations/deeplabv3plus/resnet50/none/lrp_statistics.csv "
    "results/dsb2018/dsb_model_comparison/explanations/resunet/none/none/lrp_statistics.csv": (
        "test_config.py::test_cpu_config_runs_from_local_sources dry-runs the config with stand-in sources and "
        "finds Table 1's outputs planned"
    ),
    ".venv/bin/snakemake --workflow-profile profiles/local --cores 2 --configfile config/dsb2018_cpu.yaml "
    "sources.yaml --set-threads train_segmentation=2 evaluate_segmentation=2 -- "
    "results/dsb2018/dsb_resunet_70_20_10/paper_index.md "
    "results/dsb2018/dsb_resunet_70_20_10/tables/robustness_auc.csv "
    "results/dsb2018/dsb_resunet_80_10_10/paper_index.md "
    "results/dsb2018/dsb_resunet_80_10_10/tables/robustness_auc.csv": (
        "test_config.py::test_cpu_config_runs_from_local_sources dry-runs the config with stand-in sources and "
        "finds Table 2's split runs planned"
    ),
    ".venv/bin/snakemake -c2 results/slides/hne/CMU-1-Small-Region/nuclei.geojson --configfile config/hne.yaml "
    "config/hne_slides.yaml": "test_hne.py::test_the_hne_model_on_the_cmu_slide_dry_runs_beside_the_shared_data",
    # The restructuring check's demo runs: the demo at one core.
    ".venv/bin/snakemake --workflow-profile profiles/local --cores 1": DRY_RUN,
}


def readme_commands() -> list[str]:
    """Every command of the README: the lines of its bash blocks and its inline `snakemake`/`make`/`pip` code."""
    text = README.read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = " ".join(line.split("#")[0].split())
            if command:
                commands.append(command)
    for code in re.findall(r"`([^`\n]+)`", text):
        if re.match(r"(\.venv/bin/)?(snakemake|make|pip) ", code):
            commands.append(" ".join(code.split()))
    return commands


def config_files_read(output: str, root: Path) -> list[str]:
    """The config files Snakemake says it read, relative to the checkout's root."""
    (listing,) = re.findall(r"Config file\(s\): \[(.*)\]", output)
    files = [Path(name) for name in re.findall(r"'([^']+)'", listing)]
    return [(path.relative_to(root) if path.is_absolute() else path).as_posix() for path in files]


def stand_in_nucrec(checkout: Path) -> None:
    """NucRec needs a login: the README tells users to put the archive here; the dry-run only needs it to exist."""
    archive = checkout / "resources" / "nucrec" / "NucRec.zip"
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.touch()


def test_every_readme_command_is_proven_somewhere():
    commands = readme_commands()
    assert PAPER_COMMAND in commands and "make test" in commands
    unproven = [command for command in commands if command not in HOW_PROVEN]
    assert not unproven, f"README commands no test runs (add them to HOW_PROVEN): {unproven}"


@pytest.mark.parametrize("command", [c for c, how in HOW_PROVEN.items() if how == BENCHMARK_ARGS])
def test_readme_benchmark_commands_parse(command, monkeypatch):
    """A GPU benchmark cannot run here; its flags and values must still be ones its parser accepts."""
    import importlib.util

    script, *argv = shlex.split(command)[1:]
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # as `python benchmarks/x.py` puts it first
    spec = importlib.util.spec_from_file_location(Path(script).stem, REPO / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.parse_args(argv)  # argparse exits (SystemExit) on an unknown flag or a bad value


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M), ".ci/run must run the README's test command"


@pytest.mark.parametrize("command", [c for c, how in HOW_PROVEN.items() if how == DRY_RUN])
def test_readme_command_dry_runs_from_a_fresh_checkout(checkout, command):
    stand_in_nucrec(checkout)
    output = dry_run(checkout, command)
    named = command.split("--configfile ")[1].split()[0] if "--configfile" in command else "config.yaml"
    assert config_files_read(output, checkout) == [named]


@pytest.mark.parametrize("target", [c.split()[1] for c, how in HOW_PROVEN.items() if how == MAKE_TARGET])
def test_readme_make_targets_exist(checkout, target):
    result = run_in(checkout, "make -n", target)
    assert result.returncode == 0, result.stdout + result.stderr


def test_demo_commands_are_the_readme_commands(checkout):
    """`make demo` runs the demo config (no --configfile) and then the README's report command, as written."""
    result = run_in(checkout, "make -n demo CORES=2")
    assert result.returncode == 0, result.stderr
    snakemake_lines = [line for line in result.stdout.splitlines() if ".venv/bin/snakemake" in line]
    assert len(snakemake_lines) == 2 and snakemake_lines[1] == REPORT_COMMAND, snakemake_lines
    assert "--configfile" not in snakemake_lines[0]
    output = dry_run(checkout, snakemake_lines[0])
    assert config_files_read(output, checkout) == ["config.yaml"]


def test_paper_command_plans_exactly_the_papers_experiments(checkout):
    """The paper run reads config/paper.yaml alone: none of the demo's datasets, files or experiments leak in."""
    stand_in_nucrec(checkout)
    output = dry_run(checkout, PAPER_COMMAND)
    assert config_files_read(output, checkout) == ["config/paper.yaml"]

    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    planned_segmentation = set(re.findall(r"results/[a-z0-9_]+/([A-Za-z0-9_]+)/(?:tables|figures|models)/", output))
    planned_segmentation -= {"classification"}
    planned_classification = set(re.findall(r"results/[a-z0-9_]+/classification/([A-Za-z0-9_]+)/", output))
    downloads = set(re.findall(r"resources/([a-z0-9_]+)/download/(?!checksums/)([A-Za-z0-9_.\-]+)", output))

    # A cross-validation experiment plans one experiment per fold plus its own cross-validation table.
    experiments = set(expand_folds(copy.deepcopy(paper))["segmentation"])
    assert planned_segmentation == experiments | {n for n, e in paper["segmentation"].items() if "folds" in e}
    assert planned_classification == set(paper["classification"])
    assert downloads == {(name, file) for name, dataset in paper["datasets"].items() for file in dataset["files"]}
    leaked = (set(demo["segmentation"]) | set(demo["classification"])) - (
        set(paper["segmentation"]) | set(paper["classification"])
    )
    assert leaked and not leaked & (planned_segmentation | planned_classification)
    assert "resources/demo" not in output and "demo_data" not in output
    assert "demo_data" not in paper


def test_lock_file_is_what_the_environment_holds():
    """`pip install -r requirements.lock` (README, cluster section) finds every pin already satisfied here."""
    pip = REPO / ".venv" / "bin" / "pip"
    if not pip.exists():
        pytest.skip("no .venv: the environment is not built by make")
    result = subprocess.run(
        [str(pip), "install", "--dry-run", "--no-index", "--no-deps", "-r", str(REPO / "requirements.lock")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Would install" not in result.stdout, result.stdout


def test_own_images_readme_steps_plan_the_prediction(tmp_path):
    """ "Segment your own images in three steps", as the README writes them: folders, five lines of config, run."""
    from PIL import Image

    root = copy_checkout(tmp_path)
    images = root / "data" / "my_cells" / "images"
    images.mkdir(parents=True)
    for name in ("a", "b"):
        Image.new("RGB", (40, 30), (20, 40, 60)).save(images / f"{name}.png")
    section = README.read_text().split("## Segment your own images")[1].split("\n## ")[0]
    snippet = re.findall(r"```yaml\n(.*?)```", section, re.S)[0]
    config = yaml.safe_load((root / "config.yaml").read_text())
    for key, value in yaml.safe_load(textwrap.dedent(snippet)).items():
        config.setdefault(key, {}).update(value)
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    output = dry_run(root, OWN_IMAGES_COMMAND)
    assert re.search(r"^predict\s+1$", output, flags=re.M) and "results/inference/my_cells/" in output


# The whole-slide stage's README command over the two real slides (../shared/data/wsi).
WSI = SHARED_DATA / "wsi"


@pytest.mark.shared_data
def test_the_readme_command_plans_both_shared_slides(checkout):
    """The README's command for the two real slides plans plan, segment and gather of each (dry run)."""
    if not (WSI / "TCGA-CR-7395-01A-01-TS1.svs").is_file():
        pytest.skip("../shared/data/wsi is absent")
    link_shared_data(checkout)  # the checkout's ../shared, as beside the project
    output = dry_run(checkout, SHARED_SLIDES_COMMAND)
    for rule in ("slide_plan", "slide_segment", "slide_gather"):
        assert re.search(rf"^{rule}\s+2$", output, flags=re.M), output[-3000:]
