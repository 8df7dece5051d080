"""Datasets: files -> tensors. They know nothing of models or losses.

Every dataset class takes ``(config, split)`` -- the whole resolved config (merged over the
defaults: datasets read the keys they need without fallback values) and one of
``train`` / ``val`` / ``test`` -- and its items are dicts of CPU tensors:

* ``image``      ``1 x H x W`` float32 gray in [0, 1] (already resized to the config's size)
* ``keypoints``  ``N x 2`` float32 (x, y) labels, when the dataset has them
* ``seg``        ``H x W`` int64 class ids, when the dataset has segmentation labels
* ``name``       a string naming the item (used for export file names)

Batches are put together by :func:`datasets.collate.collate`; augmentation and image pairs are
made on the batch, on the training device (``datasets.augmentation``, ``datasets.pairs``).
"""
from __future__ import annotations

from utils.registry import lookup

# dataset name (and the reference implementation's spellings) -> "module:Class"
DATASETS = {
    "synthetic_shapes": "datasets.synthetic_shapes:SyntheticShapes",
    "coco": "datasets.coco:Coco",
    "kitti": "datasets.kitti:Kitti",
    "image_folder": "datasets.image_folder:ImageFolder",
    "hpatches": "datasets.hpatches:HPatches",
    "cityscapes": "datasets.cityscapes:Cityscapes",
    "coco_panoptic": "datasets.coco_panoptic:CocoPanoptic",
    "pose_pairs": "datasets.pose_pairs:PosePairs",
}
ALIASES = {
    "SyntheticDataset_gaussian": "synthetic_shapes",
    "SyntheticDataset": "synthetic_shapes",
    "Coco": "coco",
    "Kitti_inh": "kitti",
    "Kitti": "kitti",
    "patches_dataset": "hpatches",
    "Cityscapes": "cityscapes",
}


def canonical_name(name: str) -> str:
    """Our name of a dataset given as ours or as one of the reference implementation's spellings."""
    return ALIASES.get(name, name)


def dataset_class(name: str):
    """The dataset class registered as ``name`` (or one of its reference spellings)."""
    return lookup(DATASETS, canonical_name(name), "data.dataset")


def get_dataset(config: dict, split: str, pairs: bool = False):
    """The dataset named by ``config['data']['dataset']`` for ``split`` (train | val | test);
    ``config`` is a merged config (``utils.config.load_config``).

    ``pairs=True`` (descriptor exports): a single-image dataset with ``data.warped_pair.enable``
    gives items with a reproducible ``warped_image`` and ``homography`` (``datasets.pairs``). In
    training, pairs are made on the batch instead.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    cls = dataset_class(config["data"]["dataset"])
    dataset = cls(config, split)
    if pairs and config["data"]["warped_pair"]["enable"] and not getattr(cls, "provides_pairs", False):
        from datasets.pairs import PairedDataset

        dataset = PairedDataset(dataset, config["data"], seed=int(config["seed"]))
    return dataset
