"""What adapting MagicPoint to real photographs does to it on Synthetic Shapes.

    python benchmarks/magicpoint_domain_shift.py [--shared ../shared/data] [--train-minutes 40]
        [--name bench_mp_photos] [--max-images 300] [--plot docs/figures/magicpoint_domain_shift.png]

The question it answers: the converted reference MagicPoint (``pretrained/magicpoint_rpautrat.pth``)
scores far below our Synthetic Shapes MagicPoint on our Synthetic Shapes test split, with a ring of
secondary detections a few pixels beside each corner (docs/BENCHMARKS.md). Is that what a
MagicPoint looks like once it has been trained on real images (the reference's step 3, "MagicPoint
on MS-COCO"), rather than a difference of our test images? This reproduces that step at CPU scale:

1. the project's training photographs (``superpoint_quality.build_training_photos``: 243 crops at
   240x320, none of the evaluation images) and their homography-adaptation labels by
   ``--magicpoint`` (50 homographies);
2. ``train_base`` with ``configs/magicpoint_folder_train.yaml`` from ``--magicpoint`` on those labels
   for ``--train-minutes`` (resumable: a re-run continues the run);
3. every checkpoint of the run (step 0 = ``--magicpoint``) and ``--reference`` scored on the first
   ``--max-images`` images of the Synthetic Shapes test split (``magicpoint_synthetic.evaluate``, our
   protocol: mAP at 2 and 4 px, precision / recall at 4 px, detections per ground-truth point and
   where they lie), and the start, the last checkpoint and ``--reference`` also scored for
   repeatability on the 8 real HPatches pairs and the 50 embedded pairs (k = 1000, 240x320);
4. a markdown report, and a PNG of the synthetic mAP and the "beside" share against the step.

``--bn-fit WEIGHTS ...`` instead asks the weights which images their batch-norm statistics were
gathered on: for every batch-norm layer, the median over channels of
``|batch mean - running mean| / running std`` of the layer's input, on 90 Synthetic Shapes test images
(clean, and with the training augmentation) and on every image of ``shared/data/hpatches_real`` (held
out everywhere). A layer fits the images it was last trained on best (about a minute on 2 vCPUs, AVX-512 + VNNI + BF16).
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import magicpoint_synthetic as synthetic  # noqa: E402
import superpoint_quality as quality  # noqa: E402

import settings  # noqa: E402
from utils.config import load_config  # noqa: E402

from machine_info import cpu_name  # noqa: E402


def adapt(magicpoint: Path, photos: Path, labels: str, name: str, minutes: float) -> int:
    """``train_base`` on the photos' labels from ``magicpoint``; resumable. Returns the step reached."""
    from training.magicpoint import MagicPointTask
    from training.trainer import Trainer

    cfg = load_config(REPO / "configs/magicpoint_folder_train.yaml",
                      [f"data.root={photos}", f"data.labels={labels}", f"pretrained={magicpoint}",
                       f"time_limit_minutes={minutes}"])
    trainer = Trainer(cfg, name, MagicPointTask(cfg), do_eval=True)
    trainer.train()
    return trainer.n_iter


def synthetic_scores(weights: list[tuple[str, Path]], max_images: int) -> dict:
    """``{label: magicpoint_synthetic.evaluate(...)}`` on the first ``max_images`` test images."""
    from datasets import get_dataset
    from models import load_pretrained

    config = synthetic.test_split_config(load_config(REPO / "configs/magicpoint_shapes_cpu.yaml"))
    dataset = get_dataset(config, "test")
    out = {}
    for label, path in weights:
        out[label] = synthetic.evaluate(load_pretrained(config["model"], path), config, (2.0, 4.0), max_images,
                                        dataset=dataset)
        print(f"synthetic: scored {label}", file=sys.stderr, flush=True)
    return out


BN_LAYERS = ["conv1a", "conv1b", "conv2a", "conv2b", "conv3a", "conv3b", "conv4a", "conv4b",
             "detector a", "detector b", "descriptor a", "descriptor b"]


