"""Export tasks run by ``export.py`` / ``export_classical.py``.

Each task is a module with ``run(config, export_dir, args) -> int``; the command lines map task
names to ``"module:function"`` strings (imported only when asked for) and share :func:`main`.
"""
from __future__ import annotations

import argparse
import contextlib
import os

import settings
from utils.config import dump_config, load_config
from utils.registry import lookup


def export_parser(description: str, tasks: dict) -> argparse.ArgumentParser:
    """The arguments every export command takes: task, config, export folder, --set."""
    from utils.cli import add_config_overrides

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=list(tasks), help="what to export")
    parser.add_argument("config", help="YAML config (merged over configs/defaults)")
    parser.add_argument("exper_name", metavar="export_folder", help="output folder under EXPER_PATH (logs/)")
    add_config_overrides(parser)
    return parser


def main(parser: argparse.ArgumentParser, tasks: dict, argv: list[str] | None = None) -> int:
    """Parse, load the config, run the task in ``<EXPER_PATH>/<folder>/``, then copy the config to
    its ``config.yml`` (only after success: a failed re-export keeps the config of the files there).

    A single process (or torchrun's rank 0) holds the folder's lock throughout, and a single
    process first removes the temporary files a killed export left (other ranks may be writing)."""
    from utils.io import folder_lock, remove_stale_temp_files

    args = parser.parse_args(argv)
    config = load_config(args.config, args.overrides)
    run = lookup(tasks, args.task, "export task")
    export_dir = settings.exper_path() / args.exper_name
    export_dir.mkdir(parents=True, exist_ok=True)
    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    lock = folder_lock(export_dir, "export") if rank == "0" else contextlib.nullcontext()
    with lock:
        if world == "1":
            remove_stale_temp_files(export_dir, recursive=True)
        rc = run(config, export_dir, args)
        if rank == "0":
            dump_config(config, export_dir / "config.yml")
    return rc
