"""Convert COCO panoptic PNGs to Cityscapes-34 labelId masks (uint8 gray PNGs, same file names).

    python utils/coco_panoptic_to_cs34.py --src panoptic_val2017 \\
        --ann annotations/panoptic_val2017.json \\
        --categories annotations/panoptic_coco_categories.json --dst panoptic_cs34_val2017

Each pixel's segment id (R + 256 G + 256^2 B) is looked up in the image's ``segments_info``;
its category goes through the COCO -> cs34 table of ``utils/segmentation_labels.py``. Void and
unmapped pixels get 0. Paths are relative to the current directory.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the project, not utils/ siblings
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402

from tqdm import tqdm  # noqa: E402

from utils.cli import UserError, main_guard  # noqa: E402
from utils.io import atomic_imwrite, read_image_color  # noqa: E402
from utils.segmentation_labels import coco_category_lut, panoptic_to_cs34, read_categories, read_panoptic_annotations  # noqa: E402


def convert_folder(src: Path, ann: Path, categories: Path | None, dst: Path,
                   skip_existing: bool = False, progress: bool = True) -> int:
    """Convert every annotation of ``ann`` (PNGs under ``src``) into ``dst``; returns the count.

    ``categories``: a categories file; None = the ``categories`` list inside ``ann``.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise NotADirectoryError(f"{src}: panoptic PNG folder not found")
    segments, json_categories = read_panoptic_annotations(ann)
    cats = read_categories(categories) if categories is not None else json_categories
    if not cats:
        raise UserError(f"{ann}: has no 'categories'; pass --categories panoptic_coco_categories.json")
    lut = coco_category_lut(cats)
    if not segments:
        raise UserError(f"{ann}: no annotations to convert")
    if dst.resolve() == src.resolve():
        raise UserError(f"{dst}: the output folder must differ from --src (files keep their names)")
    dst.mkdir(parents=True, exist_ok=True)
    done = 0
    for name, info in tqdm(sorted(segments.items()), desc="panoptic -> cs34", unit="img", disable=not progress):
        out = dst / name
        if skip_existing and out.is_file():
            continue
        mask = panoptic_to_cs34(read_image_color(src / name), info, lut)
        atomic_imwrite(out, mask)
        done += 1
    return done


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--src", required=True, type=Path, help="folder of COCO panoptic PNGs")
    p.add_argument("--ann", required=True, type=Path, help="the matching panoptic JSON (segments_info)")
    p.add_argument("--categories", type=Path, default=None,
                   help="panoptic_coco_categories.json (default: the JSON's own 'categories')")
    p.add_argument("--dst", required=True, type=Path, help="output folder of cs34 labelId PNGs")
    p.add_argument("--skip-existing", action="store_true",
                   help="keep masks already in --dst (resume an interrupted conversion)")
    return p.parse_args(argv)


@main_guard
def main(argv=None) -> int:
    args = parse_args(argv)
    n = convert_folder(args.src, args.ann, args.categories, args.dst, args.skip_existing)
    print(f"wrote {n} cs34 masks to {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
