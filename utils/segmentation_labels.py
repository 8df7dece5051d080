"""Segmentation label sets and the tables between them (the one place they are defined).

* **cs34**: the 34 Cityscapes ``labelId`` classes (0 unlabeled ... 33 bicycle), as stored in
  ``gtFine/*_gtFine_labelIds.png``. Names, colours and categories are the official ones.
* **cs4**: a 4-class grouping of cs34 for coarse scene layout: 0 flat ground, 1 static structure,
  2 sky, 3 dynamic objects (named flat, structure, sky, dynamic). The void classes (0-3) have no
  cs4 class and become the ignore label.
* **COCO panoptic -> cs34**: each of COCO's 133 panoptic categories (80 things, 53 stuff) is
  assigned a cs34 id by *name* (``COCO_TO_CS34``), so the table does not depend on the id
  numbering of a categories file. Names missing from the table map to 0 (unlabeled), like void.

``docs/SEGMENTATION.md`` explains the choices. The panoptic decoding used by the converter
(``utils/coco_panoptic_to_cs34.py``) and by the ``coco_panoptic`` dataset is here too, written once.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np


class CityscapesClass(NamedTuple):
    id: int
    name: str
    category: str        # Cityscapes category (used as the COCO-format "supercategory")
    isthing: bool        # Cityscapes "hasInstances"
    color: tuple[int, int, int]  # RGB


# The official Cityscapes labelIds 0..33 (license plate, id -1, is not part of the label images).
CS34_CLASSES: tuple[CityscapesClass, ...] = (
    CityscapesClass(0, "unlabeled", "void", False, (0, 0, 0)),
    CityscapesClass(1, "ego vehicle", "void", False, (0, 0, 0)),
    CityscapesClass(2, "rectification border", "void", False, (0, 0, 0)),
    CityscapesClass(3, "out of roi", "void", False, (0, 0, 0)),
    CityscapesClass(4, "static", "void", False, (0, 0, 0)),
    CityscapesClass(5, "dynamic", "void", False, (111, 74, 0)),
    CityscapesClass(6, "ground", "void", False, (81, 0, 81)),
    CityscapesClass(7, "road", "flat", False, (128, 64, 128)),
    CityscapesClass(8, "sidewalk", "flat", False, (244, 35, 232)),
    CityscapesClass(9, "parking", "flat", False, (250, 170, 160)),
    CityscapesClass(10, "rail track", "flat", False, (230, 150, 140)),
    CityscapesClass(11, "building", "construction", False, (70, 70, 70)),
    CityscapesClass(12, "wall", "construction", False, (102, 102, 156)),
    CityscapesClass(13, "fence", "construction", False, (190, 153, 153)),
    CityscapesClass(14, "guard rail", "construction", False, (180, 165, 180)),
    CityscapesClass(15, "bridge", "construction", False, (150, 100, 100)),
    CityscapesClass(16, "tunnel", "construction", False, (150, 120, 90)),
    CityscapesClass(17, "pole", "object", False, (153, 153, 153)),
    CityscapesClass(18, "polegroup", "object", False, (153, 153, 153)),
    CityscapesClass(19, "traffic light", "object", False, (250, 170, 30)),
    CityscapesClass(20, "traffic sign", "object", False, (220, 220, 0)),
    CityscapesClass(21, "vegetation", "nature", False, (107, 142, 35)),
    CityscapesClass(22, "terrain", "nature", False, (152, 251, 152)),
    CityscapesClass(23, "sky", "sky", False, (70, 130, 180)),
    CityscapesClass(24, "person", "human", True, (220, 20, 60)),
    CityscapesClass(25, "rider", "human", True, (255, 0, 0)),
    CityscapesClass(26, "car", "vehicle", True, (0, 0, 142)),
    CityscapesClass(27, "truck", "vehicle", True, (0, 0, 70)),
    CityscapesClass(28, "bus", "vehicle", True, (0, 60, 100)),
    CityscapesClass(29, "caravan", "vehicle", True, (0, 0, 90)),
    CityscapesClass(30, "trailer", "vehicle", True, (0, 0, 110)),
    CityscapesClass(31, "train", "vehicle", True, (0, 80, 100)),
    CityscapesClass(32, "motorcycle", "vehicle", True, (0, 0, 230)),
    CityscapesClass(33, "bicycle", "vehicle", True, (119, 11, 32)),
)
CS34 = {c.name: c.id for c in CS34_CLASSES}

# cs34 ids that carry no scene content: they become the ignore label when
# data.segmentation.ignore_void is true (cs34) and always in cs4. static / dynamic / ground are
# kept: the COCO table uses them for real content (benches, animals, floors).
CS34_VOID_IDS: tuple[int, ...] = (0, 1, 2, 3)

# the label of pixels left out of the loss and the metrics (data.segmentation.ignore_index's default)
IGNORE_INDEX = 255

# ---- cs4 -------------------------------------------------------------------------------------
CS4_CLASSES: tuple[CityscapesClass, ...] = (
    CityscapesClass(0, "flat", "flat", False, (128, 64, 128)),
    CityscapesClass(1, "structure", "construction", False, (70, 70, 70)),
    CityscapesClass(2, "sky", "sky", False, (70, 130, 180)),
    CityscapesClass(3, "dynamic", "dynamic", True, (220, 20, 60)),
)

# cs34 id -> cs4 id (void ids are absent: they map to the ignore label)
CS34_TO_CS4: dict[int, int] = {
    # 0 flat ground: everything one walks or drives on
    6: 0, 7: 0, 8: 0, 9: 0, 10: 0, 22: 0,
    # 1 static structure: built things, poles and signs, vegetation, background clutter
    4: 1, 11: 1, 12: 1, 13: 1, 14: 1, 15: 1, 16: 1, 17: 1, 18: 1, 19: 1, 20: 1, 21: 1,
    # 2 sky
    23: 2,
    # 3 dynamic objects: anything that may move (people, vehicles, movable objects, animals)
    5: 3, 24: 3, 25: 3, 26: 3, 27: 3, 28: 3, 29: 3, 30: 3, 31: 3, 32: 3, 33: 3,
}

LABEL_SETS = {"cs34": CS34_CLASSES, "cs4": CS4_CLASSES}

# ---- COCO panoptic (133 categories, by name) -> cs34 -----------------------------------------
_S, _D = CS34["static"], CS34["dynamic"]
COCO_TO_CS34: dict[str, int] = {
    # things: people and vehicles with a Cityscapes counterpart
    "person": CS34["person"], "bicycle": CS34["bicycle"], "car": CS34["car"],
    "motorcycle": CS34["motorcycle"], "bus": CS34["bus"], "train": CS34["train"],
    "truck": CS34["truck"],
    # things: other vehicles, animals and hand-movable objects -> dynamic
    "airplane": _D, "boat": _D,
    "bird": _D, "cat": _D, "dog": _D, "horse": _D, "sheep": _D, "cow": _D, "elephant": _D,
    "bear": _D, "zebra": _D, "giraffe": _D,
    "backpack": _D, "umbrella": _D, "handbag": _D, "tie": _D, "suitcase": _D,
    "frisbee": _D, "skis": _D, "snowboard": _D, "sports ball": _D, "kite": _D,
    "baseball bat": _D, "baseball glove": _D, "skateboard": _D, "surfboard": _D,
    "tennis racket": _D,
    "bottle": _D, "wine glass": _D, "cup": _D, "fork": _D, "knife": _D, "spoon": _D, "bowl": _D,
    "banana": _D, "apple": _D, "sandwich": _D, "orange": _D, "broccoli": _D, "carrot": _D,
    "hot dog": _D, "pizza": _D, "donut": _D, "cake": _D,
    "laptop": _D, "mouse": _D, "remote": _D, "keyboard": _D, "cell phone": _D,
    "book": _D, "vase": _D, "scissors": _D, "teddy bear": _D, "hair drier": _D,
    "toothbrush": _D, "toaster": _D,
    # things: street furniture
    "traffic light": CS34["traffic light"], "stop sign": CS34["traffic sign"],
    "fire hydrant": _S, "parking meter": _S, "bench": _S,
    # things: furniture and fixed appliances -> static clutter; plants -> vegetation
    "chair": _S, "couch": _S, "bed": _S, "dining table": _S, "toilet": _S, "tv": _S,
    "microwave": _S, "oven": _S, "sink": _S, "refrigerator": _S, "clock": _S,
    "potted plant": CS34["vegetation"],
    # stuff: construction
    "bridge": CS34["bridge"], "house": CS34["building"], "roof": CS34["building"],
    "tent": CS34["building"], "building-other-merged": CS34["building"],
    "ceiling-merged": CS34["building"], "door-stuff": CS34["building"],
    "window-blind": CS34["building"], "window-other": CS34["building"],
    "wall-brick": CS34["wall"], "wall-stone": CS34["wall"], "wall-tile": CS34["wall"],
    "wall-wood": CS34["wall"], "wall-other-merged": CS34["wall"],
    "fence-merged": CS34["fence"], "net": CS34["fence"],
    # stuff: flat
    "road": CS34["road"], "pavement-merged": CS34["sidewalk"], "platform": CS34["sidewalk"],
    "railroad": CS34["rail track"],
    "floor-wood": CS34["ground"], "floor-other-merged": CS34["ground"], "rug-merged": CS34["ground"],
    "stairs": CS34["ground"], "playingfield": CS34["ground"],
    "river": CS34["ground"], "sea": CS34["ground"], "water-other": CS34["ground"],
    # stuff: nature
    "tree-merged": CS34["vegetation"], "flower": CS34["vegetation"],
    "grass-merged": CS34["terrain"], "dirt-merged": CS34["terrain"], "sand": CS34["terrain"],
    "gravel": CS34["terrain"], "snow": CS34["terrain"],
    "mountain-merged": _S, "rock-merged": _S,  # distant, non-walkable background
    "sky-other-merged": CS34["sky"],
    # stuff: indoor objects and textiles -> static clutter; food -> dynamic
    "banner": _S, "blanket": _S, "curtain": _S, "pillow": _S, "towel": _S, "cardboard": _S,
    "paper-merged": _S, "counter": _S, "light": _S, "mirror-stuff": _S, "shelf": _S,
    "cabinet-merged": _S, "table-merged": _S,
    "fruit": _D, "food-other-merged": _D,
}


def num_classes(label_set: str) -> int:
    """Number of classes (network outputs) of a label set: cs34 -> 34, cs4 -> 4."""
    return len(classes(label_set))


def classes(label_set: str) -> tuple[CityscapesClass, ...]:
    if label_set not in LABEL_SETS:
        raise ValueError(f"data.segmentation.label_set: unknown label set {label_set!r} "
                         f"(expected {' or '.join(LABEL_SETS)})")
    return LABEL_SETS[label_set]


def dumps_categories(categories: list[dict]) -> str:
    """Categories as JSON text, one category per line."""
    return "[\n" + ",\n".join("  " + json.dumps(c) for c in categories) + "\n]\n"


def categories_json(label_set: str) -> list[dict]:
    """The classes of a label set in COCO categories format:
    ``[{id, name, color: [r, g, b], isthing: 0|1, supercategory}, ...]``."""
    return [{"id": c.id, "name": c.name, "color": list(c.color), "isthing": int(c.isthing),
             "supercategory": c.category} for c in classes(label_set)]


def cs34_lut(label_set: str = "cs34", ignore_index: int = IGNORE_INDEX, ignore_void: bool = True) -> np.ndarray:
    """Lookup table ``(256,) int64``: cs34 labelId (a uint8 pixel value) -> training label.

    ``cs34``: identity for ids 0..33, the void ids (0-3) -> ``ignore_index`` when ``ignore_void``.
    ``cs4``: ``CS34_TO_CS4``; void ids -> ``ignore_index`` always. Values 34..255 -> ``ignore_index``.
    """
    lut = np.full(256, ignore_index, dtype=np.int64)
    if label_set == "cs34":
        lut[:34] = np.arange(34)
        if ignore_void:
            lut[list(CS34_VOID_IDS)] = ignore_index
    elif label_set == "cs4":
        for src, dst in CS34_TO_CS4.items():
            lut[src] = dst
    else:
        classes(label_set)  # raises the error naming the key
    return lut


def coco_category_lut(categories: Iterable[dict]) -> np.ndarray:
    """COCO category id -> cs34 id, as an ``int64`` array indexed by category id.

    ``categories`` is a COCO categories list (``{"id", "name", ...}``); the cs34 id is looked up
    by name in :data:`COCO_TO_CS34`; names not in the table map to 0 (unlabeled).
    """
    categories = list(categories)
    size = max([int(c["id"]) for c in categories] + [0]) + 1
    lut = np.zeros(size, dtype=np.int64)
    for c in categories:
        lut[int(c["id"])] = COCO_TO_CS34.get(c["name"], 0)
    return lut


def decode_panoptic_ids(rgb: np.ndarray) -> np.ndarray:
    """Panoptic PNG pixels ``H x W x 3`` uint8 (R, G, B) -> segment ids ``H x W`` int64
    (``id = R + 256 G + 256^2 B``; 0 is void)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB panoptic image, got shape {rgb.shape}")
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def panoptic_to_cs34(rgb: np.ndarray, segments_info: list[dict], category_lut: np.ndarray) -> np.ndarray:
    """One panoptic annotation -> cs34 labelId mask ``H x W`` uint8.

    ``rgb``: the panoptic PNG as ``H x W x 3`` RGB; ``segments_info``: that image's segments
    (``{"id", "category_id", ...}``); ``category_lut``: from :func:`coco_category_lut`.
    Each segment's pixels get its category's cs34 id; void pixels, segment ids absent from
    ``segments_info`` and unknown categories get 0.
    """
    ids = decode_panoptic_ids(rgb)
    if not segments_info:
        return np.zeros(ids.shape, dtype=np.uint8)
    seg_ids = np.array([int(s["id"]) for s in segments_info], dtype=np.int64)
    cats = np.array([int(s["category_id"]) for s in segments_info], dtype=np.int64)
    known = (cats >= 0) & (cats < len(category_lut))
    seg_cs34 = np.where(known, category_lut[np.clip(cats, 0, len(category_lut) - 1)], 0)
    order = np.argsort(seg_ids)
    seg_ids, seg_cs34 = seg_ids[order], seg_cs34[order]
    pos = np.clip(np.searchsorted(seg_ids, ids), 0, len(seg_ids) - 1)
    hit = seg_ids[pos] == ids
    return np.where(hit, seg_cs34[pos], 0).astype(np.uint8)


