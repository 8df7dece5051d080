"""The repository's own contracts: CI runs exactly the README's test command, lint included."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _command(text: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith("python3.11 -m venv .venv") and "pytest" in line]
    assert len(lines) == 1, lines
    return lines[0]


def test_ci_runs_the_readme_test_command_with_ruff():
    readme = _command((REPO / "README.md").read_text())
    ci = _command((REPO / ".ci" / "run").read_text())
    assert readme == ci
    steps = [s.strip() for s in ci.split("&&")]
    assert ".venv/bin/ruff check ." in steps
    assert steps.index(".venv/bin/ruff check .") < next(i for i, s in enumerate(steps) if "pytest" in s)


def test_ruff_is_pinned_in_the_dev_requirements():
    pins = dict(line.split("==") for line in (REPO / "requirements_dev.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    assert re.fullmatch(r"\d+\.\d+\.\d+", pins["ruff"])


def test_reference_dataset_spellings_resolve_to_ours():
    from datasets import DATASETS, canonical_name, dataset_class

    assert canonical_name("SyntheticDataset_gaussian") == "synthetic_shapes"
    assert canonical_name("Kitti_inh") == "kitti" and canonical_name("coco") == "coco"
    assert dataset_class("patches_dataset") is dataset_class("hpatches")
    assert all(canonical_name(n) == n for n in DATASETS)