@torch.no_grad()
def bn_fit(model: torch.nn.Module, images: list[torch.Tensor]) -> list[float]:
    """Per batch-norm layer (registration order), the median over channels of
    ``|mean of the layer's input over images - running_mean| / sqrt(running_var + eps)``.

    ``images``: ``B x 1 x H x W`` batches in [0, 1].
    """
    layers = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    sums = [0.0] * len(layers)
    count = [0] * len(layers)

    def hook(i):
        def pre(module, inputs):
            x = inputs[0].double()
            sums[i] = sums[i] + x.sum(dim=(0, 2, 3))
            count[i] += x.shape[0] * x.shape[2] * x.shape[3]
        return pre

    handles = [m.register_forward_pre_hook(hook(i)) for i, m in enumerate(layers)]
    try:
        model.eval()
        for batch in images:
            model(batch)
    finally:
        for h in handles:
            h.remove()
    return [float(((sums[i] / count[i] - m.running_mean.double()).abs()
                   / (m.running_var.double() + m.eps).sqrt()).median()) for i, m in enumerate(layers)]


def bn_images(shared: Path, synthetic_images: int = 90) -> dict[str, list[torch.Tensor]]:
    """Batches of the first Synthetic Shapes test images (120x160), clean and with the training
    augmentation, and of the real HPatches images (every image of ``shared/hpatches_real``, 240x320)."""
    import cv2

    from datasets import get_dataset
    from datasets.augmentation import Randomness
    from datasets.collate import collate
    from datasets.pairs import prepare_batch

    config = synthetic.test_split_config(load_config(REPO / "configs/magicpoint_shapes_cpu.yaml"))
    dataset = get_dataset(config, "test")
    batches = [collate([dataset[i] for i in range(s, min(s + 30, synthetic_images))])
               for s in range(0, synthetic_images, 30)]
    rng = Randomness.from_seed(0, torch.device("cpu"))
    # the same images as the training saw them (both models' recipes: photometric + homographic)
    augmented = [prepare_batch(b, config["data"], True, rng, torch.device("cpu"))["image"] for b in batches]
    paths = sorted((shared / "hpatches_real").glob("*/*.ppm"))
    if not paths:
        raise FileNotFoundError(f"{shared / 'hpatches_real'}: no HPatches image (*/N.ppm)")
    real = [torch.from_numpy(cv2.resize(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), quality.SIZE[::-1],
                                        interpolation=cv2.INTER_AREA)).float()[None, None] / 255 for p in paths]
    photos = [torch.cat(real[i:i + 6]) for i in range(0, len(real), 6)]
    return {"shapes": [b["image"] for b in batches], "shapes aug.": augmented, "photos": photos}


def bn_report(weights: list[Path], shared: Path) -> str:
    from models import load_pretrained

    sets = bn_images(shared)
    model_cfg = load_config(REPO / "configs/magicpoint_shapes_cpu.yaml")["model"]
    fits = {}
    for w in weights:
        model = load_pretrained(model_cfg, w)
        fits[w.name] = {name: bn_fit(model, batches) for name, batches in sets.items()}
        if len(next(iter(fits[w.name].values()))) != len(BN_LAYERS):
            raise ValueError(f"{w}: expected {len(BN_LAYERS)} batch-norm layers (a SuperPoint with batch norm)")
    names = list(sets)
    lines = ["### Which images the batch-norm statistics fit", "",
             f"- date: {datetime.date.today().isoformat()}; machine: {cpu_name()}, {torch.get_num_threads()} "
             f"threads, torch {torch.__version__}",
             f"- median over channels of |batch mean - running mean| / running std of each batch-norm layer's input; "
             f"shapes: 90 Synthetic Shapes test images at 120x160; shapes aug.: the same with the photometric "
             f"and homographic training augmentation of configs/magicpoint_shapes_cpu.yaml; photos: the "
             f"{sum(len(b) for b in sets['photos'])} images of hpatches_real at 240x320. Lower fits better.", "",
             "| layer | " + " | ".join(f"{w}: {n}" for w in fits for n in names) + " |",
             "|---|" + "---:|" * (len(fits) * len(names))]
    for i, layer in enumerate(BN_LAYERS):
        lines.append(f"| {layer} | " + " | ".join(f"{fits[w][n][i]:.2f}" for w in fits for n in names) + " |")
    return "\n".join(lines)


