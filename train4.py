"""Training entry point.

    python train4.py train_base  configs/magicpoint_shapes_pair.yaml magicpoint_synth --eval
    python train4.py train_joint configs/superpoint_coco_train_heatmap.yaml superpoint_coco --eval --debug

Checkpoints and the resolved config go to ``<EXPER_PATH>/<folder>/``, TensorBoard events to
``<RUNS_PATH>/<folder>/``. Re-running the same command resumes from the latest checkpoint.
"""
from __future__ import annotations

import argparse
import sys

from utils.cli import add_config_overrides, main_guard
from utils.config import load_config
from utils.registry import lookup

TASKS = {
    "train_base": "training.magicpoint:MagicPointTask",
    "train_joint": "training.superpoint:SuperPointTask",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train MagicPoint (train_base) or SuperPoint (train_joint).")
    p.add_argument("task", choices=sorted(TASKS), help="what to train")
    p.add_argument("config", help="YAML config file (merged over configs/defaults/)")
    p.add_argument("exper_name", help="experiment folder name under EXPER_PATH (logs/)")
    p.add_argument("--eval", action="store_true", help="validate every validation_interval iterations")
    p.add_argument("--debug", action="store_true", help="log scalars at every iteration")
    add_config_overrides(p)
    return p.parse_args(argv)


@main_guard
def main(argv=None) -> int:
    args = parse_args(argv)
    config = load_config(args.config, args.overrides)
    task = lookup(TASKS, args.task, "training task")(config)
    from training.distributed import launch

    launch(config, args.exper_name, task, do_eval=args.eval, debug=args.debug)
    return 0


if __name__ == "__main__":
    sys.exit(main())
