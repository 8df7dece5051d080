"""Write the 34 Cityscapes classes as a COCO-format categories file (for --category-file).

    python utils/create_cs34_categories_json.py --dst annotations/panoptic_cs34_categories.json

Each entry is ``{id, name, color: [r, g, b], isthing, supercategory}`` with the official
Cityscapes labelIds 0..33, names and colours (``--label-set cs4`` writes the 4-class grouping).
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the project, not utils/ siblings
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402

from utils.cli import main_guard  # noqa: E402
from utils.io import atomic_write_text  # noqa: E402
from utils.segmentation_labels import LABEL_SETS, categories_json, dumps_categories  # noqa: E402


def write_categories(dst: Path, label_set: str = "cs34") -> list[dict]:
    cats = categories_json(label_set)
    atomic_write_text(dst, dumps_categories(cats))
    return cats


@main_guard
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dst", required=True, type=Path, help="output JSON file")
    p.add_argument("--label-set", default="cs34", choices=sorted(LABEL_SETS), help="default: cs34")
    args = p.parse_args(argv)
    cats = write_categories(args.dst, args.label_set)
    print(f"wrote {len(cats)} categories to {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