def plot(steps: list[int], results: list[dict], reference: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    series = [("mAP at 4 px (Synthetic Shapes test)", lambda r: r[4.0]["all"]["mAP"]),
              ("share of detections 2-6 px beside a corner", lambda r: r[4.0]["all"]["offset_shares"]["beside"])]
    for ax, (title, get) in zip(axes, series):
        ax.plot(steps, [get(r) for r in results], marker="o", label="ours, adapted to photos")
        ax.axhline(get(reference), color="tab:red", linestyle="--", label="converted reference MagicPoint")
        ax.set_xlabel("training step on photo labels (batch 8)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--magicpoint", type=Path, default=REPO / "pretrained" / "magicpoint_synth.pth",
                   help="the Synthetic Shapes MagicPoint: teacher of the labels and starting point")
    p.add_argument("--reference", type=Path, default=REPO / "pretrained" / "magicpoint_rpautrat.pth",
                   help="the model to compare with (the converted reference MagicPoint)")
    p.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--train-minutes", type=float, default=40.0, help="time budget of this invocation's training")
    p.add_argument("--name", default="bench_mp_photos")
    p.add_argument("--max-images", type=int, default=300, help="Synthetic Shapes test images scored")
    p.add_argument("--plot", type=Path, default=REPO / "docs" / "figures" / "magicpoint_domain_shift.png")
    p.add_argument("--bn-fit", type=Path, nargs="+", default=None, metavar="WEIGHTS",
                   help="only report which images these weights' batch-norm statistics fit")
    args = p.parse_args(argv)
    if args.max_images < 1:
        p.error(f"--max-images: expected a positive integer, got {args.max_images}")
    torch.manual_seed(0)
    if args.bn_fit:
        print(bn_report(args.bn_fit, args.shared))
        return 0

    photos = settings.data_path() / "superpoint_training_photos"
    n_photos = quality.build_training_photos(args.shared, photos)
    labels = quality.export_labels(args.magicpoint, photos, f"{args.name}_labels")
    t0 = time.perf_counter()
    step = adapt(args.magicpoint, photos, labels, args.name, args.train_minutes) if args.train_minutes > 0 else None
    t_train = time.perf_counter() - t0

    from training.checkpoints import list_checkpoints

    run = list_checkpoints(settings.exper_path() / args.name / "checkpoints")
    if not run:
        raise SystemExit(f"{settings.exper_path() / args.name / 'checkpoints'}: no checkpoint to score "
                         f"(train with --train-minutes > 0 first)")
    curve = [(0, args.magicpoint)] + run
    scores = synthetic_scores([(f"step {s}", w) for s, w in curve] + [("reference", args.reference)],
                              args.max_images)
    reference = scores.pop("reference")
    results = list(scores.values())

    real = []
    for label, weights in (("ours, step 0 (Synthetic Shapes only)", args.magicpoint),
                           (f"ours, step {curve[-1][0]} (adapted to photos)", curve[-1][1]),
                           ("converted reference", args.reference)):
        rep = [quality.export_and_score(weights, root, f"{args.name}_eval", orders=0)["repeatability"]
               for root in (str(args.shared / "hpatches_real"), "embedded")]
        real.append((label, rep))
        print(f"real pairs: scored {label}", file=sys.stderr, flush=True)

    plot([s for s, _ in curve], results, reference, args.plot)
    print("### MagicPoint adapted to real photographs, scored on Synthetic Shapes\n")
    print(f"- date: {datetime.date.today().isoformat()}; machine: {cpu_name()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    print(f"- training: {n_photos} photo crops, homography-adaptation labels by {args.magicpoint.name} (50 "
          f"homographies), configs/magicpoint_folder_train.yaml from {args.magicpoint.name}; run {args.name}"
          + (f", step {step} reached in this invocation's {t_train / 60:.1f} min" if step is not None else ""))
    print(f"- scored: the first {args.max_images} Synthetic Shapes test images (our protocol, threshold 0.015 "
          f"for P / R and the detection shares); plot {args.plot}\n")
    print("| model | mAP 2 px | mAP 4 px | P 4 px | R 4 px | detections per ground-truth point | "
          "on (<= 2 px) | beside (2-6 px) | away (> 6 px) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, res in [(f"ours, step {s}", r) for (s, _), r in zip(curve, results)] + \
                      [("converted reference", reference)]:
        a2, a4 = res[2.0]["all"], res[4.0]["all"]
        sh = a4["offset_shares"]
        print(f"| {label} | {a2['mAP']:.3f} | {a4['mAP']:.3f} | {a4['precision']:.3f} | {a4['recall']:.3f} | "
              f"{a4['detections_per_gt']:.2f} | {sh['on']:.2f} | {sh['beside']:.2f} | {sh['away']:.2f} |")
    print("\nRepeatability on real pairs (k = 1000, 240x320, our protocol):\n")
    print("| model | HPatches real (8) | embedded (50) |")
    print("|---|---:|---:|")
    for label, (r8, r50) in real:
        print(f"| {label} | {r8:.3f} | {r50:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
