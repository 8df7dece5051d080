"""Strict YAML configuration: a user file merged over documented defaults.

The defaults are the YAML fragments in ``configs/defaults/`` (each key documented there). They
are deep-merged into one tree; a user config and ``--set`` overrides are then merged over it
with these rules:

* a key that does not exist in the defaults is an error naming the key and the file;
* a value whose type differs from the default's is an error (an int is accepted for a float;
  ``null`` is accepted only where the default is ``null``, which means "any value");
* a default that is an empty mapping (``{}``) is free-form: any keys are accepted below it;
* lists are replaced, never merged;
* a float key also accepts a number written the YAML 1.1 way (``1e-4``, ``--set x=1e6``), which
  YAML reads as a string;
* a number (or each number of a list) must lie in the range declared for its key under
  ``_ranges:`` in the fragment that defines it (``key: [min, max]``, inclusive, ``null`` = open;
  the key may hold ``*`` wildcards, e.g. ``data.*.valid_border_margin``).

Errors are :class:`ConfigError` with a one-line message; the CLIs print it and exit 2.
"""
from __future__ import annotations

import copy
import fnmatch
import math
import re
from pathlib import Path
from typing import Any, Iterable

import yaml

DEFAULTS_DIR = Path(__file__).resolve().parent.parent / "configs" / "defaults"

# Keys of the reference implementation's configs that this project does not implement: setting one
# is an error that says so (and what to use instead), rather than a key accepted and ignored.
UNSUPPORTED_KEYS = {
    "front_end_model": "the command's task (train_base, train_joint, export_*) chooses the code path",
    "retrain": "a run resumes from its latest checkpoint; start from weights with pretrained and reset_iter",
    "model.detector_loss": "the detector loss is always the 65-way cell cross entropy (softmax)",
    "model.nn_thresh": "descriptor matching thresholds are evaluation.nn_thresh (evaluation.py)",
    "model.other_settings": "free-text notes are not kept; write them as a YAML comment",
    "model.kernel_reg": "there is no kernel regulariser; use model.weight_decay",
    "model.homography_adaptation": "homographic adaptation is configured under data.homography_adaptation",
    "model.rand_noise": "no noise is added to the images at evaluation",
    "data.add_augmentation_to_test_set": "augmentation outside training is data.augmentation.*.enable_val",
    "data.gaussian_label.params": "the Gaussian label width is data.gaussian_label.sigma",
}

# Keys of the reference implementation's configs that this project spells differently.
RENAMED_KEYS = {
    "model.pretrained": "pretrained (top level)",
    "data.name": "data.dataset",
}


RANGES_KEY = "_ranges"  # the section of a defaults fragment that declares value ranges

# A number as YAML 1.1 (PyYAML) leaves it a string: no dot before an exponent, e.g. 1e-4, 5E+3.
_FLOAT_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class ConfigError(ValueError):
    """A configuration problem, described in one line."""


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def _coerce(default: Any, value: Any, key: str, source: str) -> Any:
    """Return ``value`` checked (and, for int -> float, converted) against ``default``'s type."""
    if default is None:
        return copy.deepcopy(value)
    want, got = _type_name(default), _type_name(value)
    if want == "float" and got == "int":
        return float(value)
    if want == "float" and got == "str" and _FLOAT_TEXT.match(value.strip()):
        return float(value)
    if want == "list" and got == "list":
        value = list(value)
        if default:  # check element types against the default's first element
            elem = default[0]
            out = []
            for i, v in enumerate(value):
                out.append(_coerce(elem, v, f"{key}[{i}]", source) if not isinstance(elem, (dict, list)) else v)
            return out
        return copy.deepcopy(value)
    if want != got:
        raise ConfigError(f"{source}: key '{key}' must be {want} (default {default!r}), got {got} {value!r}")
    return copy.deepcopy(value)


def merge_strict(base: dict, update: dict, source: str, prefix: str = "", schema: dict | None = None) -> dict:
    """Merge ``update`` over ``base`` (both nested dicts), returning a new dict.

    Keys and types are checked against ``schema`` (the defaults tree; by default ``base``
    itself): any key of ``update`` absent from it is an error.
    """
    schema = base if schema is None else schema
    if not isinstance(update, dict):
        where = f"'{prefix[:-1]}'" if prefix else "the top level"
        raise ConfigError(f"{source}: {where} must be a mapping, got {_type_name(update)} {update!r}")
    out = copy.deepcopy(base)
    for key, value in update.items():
        full = f"{prefix}{key}"
        if not isinstance(key, str):
            raise ConfigError(f"{source}: key {key!r} under '{prefix[:-1] or 'top level'}' must be a string")
        if key not in schema and full in UNSUPPORTED_KEYS:
            raise ConfigError(f"{source}: key '{full}' of the reference configs is not implemented here: "
                              f"{UNSUPPORTED_KEYS[full]}; remove it")
        if key not in schema:
            hint = f"; use '{RENAMED_KEYS[full]}' instead" if full in RENAMED_KEYS else ""
            known = ", ".join(sorted(schema)) or "none"
            raise ConfigError(f"{source}: unknown key '{full}'{hint} (known keys here: {known})")
        default = schema[key]
        if isinstance(default, dict):
            if value is None:  # an empty section in YAML ("augmentation:") keeps the defaults
                continue
            if not default:  # free-form mapping
                if not isinstance(value, dict):
                    raise ConfigError(f"{source}: key '{full}' must be a mapping, got {_type_name(value)} {value!r}")
                out[key] = copy.deepcopy(value)
            else:
                out[key] = merge_strict(base.get(key, default), value, source, f"{full}.", schema=default)
        else:
            out[key] = _coerce(default, value, full, source)
    return out


