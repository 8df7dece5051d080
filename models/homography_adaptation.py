"""Homographic adaptation (SuperPoint paper, section 5): a detector's heatmap averaged over
random homographic views of the image.

For each image, ``num`` homographies ``H_k`` (image A -> warped view B_k; the first is the
identity) are sampled with :func:`utils.geometry.sample_homography`. The detector runs on every
view (``batch_size`` views per forward), each view's heatmap is masked to the pixels that see the
image, warped back into A, and the views are aggregated per pixel:

* ``sum``: the mean over the views that see the pixel (sum of heatmaps / count of valid views);
* ``max``: the maximum over the views.

``filter_counts`` zeroes pixels seen by fewer views. Both validity masks (pixels of B_k that see
A, pixels of A seen by B_k) are eroded by ``valid_border_margin`` pixels to drop the interpolation
artefacts at the warped borders -- except for the identity view, which has none. With ``num: 1``
the result is therefore exactly the detector's own heatmap.

Everything is batched and runs on the image's device. Keypoints are then extracted from the
aggregated heatmap with :func:`utils.keypoints.extract_keypoints` as usual.
"""
from __future__ import annotations

import copy
import warnings
from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from models.inference import fold_batchnorm
from utils.geometry import sample_homography
from utils.keypoints import CELL, semi_to_heatmap

AGGREGATIONS = ("sum", "max")


def adaptation_settings(config: Mapping) -> dict:
    """The ``data.homography_adaptation`` section from either that section or a whole config,
    both merged over the defaults (every key present; configs/defaults/data.yaml)."""
    if "data" in config and isinstance(config["data"], Mapping):
        config = config["data"]["homography_adaptation"]
    cfg = dict(config)
    num = int(cfg["num"])
    if num < 1:
        raise ValueError(f"data.homography_adaptation.num must be >= 1, got {num}")
    agg = cfg["aggregation"]
    if agg not in AGGREGATIONS:
        raise ValueError(f"data.homography_adaptation.aggregation must be one of {AGGREGATIONS}, got {agg!r}")
    batch = int(cfg["batch_size"])
    if batch < 1:
        raise ValueError(f"data.homography_adaptation.batch_size must be >= 1, got {batch}")
    return {
        "num": num,
        "aggregation": agg,
        "filter_counts": int(cfg["filter_counts"]),
        "batch_size": batch,
        "params": dict(cfg["homographies"]["params"]),
        "valid_border_margin": int(cfg["valid_border_margin"]),
    }


def sample_adaptation_homographies(batch: int, num: int, size, params: Mapping | None = None,
                                   generator: torch.Generator | list | None = None) -> torch.Tensor:
    """``B x num x 3 x 3`` float32 CPU homographies (image -> view), the first of each row the identity.

    ``generator`` is one CPU generator for the whole batch, or a list of ``B`` generators (one per
    image: an image then gets the same homographies whatever batch it is processed in).
    """
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for a batch of {batch} images")
        H = torch.stack([sample_homography(num, size, params, g) for g in generator])
    else:
        H = sample_homography(batch * num, size, params, generator).view(batch, num, 3, 3)
    H[:, 0] = torch.eye(3)
    return H


# Pixels sampled within this distance (px) outside the outermost pixel centres still count as
# inside (round-off on exact borders; the same tolerance as utils.geometry.warped_valid_mask).
_INSIDE_TOL = 1e-6


