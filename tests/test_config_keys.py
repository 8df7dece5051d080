"""Every key of configs/defaults/*.yaml is read by some code; keys we do not implement are errors.

A key counts as read when its name occurs in the product code (every .py file outside tests/) in a
reading position, found through the syntax tree, so comments, docstrings and messages never count:

* ``cfg["key"]``, ``cfg.get("key", ...)``, ``cfg.pop("key")``, ``"key" in cfg``;
* a parameter name of a function (sections passed on as ``**kwargs``, e.g. primitive parameters);
* a name in a table of names (a dict's keys, a tuple / list of names: dispatch by name).

Only the key's last component is matched, so a key that shares its name with a read key elsewhere
(``model.nn_thresh`` vs ``evaluation.nn_thresh``) is not caught here: such keys are listed in
``utils.config.UNSUPPORTED_KEYS`` when they come from the reference configs.
"""
import ast
import re
from pathlib import Path

import pytest

from utils.config import UNSUPPORTED_KEYS, ConfigError, load_config, load_defaults

REPO = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".venv", "tests", ".git", "logs", "runs", "notebooks"}


def _text(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def read_names(source: str) -> set[str]:
    """Names that ``source`` reads as config keys (see the module docstring)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Subscript):
            names.add(_text(node.slice))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args \
                and node.func.attr in ("get", "pop", "setdefault"):
            names.add(_text(node.args[0]))
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            names.add(_text(node.left))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            names.update(a.arg for a in node.args.args + node.args.kwonlyargs)
        elif isinstance(node, ast.Dict):
            names.update(_text(k) for k in node.keys if k is not None)
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            names.update(_text(e) for e in node.elts)
    names.discard(None)
    return names


def product_read_names() -> set[str]:
    names: set[str] = set()
    for path in REPO.rglob("*.py"):
        if SKIP_DIRS.isdisjoint(path.relative_to(REPO).parts):
            names |= read_names(path.read_text(encoding="utf-8"))
    return names


def key_paths(tree: dict, prefix: str = ""):
    """Every dotted key of a defaults tree, sections included (a free-form ``{}`` is a leaf)."""
    for key, value in tree.items():
        yield f"{prefix}{key}", key
        if isinstance(value, dict) and value:
            yield from key_paths(value, f"{prefix}{key}.")


def unread_keys(tree: dict, names: set[str]) -> list[str]:
    return [full for full, key in key_paths(tree) if key not in names]


def test_the_scan_sees_reads_and_ignores_comments_docs_and_messages():
    source = '''"""zz_doc: a docstring"""
# zz_comment
def f(cfg, zz_kwarg=1):
    print(f"set zz_message please", "zz_call_argument")
    return cfg["zz_subscript"], cfg.get("zz_get", 0), "zz_in" in cfg, {"zz_table": 1}
'''
    names = read_names(source)
    assert {"zz_kwarg", "zz_subscript", "zz_get", "zz_in", "zz_table"} <= names
    assert not {"zz_doc", "zz_comment", "zz_message", "zz_call_argument"} & names
    tree = {"a": {"zz_get": 1, "zz_never_read": {"zz_subscript": 2}}, "zz_doc": 3}
    assert unread_keys(tree, names | {"a"}) == ["a.zz_never_read", "zz_doc"]


def test_every_default_key_is_read_by_the_code():
    unread = unread_keys(load_defaults(), product_read_names())
    assert unread == [], f"config keys that no code reads (remove them from configs/defaults): {unread}"


def test_unsupported_keys_are_absent_from_the_defaults():
    defaults = {full for full, _ in key_paths(load_defaults())}
    assert not defaults & set(UNSUPPORTED_KEYS)


@pytest.mark.parametrize("override", ["model.nn_thresh=1.0", "model.other_settings=x",
                                      "model.detector_loss.loss_type=softmax", "front_end_model=Val_model_heatmap",
                                      "data.add_augmentation_to_test_set=false"])
def test_a_reference_key_we_do_not_implement_is_a_clear_error(override):
    key = override.split("=")[0]
    parts = key.split(".")
    listed = next(".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in UNSUPPORTED_KEYS)
    expected = f"key '{listed}' of the reference configs is not implemented here: {UNSUPPORTED_KEYS[listed]}"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(None, [override])


def test_every_shipped_config_loads():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        load_config(path)
