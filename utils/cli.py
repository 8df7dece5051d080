"""What every command-line entry point shares: ``--set`` overrides, one-line errors, devices."""
from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable

import torch

from utils.config import ConfigError


class UserError(RuntimeError):
    """A problem with the user's input (paths, files, values), reported as one line."""


def add_config_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value with a dotted key, e.g. --set model.learning_rate=1e-4 "
                             "(repeatable; the value is parsed as YAML)")


def one_line(e: BaseException) -> str:
    """The message of ``e`` as one line. For an error re-raised from a DataLoader worker
    ("Caught X in DataLoader worker process N. Original Traceback ..."), the original error's
    last line, which names the file."""
    text = str(e).strip()
    if not text:
        return type(e).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if lines[0].startswith("Caught ") and "Original Traceback" in text:
        last = lines[-1]
        return last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].split(".")[-1][:1].isupper() else last
    return lines[0]


def main_guard(fn: Callable[..., int | None]) -> Callable[..., int]:
    """Run ``fn``; turn user-facing errors into ``error: <one line>`` on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs) -> int:
        try:
            return int(fn(*args, **kwargs) or 0)
        except (ConfigError, UserError, FileNotFoundError, NotADirectoryError, ValueError, OSError) as e:
            print(f"error: {one_line(e)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: unknown device {name!r} (expected auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} requested but CUDA is not available on this machine")
    return dev


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX)."""
    from utils.cpu import supports_bf16

    return supports_bf16()


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a ``precision`` setting on ``device`` (None = plain fp32).

    ``auto`` picks bf16 on CUDA devices that support it and on CPUs with native bf16, else fp32.
    """
    if precision in ("fp32", "float32"):
        return None
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("precision: bf16 is not supported by this GPU (use fp16 or fp32)")
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ConfigError("precision: fp16 is only supported on CUDA (use bf16 or fp32 on the CPU)")
        return torch.float16
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_supports_bf16() else None
    raise ConfigError(f"precision: unknown value {precision!r} (expected auto, fp32, bf16 or fp16)")
