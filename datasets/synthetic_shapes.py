"""Synthetic Shapes: generation on disk (parallel, resumable, deterministic) and the Dataset.

Layout of a generated set (``dataset_dir(config)``)::

    <data_path>/synthetic_shapes/<suffix>_<hash8>/
        generation.json                          the settings the set was drawn with
        <primitive>/images/<split>/<i>.png       uint8 gray, at the preprocessed resolution
        <primitive>/points/<split>/<i>.npy       float32 N x 2 (x, y) at that resolution
        <primitive>/<split>.complete.json        completion marker (hash, count)

``split`` is one of ``training`` / ``validation`` / ``test``. Each (primitive, split) is drawn
into ``<primitive>/.tmp-<split>/`` and renamed into place once complete; the marker is written
last. Anything without a valid marker (a run killed half-way) is deleted and drawn again.

Image ``i`` of (primitive, split) is drawn from its own random stream, seeded by
(random_seed, primitive, split, i), so the bytes do not depend on the number of worker
processes or on the order in which images are produced.

Run ``python -m datasets.synthetic_shapes [config.yaml] [--set KEY=VALUE ...]`` to generate a set
ahead of training.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import zlib
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

import settings
from datasets import shapes_primitives
from utils.geometry import resize_matrix, warp_points
from utils.io import atomic_write_text, read_image_gray

PRIMITIVES = list(shapes_primitives.PRIMITIVES)
SPLITS = ("training", "validation", "test")
SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}  # our split -> stored split
GENERATOR_VERSION = 1  # bump when a change to the drawing code changes the pixels
MARKER_SUFFIX = ".complete.json"
TMP_PREFIX = ".tmp-"


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------
def _size_pair(value, key: str, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        want = "null or " if allow_none else ""
        raise ValueError(f"{key}: expected {want}[H, W] with two positive integers, got {value!r}")
    return [int(value[0]), int(value[1])]


def generation_settings(config: Mapping) -> dict:
    """Everything that determines the generated pixels, validated, in a JSON-friendly dict
    (``config``: a merged config, every key present)."""
    data = config["data"]
    gen = data["generation"]
    pre = data["preprocessing"]
    sizes = dict(gen["split_sizes"])
    unknown = sorted(set(sizes) - set(SPLITS))
    if unknown:
        raise ValueError(f"data.generation.split_sizes: unknown split(s) {', '.join(unknown)} "
                         f"(expected {', '.join(SPLITS)})")
    split_sizes = {}
    for s in SPLITS:
        n = sizes[s]
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"data.generation.split_sizes.{s}: expected an integer >= 0, got {n!r}")
        split_sizes[s] = n
    seed = gen["random_seed"]
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"data.generation.random_seed: expected an integer >= 0, got {seed!r}")
    blur = pre["blur_size"]
    if not isinstance(blur, int) or isinstance(blur, bool) or blur < 0 or (blur > 1 and blur % 2 == 0):
        raise ValueError(f"data.preprocessing.blur_size: expected 0 (no blur) or an odd integer, got {blur!r}")
    return {
        "version": GENERATOR_VERSION,
        "primitives": PRIMITIVES,
        "image_size": _size_pair(gen["image_size"], "data.generation.image_size"),
        "random_seed": seed,
        "split_sizes": split_sizes,
        "params": shapes_primitives.resolve_params(gen["params"]),
        "blur_size": blur,
        "resize": _size_pair(pre["resize"], "data.preprocessing.resize", allow_none=True),
    }


def _full_hash(gen_settings: Mapping) -> str:
    return hashlib.sha1(json.dumps(gen_settings, sort_keys=True).encode("utf-8")).hexdigest()


def dataset_dir(config: Mapping) -> Path:
    """Folder of the generated set: ``<base>/<suffix>_<hash8>``.

    ``<base>`` is ``data.root`` if set, else ``settings.data_path() / "synthetic_shapes"``;
    ``hash8`` hashes everything that changes the pixels (see :func:`generation_settings`), so a
    change of any of them gives a new folder. ``data.generation.num_workers`` is not part of it.
    """
    data = config["data"]
    base = Path(data["root"]).expanduser() if data["root"] else settings.data_path() / "synthetic_shapes"
    suffix = data["suffix"] or "shapes"
    return base / f"{suffix}_{_full_hash(generation_settings(config))[:8]}"


def parse_primitives(value) -> list[str]:
    """``data.primitives`` ('all', a name or a list of names) -> list of names."""
    if value in (None, "all"):
        return list(PRIMITIVES)
    names = [value] if isinstance(value, str) else list(value)
    unknown = [n for n in names if n not in PRIMITIVES]
    if unknown or not names:
        raise ValueError(f"data.primitives: unknown primitive(s) {', '.join(map(str, unknown)) or '(empty list)'} "
                         f"(expected 'all' or a list of: {', '.join(PRIMITIVES)})")
    return list(dict.fromkeys(names))


def parse_truncate(value) -> dict[str, float]:
    """``data.truncate`` (primitive -> fraction in [0, 1] of its images kept)."""
    value = dict(value or {})
    unknown = sorted(k for k in value if k not in PRIMITIVES)
    if unknown:
        raise ValueError(f"data.truncate: unknown primitive(s) {', '.join(map(str, unknown))} "
                         f"(expected names among: {', '.join(PRIMITIVES)})")
    out = {}
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise ValueError(f"data.truncate.{k}: expected a fraction in [0, 1], got {v!r}")
        out[k] = float(v)
    return out


# --------------------------------------------------------------------------------------------
# drawing one image
# --------------------------------------------------------------------------------------------
def sample_seed(random_seed: int, primitive: str, split: str, index: int) -> np.random.SeedSequence:
    """The random stream of image ``index`` of (primitive, split)."""
    return np.random.SeedSequence([int(random_seed), zlib.crc32(primitive.encode("utf-8")),
                                   SPLITS.index(split), int(index)])


def preprocess(image: np.ndarray, points: np.ndarray, blur_size: int, resize):
    """Gaussian blur then resize (bilinear), with the keypoints mapped exactly.

    Args:
        image: uint8 ``H x W``; points: ``N x 2`` (x, y) in its pixels.
        blur_size: odd kernel size of the Gaussian blur (sigma from the size), 0 or 1 = none.
        resize: (H', W') or None.
    Returns:
        (uint8 ``H' x W'`` image, float32 ``M x 2`` points): points mapped by the pixel-centre
        resize ``x' = (x + 0.5) * W'/W - 0.5`` and kept when they round to a pixel of the image.
    """
    if blur_size and blur_size > 1:
        image = cv2.GaussianBlur(image, (blur_size, blur_size), 0)
    points = np.asarray(points, np.float64).reshape(-1, 2)
    if resize is not None and tuple(resize) != image.shape[:2]:
        size_from = image.shape[:2]
        image = cv2.resize(image, (int(resize[1]), int(resize[0])), interpolation=cv2.INTER_LINEAR)
        if len(points):
            points = warp_points(points, resize_matrix(size_from, resize).numpy())
    h, w = image.shape[:2]
    keep = ((points[:, 0] >= -0.5) & (points[:, 0] < w - 0.5) & (points[:, 1] >= -0.5) & (points[:, 1] < h - 0.5))
    return image, points[keep].astype(np.float32)


def generate_sample(primitive: str, split: str, index: int, gen_settings: Mapping):
    """Draw image ``index`` of (primitive, split): background, primitive, blur, resize.

    Returns (uint8 image at the stored resolution, float32 N x 2 points).
    """
    rng = np.random.default_rng(sample_seed(gen_settings["random_seed"], primitive, split, index))
    params = gen_settings["params"]
    image = shapes_primitives.generate_background(gen_settings["image_size"], rng, **params["generate_background"])
    image, points = shapes_primitives.draw(primitive, image, rng, params.get(primitive))
    return preprocess(image, points, gen_settings["blur_size"], gen_settings["resize"])


# --------------------------------------------------------------------------------------------
# generation on disk
# --------------------------------------------------------------------------------------------
def _unit_paths(root: Path, primitive: str, split: str) -> dict[str, Path]:
    return {
        "images": root / primitive / "images" / split,
        "points": root / primitive / "points" / split,
        "marker": root / primitive / f"{split}{MARKER_SUFFIX}",
        "tmp": root / primitive / f"{TMP_PREFIX}{split}",
    }


def _count_files(folder: Path, suffix: str) -> int:
    try:
        with os.scandir(folder) as it:
            return sum(1 for e in it if e.name.endswith(suffix))
    except FileNotFoundError:
        return -1


def unit_is_complete(root: Path, primitive: str, split: str, full_hash: str, count: int) -> bool:
    """True if (primitive, split) has a valid marker and all its files."""
    p = _unit_paths(root, primitive, split)
    try:
        marker = json.loads(p["marker"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or marker.get("hash") != full_hash or marker.get("count") != count:
        return False
    return _count_files(p["images"], ".png") == count and _count_files(p["points"], ".npy") == count


def _remove_unit(root: Path, primitive: str, split: str) -> None:
    p = _unit_paths(root, primitive, split)
    p["marker"].unlink(missing_ok=True)  # the marker goes first: what remains is never trusted
    for key in ("images", "points", "tmp"):
        if p[key].exists():
            shutil.rmtree(p[key])


def _finish_unit(root: Path, primitive: str, split: str, full_hash: str, count: int) -> None:
    p = _unit_paths(root, primitive, split)
    for key in ("images", "points"):
        src = p["tmp"] / key
        src.mkdir(parents=True, exist_ok=True)  # empty splits
        p[key].parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, p[key])
    shutil.rmtree(p["tmp"])
    atomic_write_text(p["marker"], json.dumps({"hash": full_hash, "primitive": primitive, "split": split,
                                               "count": count, "version": GENERATOR_VERSION}, indent=1))


@contextlib.contextmanager
def _exclusive_lock(root: Path) -> Iterator[None]:
    """Serialise generation between processes (e.g. distributed ranks) sharing ``root``."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(root / ".lock", "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process generating {root} ...", file=sys.stderr, flush=True)
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


