"""Test-only command line for the homography adaptation export, so that tests can launch it under
torchrun (export.py, the real command line, maps export_detector_homoAdapt to the same function).

    python tests/helpers/homoadapt_runner.py CONFIG EXPER_NAME [--outputImg] [--set KEY=VALUE ...]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from exporters.homography_adaptation import run  # noqa: E402
from utils.cli import add_config_overrides, main_guard  # noqa: E402
from utils.config import load_config  # noqa: E402


@main_guard
def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("exper_name")
    p.add_argument("--outputImg", action="store_true")
    add_config_overrides(p)
    args = p.parse_args(argv)
    return run(load_config(args.config, args.overrides), args.exper_name, args)


if __name__ == "__main__":
    sys.exit(main())
