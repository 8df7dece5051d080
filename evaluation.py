"""Evaluate exported predictions on image pairs (HPatches protocol, or relative pose with --pose).

    python evaluation.py logs/<name>/predictions [-r] [-homo] [-o] [--plotMatching] [--sift]
        [--protocol ours|reference] [--top-k K] [--evaluate-segmentation] [--category-file F]
        [--output DIR] [--allow-partial] [--set evaluation.KEY=VALUE ...]
    python evaluation.py logs/<name>/predictions --pose [--plotMatching] [--sift] [--top-k K]
        [--output DIR] [--allow-partial] [--set evaluation.pose.KEY=VALUE ...]

Without -r / -homo / segmentation flags every HPatches metric is computed. --pose evaluates the
pose pairs of ``export.py export_pairs`` (AUC of the pose error at 5/10/20 degrees, matching
precision, matches) and cannot be combined with the HPatches or segmentation flags. Results go to the
predictions folder's parent (``logs/<name>/results.{txt,json}``; ``results_reference.*`` for
``--protocol reference``) unless --output is given. Definitions: docs/EVALUATION.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # pictures are written to files, never shown

from utils.cli import UserError, add_config_overrides, main_guard  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("path", help="folder of exported predictions (0.npz, 1.npz, ...)")
    p.add_argument("-r", "--repeatibility", "--repeatability", dest="repeatability", action="store_true",
                   help="repeatability and localisation error (MLE)")
    p.add_argument("-homo", "--homography", dest="homography", action="store_true",
                   help="homography accuracy, NN mAP and matching score")
    p.add_argument("-o", "--outputImg", dest="output_img", action="store_true",
                   help="pictures of the detections (and of the estimated warp) of every pair")
    p.add_argument("-plm", "--plotMatching", dest="plot_matching", action="store_true",
                   help="pictures of the matches, coloured correct (green) / incorrect (red)")
    p.add_argument("--sift", action="store_true",
                   help="predictions of the classical exporter (SIFT/ORB descriptors, any dtype and size)")
    p.add_argument("--protocol", choices=["ours", "reference"], default=None,
                   help="metric definitions (default: evaluation.protocol = ours)")
    p.add_argument("--top-k", dest="top_k", type=int, default=None, metavar="K",
                   help="points kept per image, best scores first (default: evaluation.top_k; 0 = all)")
    p.add_argument("--pose", action="store_true",
                   help="relative pose on pose pairs (export_pairs): AUC@5/10/20, precision, matches")
    p.add_argument("--evaluate-segmentation", dest="evaluate_segmentation", action="store_true",
                   help="score the exported segmentation: seg against seg_gt, and warped_seg against "
                        "warped_seg_gt when the export has it (mIoU, pixel and mean accuracy)")
    p.add_argument("--category-file", dest="category_file", default=None, metavar="F",
                   help="category JSON for segmentation (implies --evaluate-segmentation; default: the "
                        "export's label set); utils/cs4_categories.json on a cs34 export maps it to cs4")
    p.add_argument("--output", default=None, metavar="DIR",
                   help="where results.{txt,json} and pictures go (default: the predictions folder's parent)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--allow-partial", dest="allow_partial", action="store_true",
                   help="score an incomplete or mixed set of predictions (default: refuse it; the export's "
                        "manifest.json says what a complete set holds)")
    add_config_overrides(p)
    return p


def _print_dict_table(title: str, d: dict) -> None:
    rows = [(str(k), f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in d.items()]
    w = max([len(k) for k, _ in rows] + [6])
    print(title)
    for k, v in rows:
        print(f"  {k.ljust(w)}  {v}")


def run_segmentation(pred_dir: Path, output_img: bool, category_file: str | None) -> dict:
    from evaluations.segmentation import evaluate_segmentation_folder

    result = evaluate_segmentation_folder(pred_dir, output_img, category_file)
    # the scalars only (per-class IoUs and confusion matrices are in segmentation_results.*)
    summary = {k: v for k, v in result.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    if isinstance(result.get("warped"), dict):
        summary.update({f"warped_seg {k}": v for k, v in result["warped"].items() if isinstance(v, (int, float))})
    _print_dict_table("segmentation:", summary)
    if result.get("warped_unscored"):
        print(f"note: {result['warped_unscored']} files have warped_seg but no warped_seg_gt; warped_seg not scored")
    return result


def run_pose(pred_dir: Path, args) -> int:
    """``--pose``: evaluate, print the header and table, write results.{txt,json}."""
    from evaluations.hpatches_report import write_results
    from evaluations.pose import evaluate_pose_folder, format_pose_report, format_pose_table, load_pose_settings

    settings = load_pose_settings(args.overrides, top_k=args.top_k, sift=args.sift)
    output_dir = Path(args.output) if args.output else pred_dir.resolve().parent
    results = evaluate_pose_folder(pred_dir, settings, output_dir=output_dir, plot_matching=args.plot_matching,
                                   progress=args.progress)
    json_path, txt_path = write_results(results, output_dir, "results", report=format_pose_report)
    print(f"relative pose, {results['num_pairs']} pairs; {settings.header()}")
    print(format_pose_table(results))
    print(f"wrote {json_path} and {txt_path}")
    return 0


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from evaluations.hpatches_report import evaluate_folder, format_table, results_stem, write_results
    from evaluations.predictions import check_export
    from evaluations.protocols import load_settings

    pred_dir = Path(args.path)
    segmentation = args.evaluate_segmentation or args.category_file is not None
    if args.pose and (args.repeatability or args.homography or segmentation or args.output_img or args.protocol):
        raise UserError("--pose cannot be combined with -r, -homo, -o, --protocol or segmentation flags "
                        "(pose pairs have no homography); run them separately")
    # a partial or mixed set is refused (pose pairs too) unless --allow-partial
    warning = check_export(pred_dir, allow_partial=args.allow_partial)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if args.pose:
        return run_pose(pred_dir, args)
    rep, homo = args.repeatability, args.homography
    if not (rep or homo or segmentation):
        rep = homo = True
    settings = load_settings(args.overrides, protocol=args.protocol, top_k=args.top_k, sift=args.sift)
    output_dir = Path(args.output) if args.output else pred_dir.resolve().parent

    if rep or homo:
        results = evaluate_folder(pred_dir, settings, repeatability=rep, homography=homo, output_dir=output_dir,
                                  output_img=args.output_img, plot_matching=args.plot_matching,
                                  progress=args.progress)
        json_path, txt_path = write_results(results, output_dir, results_stem(settings))
        print(format_table(results))
        print(f"wrote {json_path} and {txt_path}")
    if segmentation:
        if not pred_dir.is_dir():
            raise UserError(f"{pred_dir}: predictions folder not found")
        run_segmentation(pred_dir, args.output_img, args.category_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