_WORKER_STATE: dict = {}


def _init_worker(gen_settings: Mapping, root: str) -> None:
    cv2.setNumThreads(1)  # one process per core already
    _WORKER_STATE.update(settings=gen_settings, root=Path(root))


def _write_sample(task: tuple[str, str, int]) -> tuple[str, str]:
    """Draw one image and write it into its unit's temporary folder."""
    primitive, split, index = task
    image, points = generate_sample(primitive, split, index, _WORKER_STATE["settings"])
    tmp = _unit_paths(_WORKER_STATE["root"], primitive, split)["tmp"]
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise IOError(f"{tmp}: OpenCV could not encode image {index}")
    (tmp / "images" / f"{index}.png").write_bytes(png.tobytes())
    np.save(tmp / "points" / f"{index}.npy", points)
    return primitive, split


def _num_workers(value) -> int:
    n = int(value or 0)
    if n < 0:
        raise ValueError(f"data.generation.num_workers: expected an integer >= 0, got {value!r}")
    return n or (os.cpu_count() or 1)


def _mp_context():
    # fork starts workers instantly; they only run numpy / OpenCV code
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def ensure_generated(config: Mapping, primitives: Iterable[str] | None = None, progress: bool = True) -> Path:
    """Generate what is missing of the set described by ``config``; return its folder.

    Args:
        config: the resolved config (``data.generation``, ``data.preprocessing``, ...).
        primitives: names to make sure of; None = ``data.primitives``.
        progress: show a tqdm bar (images done / total).
    """
    gen_settings = generation_settings(config)
    full_hash = _full_hash(gen_settings)
    names = parse_primitives(config["data"]["primitives"] if primitives is None else list(primitives))
    workers = _num_workers(config["data"]["generation"]["num_workers"])
    root = dataset_dir(config)
    root.mkdir(parents=True, exist_ok=True)

    with _exclusive_lock(root):
        info = root / "generation.json"
        if not info.is_file():
            atomic_write_text(info, json.dumps({"hash": full_hash, **gen_settings}, indent=1))
        todo = []  # (primitive, split, count)
        for primitive in names:
            for split in SPLITS:
                count = gen_settings["split_sizes"][split]
                if not unit_is_complete(root, primitive, split, full_hash, count):
                    _remove_unit(root, primitive, split)
                    todo.append((primitive, split, count))
        for primitive in names:  # any other leftover of a killed run
            for tmp in (root / primitive).glob(f"{TMP_PREFIX}*"):
                shutil.rmtree(tmp)
        if not todo:
            return root

        remaining = {}
        tasks = []
        for primitive, split, count in todo:
            tmp = _unit_paths(root, primitive, split)["tmp"]
            (tmp / "images").mkdir(parents=True)
            (tmp / "points").mkdir(parents=True)
            if count == 0:
                _finish_unit(root, primitive, split, full_hash, 0)
                continue
            remaining[(primitive, split)] = count
            tasks += [(primitive, split, i) for i in range(count)]

        bar = tqdm(total=len(tasks), desc=f"Synthetic Shapes -> {root.name}", unit="img",
                   disable=not progress or not tasks, dynamic_ncols=True)
        cv_threads = cv2.getNumThreads()
        try:
            if workers == 1 or len(tasks) <= 1:
                _init_worker(gen_settings, str(root))
                done_iter: Iterable = map(_write_sample, tasks)
                pool = None
            else:
                pool = _mp_context().Pool(min(workers, len(tasks)), initializer=_init_worker,
                                          initargs=(gen_settings, str(root)))
                done_iter = pool.imap_unordered(_write_sample, tasks, chunksize=4)
            try:
                for primitive, split in done_iter:
                    bar.update(1)
                    remaining[(primitive, split)] -= 1
                    if remaining[(primitive, split)] == 0:
                        _finish_unit(root, primitive, split, full_hash, gen_settings["split_sizes"][split])
                if pool is not None:
                    pool.close()
            finally:
                if pool is not None:
                    pool.terminate()  # no-op after close() once the work is done; stops it on errors
                    pool.join()
        finally:
            bar.close()
            _WORKER_STATE.clear()
            cv2.setNumThreads(cv_threads)  # the in-process path set it to 1
    return root


