import math

import pytest
import torch

from models import build_model
from models.heads import ASPPHead
from models.superpoint_bn import SuperPointNet_gauss2
from training.losses_segmentation import segmentation_loss
from utils.config import load_config


@pytest.mark.parametrize("feat_hw,image_hw", [((6, 8), (48, 64)), ((5, 9), (40, 72))])
def test_aspp_output_shape(feat_hw, image_hw):
    torch.manual_seed(0)
    head = ASPPHead(num_classes=34, in_channels=128, channels=32, aspp_rates=(2, 4, 6))
    out = head(torch.randn(2, 128, *feat_hw), image_hw)
    assert out.shape == (2, 34, *image_hw)
    head.train()  # batch size 1 in training mode must work (no batch norm on the pooled branch)
    assert head(torch.randn(1, 128, *feat_hw), image_hw).shape == (1, 34, *image_hw)


def test_build_model_without_head_keeps_state_dict_keys():
    plain = SuperPointNet_gauss2().state_dict()
    cfg = load_config(None)  # defaults: segmentation_head.enable false
    assert cfg["model"]["segmentation_head"]["enable"] is False
    model = build_model(cfg["model"])
    assert list(model.state_dict()) == list(plain)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in plain.items()}
    assert "seg" not in model(torch.rand(1, 1, 16, 16))


def test_build_model_with_head_adds_seg_head_keys_and_output():
    cfg = load_config(None, ["model.segmentation_head.enable=true", "model.segmentation_head.num_classes=4",
                             "model.segmentation_head.channels=16"])
    model = build_model(cfg["model"]).eval()
    keys, plain = set(model.state_dict()), set(SuperPointNet_gauss2().state_dict())
    assert plain <= keys and keys - plain and all(k.startswith("seg_head.") for k in keys - plain)
    out = model(torch.rand(2, 1, 48, 64))
    assert out["seg"].shape == (2, 4, 48, 64) and out["semi"].shape == (2, 65, 6, 8)


def test_head_is_refused_for_magicleap_layout():
    cfg = load_config(None, ["model.name=SuperPointNet", "model.segmentation_head.enable=true"])
    with pytest.raises(ValueError, match="segmentation_head.enable.*SuperPointNet_gauss2"):
        build_model(cfg["model"])


def test_segmentation_loss_ignores_ignore_index():
    # pixel 0: equal logits, label 0 -> ln 2 ; pixel 1: label ignored (would cost 20 as class 1)
    logits = torch.tensor([[0.0, 10.0], [0.0, -10.0]]).reshape(1, 2, 1, 2).requires_grad_()
    target = torch.tensor([[[0, 255]]])
    loss = segmentation_loss(logits, target, ignore_index=255)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    loss.backward()
    assert logits.grad[0, :, 0, 1].abs().sum() == 0  # no gradient from the ignored pixel
    assert segmentation_loss(logits, torch.tensor([[[1, 1]]]), ignore_index=255).item() == pytest.approx(
        (math.log(2) + 20 + math.log1p(math.exp(-20.0))) / 2, rel=1e-5)
    # every pixel ignored -> 0 with a usable graph
    zero = segmentation_loss(logits, torch.full((1, 1, 2), 7), ignore_index=7)
    zero.backward()
    assert zero.item() == 0.0
    with pytest.raises(ValueError, match="labels must lie in"):
        segmentation_loss(logits, torch.tensor([[[0, 2]]]), ignore_index=255)