def read_json(path, what: str = "JSON file"):
    """Parse a JSON file, with one-line errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def read_panoptic_annotations(path) -> tuple[dict[str, list[dict]], list[dict]]:
    """A COCO panoptic JSON -> (``{png file name: segments_info}``, ``categories``).

    ``categories`` is ``[]`` when the file has none (pass a categories file then).
    """
    data = read_json(path, "panoptic annotation file")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ValueError(f"{path}: expected a COCO panoptic JSON with an 'annotations' list")
    try:
        segments = {str(a["file_name"]): list(a.get("segments_info") or []) for a in data["annotations"]}
    except (KeyError, TypeError):
        raise ValueError(f"{path}: every annotation needs a 'file_name' and 'segments_info'") from None
    return segments, list(data.get("categories") or [])


def read_categories(path) -> list[dict]:
    """A categories file: a list of ``{id, name, ...}``, or a dict holding such a ``categories`` list."""
    data = read_json(path, "categories file")
    if isinstance(data, dict):
        data = data.get("categories")
    if not isinstance(data, list) or not all(isinstance(c, dict) and "id" in c and "name" in c for c in data):
        raise ValueError(f"{path}: expected a list of categories with 'id' and 'name' "
                         f"(or a dict with such a 'categories' list)")
    return data


def class_ids(label_set: str, names_or_ids, key: str = "model.segmentation_head.drop_keypoints_on") -> list[int]:
    """Class ids of ``label_set`` from a list of class names (case-insensitive) or ids.

    Raises ValueError naming ``key`` for an unknown name or an id out of range.
    """
    table = classes(label_set)
    by_name = {c.name.lower(): c.id for c in table}
    valid_ids = {c.id for c in table}
    out = []
    for v in names_or_ids or []:
        if isinstance(v, bool):
            raise ValueError(f"{key}: {v!r} is not a class name or id")
        if isinstance(v, int):
            if v not in valid_ids:
                raise ValueError(f"{key}: class id {v} is not in label set {label_set}")
            out.append(v)
        elif str(v).lower() in by_name:
            out.append(by_name[str(v).lower()])
        else:
            raise ValueError(f"{key}: unknown class {v!r} in label set {label_set} "
                             f"(known: {', '.join(c.name for c in table)})")
    return sorted(set(out))
