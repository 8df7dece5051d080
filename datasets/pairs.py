"""From a collated batch to what the losses need: augmented images, label maps, valid masks and,
for joint training, a homography-warped copy of each image ("pairs").

Runs on the training device, batched. Keypoints come in as padded ``B x N x 2`` with a mask
(see ``datasets.collate``) and leave as label maps ``B x 1 x H x W``.
"""
from __future__ import annotations

import torch

from datasets.augmentation import Randomness, photometric_augmentation, random_warp
from utils.geometry import inside_image, sample_homography, warp_image, warp_points, warped_valid_mask
from utils.keypoints import gaussian_label_map, keypoints_to_map


def _enabled(section: dict, training: bool) -> bool:
    if not section["enable"]:
        return False
    return bool(section["enable_train"] if training else section["enable_val"])


def _labels(points, mask, size, data_cfg) -> dict:
    label_map = keypoints_to_map(points, size, mask)
    out = {"label_map": label_map}
    g = data_cfg["gaussian_label"]
    if g["enable"]:
        out["label_heat"] = gaussian_label_map(label_map, float(g["sigma"]))
    return out


def _warp_seg(seg: torch.Tensor, H: torch.Tensor, size, valid: torch.Tensor, ignore_index: int) -> torch.Tensor:
    warped = warp_image(seg.unsqueeze(1).float(), H, size, mode="nearest").squeeze(1).round().long()
    return torch.where(valid[:, 0] > 0.5, warped, torch.full_like(warped, ignore_index))


def prepare_batch(batch: dict, data_cfg: dict, training: bool, rng: Randomness,
                  device: torch.device, photometric: bool | None = None) -> dict:
    """Augment a collated batch and build labels (and the warped pair if configured).

    Args:
        batch: collated items (``image`` B x 1 x H x W, optional ``keypoints``/``keypoint_mask``,
            optional ``seg`` B x H x W).
        data_cfg: the ``data`` section of a merged config (every key present).
        training: use the ``enable_train`` switches (else ``enable_val``).
        photometric: force photometric augmentation on/off (None = from the config).
    Returns:
        ``image``, ``valid_mask``, ``label_map`` [, ``label_heat``] [, ``seg``] and, with
        ``warped_pair.enable``, the same keys prefixed ``warped_`` plus ``homography``
        (``B x 3 x 3``, image -> warped_image).
    """
    image = batch["image"].to(device, non_blocking=True).float()
    B, _, H, W = image.shape
    size = (H, W)
    pts = batch.get("keypoints")
    kmask = batch.get("keypoint_mask")
    if pts is None:
        pts = torch.zeros(B, 0, 2)
        kmask = torch.zeros(B, 0, dtype=torch.bool)
    pts, kmask = pts.to(device), kmask.to(device)
    seg = batch.get("seg")
    seg = seg.to(device) if seg is not None else None
    ignore_index = int(data_cfg["segmentation"]["ignore_index"])
    valid = torch.ones(B, 1, H, W, device=device)

    aug = data_cfg["augmentation"]
    hom = aug["homographic"]
    if _enabled(hom, training):
        image, pts, valid, Hs = random_warp(image, pts, valid, hom["params"],
                                            int(hom["valid_border_margin"]), rng)
        if seg is not None:
            seg = _warp_seg(seg, Hs, size, valid, ignore_index)

    # has_labels: whether the items carried keypoint labels at all (an empty map then means "no
    # keypoint here"; without labels it means nothing and the detector loss is skipped)
    out = {"image": image, "valid_mask": valid, "has_labels": "keypoints" in batch,
           **_labels(pts, kmask, size, data_cfg)}
    if seg is not None:
        out["seg"] = seg

    pair = data_cfg["warped_pair"]
    if pair["enable"]:
        Hp = rng.homographies(B, size, pair["params"]).to(device)
        warped = warp_image(image, Hp, size)
        wvalid = warped_valid_mask(Hp, size, size, border=int(pair["valid_border_margin"]))
        if not bool((valid > 0.5).all()):
            wvalid = wvalid * (warp_image(valid, Hp, size, mode="nearest") > 0.5).float()
        wpts = warp_points(pts.double(), Hp.double()).float() if pts.shape[1] else pts
        # A point that left the image (homographic augmentation) is not a label of the image, so
        # it is not one of the warped image either, even where the pair's warp brings it back.
        wmask = kmask & inside_image(pts, size) if pts.shape[1] else kmask
        out.update({"warped_image": warped, "warped_valid_mask": wvalid, "homography": Hp})
        out.update({f"warped_{k}": v for k, v in _labels(wpts, wmask, size, data_cfg).items()})
        if seg is not None:
            out["warped_seg"] = _warp_seg(seg, Hp, size, wvalid, ignore_index)

    photo = aug["photometric"]
    use_photo = _enabled(photo, training) if photometric is None else photometric
    if use_photo:
        out["image"] = photometric_augmentation(out["image"], photo, rng)
        if "warped_image" in out:
            out["warped_image"] = photometric_augmentation(out["warped_image"], photo, rng)
    return out


class PairedDataset(torch.utils.data.Dataset):
    """A single-image dataset turned into image pairs for descriptor exports.

    Item i gets ``warped_image`` (its image warped by a homography drawn from
    ``data.warped_pair.params`` with a seed fixed by (seed, i)), ``homography`` (3 x 3 float64,
    image -> warped_image) and, when the item has ``seg``, ``warped_seg`` (ignore label where the
    warped image shows nothing). Exports of the same config are therefore reproducible.
    """

    def __init__(self, dataset, data_cfg: dict, seed: int = 0):
        self.dataset = dataset
        self.pair_cfg = data_cfg["warped_pair"]
        self.ignore_index = int(data_cfg["segmentation"]["ignore_index"])
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.dataset[index])
        image = item["image"].float()
        size = tuple(image.shape[-2:])
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(index))
        H = sample_homography(1, size, self.pair_cfg["params"], generator=g)
        item["warped_image"] = warp_image(image[None], H, size)[0]
        item["homography"] = H[0].double()
        if "seg" in item:
            valid = warped_valid_mask(H, size, size)
            item["warped_seg"] = _warp_seg(item["seg"][None], H, size, valid, self.ignore_index)[0]
        return item
