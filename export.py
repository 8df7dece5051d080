"""Export predictions with a trained network.

    python export.py <task> <config> <export folder> [--outputImg] [--export-segmentation] [--set KEY=VALUE ...]

Tasks:
  export_descriptor           keypoints + descriptors on image pairs (HPatches) -> logs/<folder>/predictions/<i>.npz
  export_pairs                the same on pose pairs (data.dataset: pose_pairs, data.pairs) -> for evaluation.py --pose
  export_detector_homoAdapt   pseudo ground-truth keypoints by homography adaptation (COCO / KITTI)
  export_model                the network in a deployable format (--format, --precision int8 --calibration DIR)

The resolved config is copied to logs/<folder>/config.yml (logs/ = EXPER_PATH, see settings.py).
"""
from __future__ import annotations

import sys

from exporters import export_parser, main as export_main
from utils.cli import main_guard

TASKS = {
    "export_descriptor": "exporters.descriptors:run",
    "export_pairs": "exporters.descriptors:run_pairs",
    "export_detector_homoAdapt": "exporters.detector_labels:run",
    "export_model": "exporters.model_export:run",
}


def build_parser():
    parser = export_parser(__doc__, TASKS)
    parser.add_argument("--outputImg", action="store_true", help="also write a picture per item (space hungry)")
    parser.add_argument("--export-segmentation", dest="export_segmentation", action="store_true",
                        help="also export predicted segmentation ids (models with a segmentation head)")
    parser.add_argument("--format", choices=["onnx", "torchscript"], default="onnx",
                        help="export_model: the deployable format")
    parser.add_argument("--precision", choices=["fp32", "int8"], default="fp32",
                        help="export_model: int8 = ONNX statically quantized on --calibration images "
                             "(CPU; see docs/DEPLOYMENT.md)")
    parser.add_argument("--calibration", metavar="DIR",
                        help="export_model --precision int8: folder of calibration images (your own frames, "
                             "not evaluation images); default inference.int8.calibration")
    return parser


@main_guard
def main(argv: list[str] | None = None) -> int:
    return export_main(build_parser(), TASKS, argv)


if __name__ == "__main__":
    sys.exit(main())