# --------------------------------------------------------------------------------------------
# the dataset
# --------------------------------------------------------------------------------------------
class SyntheticShapes(Dataset):
    """Synthetic Shapes images with their corner / junction labels.

    Args:
        config: the whole resolved config; reads ``data.primitives``, ``data.truncate``,
            ``data.cache_in_memory``, ``data.generation.*``, ``data.preprocessing.*``.
        split: ``train`` | ``val`` | ``test`` (stored as training / validation / test).

    Items: ``{"image": 1 x H x W float32 in [0, 1], "keypoints": N x 2 float32 (x, y),
    "name": "<primitive>/<stored split>/<i>"}``. The item order is a fixed shuffle (seed 0) of
    all kept images, so any prefix mixes the primitives. No augmentation here.
    """

    def __init__(self, config: Mapping, split: str):
        if split not in SPLIT_NAMES:
            raise ValueError(f"split must be train, val or test, got {split!r}")
        data = config["data"]
        self.primitives = parse_primitives(data["primitives"])
        truncate = parse_truncate(data["truncate"])
        self.split = SPLIT_NAMES[split]
        self.root = ensure_generated(config, self.primitives)
        count = generation_settings(config)["split_sizes"][self.split]
        items = [(p, i) for p in self.primitives for i in range(int(truncate.get(p, 1.0) * count))]
        order = np.random.default_rng(0).permutation(len(items))
        self.items = [items[k] for k in order]
        self._images: list[np.ndarray] | None = None
        self._points: list[np.ndarray] | None = None
        if data["cache_in_memory"]:
            self._images, self._points = [], []
            for p, i in tqdm(self.items, desc=f"caching Synthetic Shapes {self.split}", unit="img"):
                img, pts = self._load(p, i)
                self._images.append(np.round(img * 255).astype(np.uint8))
                self._points.append(pts)

    def __len__(self) -> int:
        return len(self.items)

    def _paths(self, primitive: str, index: int) -> tuple[Path, Path]:
        base = self.root / primitive
        return base / "images" / self.split / f"{index}.png", base / "points" / self.split / f"{index}.npy"

    def _load(self, primitive: str, index: int) -> tuple[np.ndarray, np.ndarray]:
        img_path, pts_path = self._paths(primitive, index)
        return read_image_gray(img_path), np.load(pts_path).astype(np.float32).reshape(-1, 2)

    def __getitem__(self, idx: int) -> dict:
        primitive, index = self.items[idx]
        if self._images is not None:
            image = self._images[idx].astype(np.float32) / 255.0
            points = self._points[idx]
        else:
            image, points = self._load(primitive, index)
        return {"image": torch.from_numpy(image)[None],
                "keypoints": torch.from_numpy(points),
                "name": f"{primitive}/{self.split}/{index}"}


# --------------------------------------------------------------------------------------------
# command line: generate ahead of training
# --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    import argparse

    from utils.cli import add_config_overrides, main_guard
    from utils.config import load_config

    parser = argparse.ArgumentParser(description="Generate the Synthetic Shapes set of a config.")
    parser.add_argument("config", nargs="?", default=None, help="YAML config (default: the defaults)")
    add_config_overrides(parser)
    args = parser.parse_args(argv)

    @main_guard
    def run() -> None:
        config = load_config(args.config, args.overrides)
        print(ensure_generated(config))

    return run()


if __name__ == "__main__":
    sys.exit(main())