def _erode_bool(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """``utils.geometry.erode`` for a bool ``K x H x W`` mask (outside the image counts as valid),
    as a separable AND over shifted slices: much cheaper than a (2r+1)^2 max-pool on every view."""
    for dim in (-1, -2):
        src, n = mask, mask.shape[dim]
        mask = src.clone()
        for d in range(1, min(radius, n) + 1):
            mask.narrow(dim, 0, n - d).logical_and_(src.narrow(dim, d, n - d))
            mask.narrow(dim, d, n - d).logical_and_(src.narrow(dim, 0, n - d))
    return mask


def _pull(H_b_to_a: torch.Tensor, size, margin: int):
    """Where every pixel of B samples A, for ``K`` homographies at once.

    ``H_b_to_a``: ``K x 3 x 3`` (A and B have ``size``). Returns the float32 ``grid_sample`` grid
    ``K x H x W x 2`` and the float ``K x 1 x H x W`` mask of B's pixels that see A, eroded by
    ``margin``: the sampling of ``utils.geometry.warp_image`` and exactly the mask of
    ``utils.geometry.warped_valid_mask``, from one float64 projection of the pixel grid. (This
    runs for every view, so the projection uses the grid's separability: ``h00 x + h01 y + h02``
    is a ``K x 1 x W`` row plus a ``K x H x 1`` column.)
    """
    h, w = size
    Hd = H_b_to_a.double()
    xs = torch.arange(w, device=Hd.device, dtype=torch.float64).view(1, 1, w)
    ys = torch.arange(h, device=Hd.device, dtype=torch.float64).view(1, h, 1)

    def row(i):
        return Hd[:, i, 0, None, None] * xs + (Hd[:, i, 1, None, None] * ys + Hd[:, i, 2, None, None])

    den = row(2)
    px, py = row(0) / den, row(1) / den  # K x H x W: (x, y) in A
    valid = (px >= -_INSIDE_TOL) & (px <= w - 1 + _INSIDE_TOL) & (py >= -_INSIDE_TOL) & (py <= h - 1 + _INSIDE_TOL)
    if margin > 0:
        valid = _erode_bool(valid, margin)
    grid = torch.stack([px.mul_(2.0 / max(w - 1, 1)).sub_(1), py.mul_(2.0 / max(h - 1, 1)).sub_(1)], dim=-1)
    return grid.float(), valid.unsqueeze(1).float()


def _sample(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling with pixel-centre-aligned coordinates; zero outside the image."""
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _is_identity(H: torch.Tensor) -> torch.Tensor:
    """``K x 3 x 3`` -> bool ``K``: exactly the identity (such views need no warping)."""
    return (H == torch.eye(3, dtype=H.dtype, device=H.device)).flatten(1).all(dim=1)


def _pad_to_cells(x: torch.Tensor) -> torch.Tensor:
    """Replicate-pad ``K x C x H x W`` at the bottom/right to multiples of the 8-pixel cell."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % CELL, (-w) % CELL
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


def _channels_last(module) -> bool:
    if not isinstance(module, torch.nn.Module):
        return False
    for p in module.parameters():
        if p.dim() == 4:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


def detector_heatmap(detector: Callable, images: torch.Tensor,
                     autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Run a detector on ``K x 1 x H x W`` images and return its ``K x 1 x H x W`` float32 heatmap.

    ``detector(images)`` may return a dict with ``semi`` (``K x 65 x H/8 x W/8`` cell logits, as
    the SuperPoint networks do), the ``semi`` tensor itself, or a ``K x 1 x H x W`` heatmap.
    Images whose size is not a multiple of 8 are replicate-padded for the network and the
    heatmap is cropped back.
    """
    h, w = images.shape[-2:]
    x = _pad_to_cells(images)
    if _channels_last(detector):
        x = x.contiguous(memory_format=torch.channels_last)
    if autocast_dtype is not None:
        with torch.autocast(x.device.type, dtype=autocast_dtype):
            out = detector(x)
    else:
        out = detector(x)
    if isinstance(out, Mapping):
        out = out["semi"]
    if out.dim() != 4:
        raise ValueError(f"detector output must be B x 65 x Hc x Wc or B x 1 x H x W, got {tuple(out.shape)}")
    if out.shape[1] == CELL * CELL + 1:
        heat = semi_to_heatmap(out)
    elif out.shape[1] == 1:
        heat = out.float()
    else:
        raise ValueError(f"detector output must have 65 (cell logits) or 1 (heatmap) channels, got {out.shape[1]}")
    return heat[..., :h, :w].contiguous()


@torch.inference_mode()
def homography_adaptation(detector: Callable, image: torch.Tensor, config: Mapping,
                          generator: torch.Generator | list | None = None, *,
                          homographies: torch.Tensor | None = None,
                          autocast_dtype: torch.dtype | None = None,
                          return_counts: bool = False):
    """Aggregated heatmap of ``image`` under homographic adaptation.

    Args:
        detector: a network returning ``{"semi": ...}`` (see :func:`prepare_detector`) or any
            callable ``K x 1 x H x W -> heatmap`` (see :func:`detector_heatmap`).
        image: ``B x 1 x H x W`` float32 gray in [0, 1], on the detector's device.
        config: the ``data.homography_adaptation`` section (or a whole config), merged over the
            defaults: ``num``,
            ``aggregation`` (sum | max), ``filter_counts``, ``batch_size`` (views per forward),
            ``homographies.params``, ``valid_border_margin``.
        generator: CPU generator(s) for sampling (see :func:`sample_adaptation_homographies`).
        homographies: ``B x N x 3 x 3`` image -> view homographies to use instead of sampling
            (the identity rows are recognised and not warped).
        autocast_dtype: run the network under autocast with this dtype (e.g. bf16).
        return_counts: also return the per-pixel number of valid views.
    Returns:
        ``B x 1 x H x W`` float32 heatmap on the image's device [and ``B x 1 x H x W`` counts].
    """
    s = adaptation_settings(config)
    B, _, h, w = image.shape
    device = image.device
    if homographies is None:
        homographies = sample_adaptation_homographies(B, s["num"], (h, w), s["params"], generator)
    if homographies.dim() != 4 or homographies.shape[0] != B or homographies.shape[-2:] != (3, 3):
        raise ValueError(f"homographies must be {B} x N x 3 x 3, got {tuple(homographies.shape)}")
    n = homographies.shape[1]
    H_all = homographies.reshape(B * n, 3, 3).to(device=device, dtype=torch.float32)
    owner = torch.arange(B, device=device).repeat_interleave(n)  # image of each view
    margin = s["valid_border_margin"]

    total = torch.zeros(B, 1, h, w, device=device)
    counts = torch.zeros(B, 1, h, w, device=device)
    for start in range(0, B * n, s["batch_size"]):
        H = H_all[start:start + s["batch_size"]]
        k = H.shape[0]
        ident = _is_identity(H)
        src = image.index_select(0, owner[start:start + k]).float()
        # each view samples the image at H^-1 p; each image pixel samples the views at H p
        grid_view, mask_view = _pull(torch.linalg.inv(H.double()), (h, w), margin)
        grid_back, mask_back = _pull(H, (h, w), margin)
        # an image pixel counts for a view only where the view's own mask holds too: next to an
        # edge the warp created in the view, the response is an artefact of the black padding
        mask_back.mul_(F.grid_sample(mask_view, grid_back, mode="nearest", padding_mode="zeros",
                                     align_corners=True))
        views = _sample(src, grid_view)
        if bool(ident.any()):  # identity views: the image itself, valid everywhere
            views[ident] = src[ident]
            mask_view[ident] = 1.0
            mask_back[ident] = 1.0
        heat = detector_heatmap(detector, views, autocast_dtype).mul_(mask_view)
        back = _sample(heat, grid_back)
        if bool(ident.any()):
            back[ident] = heat[ident]
        back.mul_(mask_back)
        # the views of image b are the consecutive positions [b*n, (b+1)*n) of the flat list
        for b in range(start // n, (start + k - 1) // n + 1):
            lo, hi = max(start, b * n) - start, min(start + k, (b + 1) * n) - start
            counts[b] += mask_back[lo:hi].sum(dim=0)
            if s["aggregation"] == "sum":
                total[b] += back[lo:hi].sum(dim=0)
            else:
                total[b] = torch.maximum(total[b], back[lo:hi].amax(dim=0))
    if s["aggregation"] == "sum":
        out = torch.where(counts > 0, total / counts.clamp(min=1e-12), torch.zeros_like(total))
    else:
        out = total
    if s["filter_counts"] > 0:
        out = torch.where(counts >= s["filter_counts"], out, torch.zeros_like(out))
    return (out, counts) if return_counts else out


# --------------------------------------------------------------------------------------------
# making the network fast for inference
# --------------------------------------------------------------------------------------------
class _SemiOnly(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return {"semi": self.model(x)["semi"]}


class _HeadsAsLeaves(torch.fx.Tracer):
    """fx tracer that does not enter the optional heads attached to a SuperPoint network."""

    LEAVES = ("seg_head",)

    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name in self.LEAVES or super().is_leaf_module(m, module_qualified_name)


def fold_graph_batchnorms(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Fold every batch norm of a traced network that reads a 2-D convolution's output (and is its
    only reader) into that convolution, with :func:`models.inference.fold_batchnorm`; in place.

    The folded convolution is a new module (a module called twice stays as it is for its other
    call); the batch norm node is dropped from the graph and unused modules are deleted.
    """
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), torch.nn.BatchNorm2d):
            continue
        src = node.args[0] if node.args else None
        if not (isinstance(src, torch.fx.Node) and src.op == "call_module" and len(src.users) == 1
                and isinstance(modules.get(src.target), torch.nn.Conv2d)):
            continue
        bn, conv = modules[node.target], modules[src.target]
        if bn.running_mean is None or bn.running_var is None:
            continue  # batch statistics even in eval mode: nothing to fold
        weight, bias = fold_batchnorm(conv, bn)
        folded = copy.deepcopy(conv)
        folded.weight = torch.nn.Parameter(weight, requires_grad=False)
        folded.bias = torch.nn.Parameter(bias, requires_grad=False)
        name = f"{src.target.replace('.', '_')}_folded"
        gm.add_submodule(name, folded)
        modules[name] = folded
        src.target = name
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def prepare_detector(model: torch.nn.Module, device: torch.device | str | None = None,
                     channels_last: bool = True, fuse: bool = True) -> torch.nn.Module:
    """An inference-only copy of a SuperPoint network for homographic adaptation.

    The copy is put in eval mode on ``device`` (``model`` itself is left as it is); with ``fuse``
    its graph is traced with ``torch.fx``, cut down to the detector output (the descriptor and
    segmentation heads are never computed) and batch norms are folded into the convolutions
    (:func:`fold_graph_batchnorms`); with ``channels_last`` the weights use the NHWC layout that
    oneDNN / cuDNN convolutions prefer. A model that cannot be traced is used as is (a warning
    says so). The result returns ``{"semi": ...}`` like the network.
    """
    model = copy.deepcopy(model).eval()
    if device is not None:
        model = model.to(device)
    prepared: torch.nn.Module = _SemiOnly(model)
    if fuse:
        try:
            # extra heads (the segmentation head reads tensor sizes, which fx cannot trace) stay
            # opaque leaves: the detector output never uses them, so they are cut with the dead code
            graph = _HeadsAsLeaves().trace(model)
            gm = torch.fx.GraphModule(model, graph, type(model).__name__)
            out_node = next(n for n in gm.graph.nodes if n.op == "output")
            result = out_node.args[0]
            if not isinstance(result, dict) or "semi" not in result:
                raise TypeError("the network's forward does not return a dict with 'semi'")
            out_node.args = ({"semi": result["semi"]},)
            gm.graph.eliminate_dead_code()
            gm.delete_all_unused_submodules()
            gm.recompile()
            prepared = fold_graph_batchnorms(gm)
        except Exception as e:  # noqa: BLE001 - any tracing failure falls back to the plain network
            warnings.warn(f"homography adaptation: running {type(model).__name__} unfused "
                          f"({type(e).__name__}: {e})", stacklevel=2)
            prepared = _SemiOnly(model)
    prepared = prepared.eval()
    if channels_last:
        prepared = prepared.to(memory_format=torch.channels_last)
    return prepared
