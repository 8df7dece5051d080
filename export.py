"""Export predictions with a trained network.

    python export.py <task> <config> <export folder> [--outputImg] [--export-segmentation] [--set KEY=VALUE ...]

Tasks:
  export_descriptor           keypoints + descriptors on image pairs (HPatches) -> logs/<folder>/predictions/<i>.npz
  export_detector_homoAdapt   pseudo ground-truth keypoints by homography adaptation (COCO / KITTI)
  export_model                the network in a deployable format

The resolved config is copied to logs/<folder>/config.yml (logs/ = EXPER_PATH, see settings.py).
"""
from __future__ import annotations

import argparse
import sys

import settings
from exporters import load_task
from utils.cli import add_config_overrides, main_guard
from utils.config import dump_config, load_config

TASKS = {
    "export_descriptor": "exporters.descriptors:run",
    "export_detector_homoAdapt": "exporters.homography_adaptation:run",
    "export_model": "exporters.model_export:run",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=list(TASKS), help="what to export")
    parser.add_argument("config", help="YAML config (merged over configs/defaults)")
    parser.add_argument("exper_name", metavar="export_folder", help="output folder under EXPER_PATH (logs/)")
    parser.add_argument("--outputImg", action="store_true", help="also write a picture per item (space hungry)")
    parser.add_argument("--export-segmentation", dest="export_segmentation", action="store_true",
                        help="also export predicted segmentation ids (models with a segmentation head)")
    parser.add_argument("--format", choices=["onnx", "torchscript"], default="onnx",
                        help="export_model: the deployable format")
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
