"""Export classical (OpenCV SIFT / ORB) keypoints and descriptors on image pairs.

    python export_classical.py export_descriptor configs/classical_descriptors.yaml sift_test [--correspondence]
        [--outputImg] [--set KEY=VALUE ...]

Writes logs/<folder>/predictions/<i>.npz in the same format as ``export.py export_descriptor``
(see exporters/predictions.py); ``--correspondence`` also stores the mutual nearest-neighbour
matches of each pair (``matches``, ``match_indices``, ``match_distance``). The method and its
settings are the ``classical:`` section of the config (configs/defaults/classical.yaml).
"""
from __future__ import annotations

import argparse
import sys

import settings
from exporters import load_task
from utils.cli import add_config_overrides, main_guard
from utils.config import dump_config, load_config

TASKS = {"export_descriptor": "exporters.classical:run"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=list(TASKS), help="what to export")
    parser.add_argument("config", help="YAML config (merged over configs/defaults)")
    parser.add_argument("exper_name", metavar="export_folder", help="output folder under EXPER_PATH (logs/)")
    parser.add_argument("--correspondence", action="store_true",
                        help="also store the mutual nearest-neighbour matches of each pair")
    parser.add_argument("--outputImg", action="store_true", help="also write a picture per pair")
    add_config_overrides(parser)
    return parser


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = load_config(args.config, args.overrides)
    run = load_task(TASKS, args.task)
    export_dir = settings.exper_path() / args.exper_name
    export_dir.mkdir(parents=True, exist_ok=True)
    dump_config(config, export_dir / "config.yml")
    return run(config, export_dir, args)


if __name__ == "__main__":
    sys.exit(main())