def _deep_union(a: dict, b: dict, source: str, prefix: str = "") -> dict:
    """Union of two defaults fragments; a leaf defined in both is an error."""
    out = dict(a)
    for key, value in b.items():
        full = f"{prefix}{key}"
        if key in out:
            if isinstance(out[key], dict) and isinstance(value, dict) and out[key] and value:
                out[key] = _deep_union(out[key], value, source, f"{full}.")
                continue
            raise ConfigError(f"{source}: default '{full}' is defined in two fragments of {DEFAULTS_DIR}")
        out[key] = value
    return out


def read_yaml(path: str | Path) -> dict:
    """Read one YAML file as a mapping, with a one-line error on failure."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {_type_name(data)}")
    return data


def _fragments(defaults_dir: str | Path) -> list[tuple[Path, dict]]:
    files = sorted(Path(defaults_dir).glob("*.yaml"))
    if not files:
        raise ConfigError(f"{defaults_dir}: no default config fragments found")
    return [(f, read_yaml(f)) for f in files]


def load_defaults(defaults_dir: str | Path = DEFAULTS_DIR) -> dict:
    """All fragments of the defaults directory, deep-merged (without their ``_ranges``)."""
    tree: dict = {}
    for f, data in _fragments(defaults_dir):
        data = {k: v for k, v in data.items() if k != RANGES_KEY}
        tree = _deep_union(tree, data, str(f))
    return tree


def load_ranges(defaults_dir: str | Path = DEFAULTS_DIR) -> dict[str, tuple]:
    """``dotted key pattern -> (min, max)`` from the ``_ranges`` sections of the fragments."""
    ranges: dict[str, tuple] = {}
    for f, data in _fragments(defaults_dir):
        for key, bounds in (data.get(RANGES_KEY) or {}).items():
            ok = (isinstance(bounds, list) and len(bounds) == 2
                  and all(b is None or (isinstance(b, (int, float)) and not isinstance(b, bool)) for b in bounds))
            if not ok:
                raise ConfigError(f"{f}: {RANGES_KEY}.{key} must be [min, max] (numbers or null), got {bounds!r}")
            if key in ranges:
                raise ConfigError(f"{f}: range of '{key}' is declared in two fragments of {defaults_dir}")
            ranges[key] = tuple(bounds)
    return ranges


def _numeric_leaves(tree: dict, prefix: str = ""):
    """``(dotted key, value)`` of every number or list of numbers in ``tree``."""
    for key, value in tree.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _numeric_leaves(value, f"{full}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield full, value
        elif isinstance(value, list) and value and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            yield full, value


def check_ranges(config: dict, ranges: dict[str, tuple], source: str = "config") -> None:
    """Raise :class:`ConfigError` naming the first key whose number lies outside its range."""
    for key, value in _numeric_leaves(config):
        for pattern, (lo, hi) in ranges.items():
            if not fnmatch.fnmatchcase(key, pattern):
                continue
            for v in (value if isinstance(value, list) else [value]):
                bad = (isinstance(v, float) and math.isnan(v)) or (lo is not None and v < lo) \
                    or (hi is not None and v > hi)
                if bad:
                    want = (f">= {lo}" if hi is None else f"<= {hi}" if lo is None else f"in [{lo}, {hi}]")
                    raise ConfigError(f"{source}: key '{key}' must be {want}, got {value!r}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b.c=value"`` -> (["a", "b", "c"], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected KEY=VALUE with a dotted key, e.g. --set model.learning_rate=0.001")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _nest(keys: list[str], value: Any) -> dict:
    out: Any = value
    for k in reversed(keys):
        out = {k: out}
    return out


def load_config(path: str | Path | None, overrides: Iterable[str] = (), defaults: dict | None = None) -> dict:
    """Defaults, then the YAML file at ``path`` (if any), then each ``KEY=VALUE`` override.

    Every number is then checked against the ranges of the default fragments (``_ranges``); an
    error names the source (the file, or the ``--set`` that last set the key) and the key.
    """
    schema = copy.deepcopy(defaults) if defaults is not None else load_defaults()
    ranges = load_ranges()
    config = schema
    sources = []
    if path is not None:
        data = read_yaml(path)
        config = merge_strict(config, data, str(path), schema=schema)
        sources.append((str(path), data))
    for text in overrides:
        keys, value = parse_override(text)
        update = _nest(keys, value)
        config = merge_strict(config, update, f"--set {text}", schema=schema)
        sources.append((f"--set {text}", update))
    try:
        check_ranges(config, ranges)
    except ConfigError as e:  # name where the bad value came from: the last source that set the key
        key = str(e).split("'")[1]
        where = "the defaults"
        for source, tree in sources:
            if _get_dotted(tree, key, _MISSING) is not _MISSING:
                where = source
        raise ConfigError(str(e).replace("config:", f"{where}:", 1)) from None
    return config


_MISSING = object()


def _get_dotted(config: dict, dotted: str, default: Any = None) -> Any:
    """Read ``config['a']['b']`` as ``_get_dotted(config, 'a.b')``."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def dump_config(config: dict, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from utils.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False, default_flow_style=None))
