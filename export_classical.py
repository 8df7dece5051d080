"""Export classical (OpenCV SIFT / ORB) keypoints and descriptors on image pairs.

    python export_classical.py export_descriptor configs/classical_descriptors.yaml sift_test [--correspondence]
        [--outputImg] [--set KEY=VALUE ...]

    python export_classical.py export_pairs configs/pose_scannet_sample.yaml sift_scannet
    python evaluation.py logs/sift_scannet/predictions --pose --sift

Writes logs/<folder>/predictions/<i>.npz in the same format as ``export.py export_descriptor``
(see exporters/predictions.py); ``--correspondence`` also stores the mutual nearest-neighbour
matches of each pair (``matches``, ``match_indices``, ``match_distance``). The method and its
settings are the ``classical:`` section of the config (configs/defaults/classical.yaml).
"""
from __future__ import annotations

import sys

from exporters import export_parser, main as export_main
from utils.cli import main_guard

TASKS = {"export_descriptor": "exporters.classical:run", "export_pairs": "exporters.classical:run_pairs"}


def build_parser():
    parser = export_parser(__doc__, TASKS)
    parser.add_argument("--correspondence", action="store_true",
                        help="also store the mutual nearest-neighbour matches of each pair")
    parser.add_argument("--outputImg", action="store_true", help="also write a picture per pair")
    return parser


@main_guard
def main(argv: list[str] | None = None) -> int:
    return export_main(build_parser(), TASKS, argv)


if __name__ == "__main__":
    sys.exit(main())
