"""export_model: ONNX / TorchScript files equal the PyTorch network at several input sizes."""
import argparse

import numpy as np
import pytest
import torch

from exporters.model_export import exported_network, run
from models import build_model
from models.frontend import Frontend
from models.stand_in import seeded_stand_in
from settings import exper_path
from utils.cli import UserError
from utils.config import load_config

SIZES = ((40, 56), (120, 160))  # not the sizes the exporter traces or checks itself


def _config(tmp_path, name, seg=False):
    over = [f"model.name={name}", f"pretrained={tmp_path / 'weights.pth.tar'}"]
    if seg:
        over += ["model.segmentation_head.enable=true", "model.segmentation_head.num_classes=5",
                 "model.segmentation_head.channels=16"]
    config = load_config(None, over)
    model = seeded_stand_in(build_model(config["model"]), seed=1)
    if name == "SuperPointNet_gauss2":  # batch norm far from identity, so folding it matters
        g = torch.Generator().manual_seed(2)
        for bn in model.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.running_mean.copy_(torch.rand(bn.num_features, generator=g) - 0.5)
                bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
    torch.save({"model_state_dict": model.state_dict(), "n_iter": 3}, tmp_path / "weights.pth.tar")
    return model.eval(), config


@pytest.mark.parametrize("fmt,filename", [("onnx", "superpoint.onnx"), ("torchscript", "superpoint.pt")])
@pytest.mark.parametrize("name", ["SuperPointNet", "SuperPointNet_gauss2", "SuperPointNet_gauss2+seg"])
def test_exported_model_matches_pytorch_at_two_sizes(tmp_path, fmt, filename, name, capsys):
    model, config = _config(tmp_path, name.split("+")[0], seg=name.endswith("+seg"))
    assert run(config, exper_path() / "deploy", argparse.Namespace(format=fmt)) == 0
    path = exper_path() / "deploy" / filename
    assert path.is_file() and "wrote" in capsys.readouterr().out
    network = exported_network(path, fmt)
    g = torch.Generator().manual_seed(0)
    for h, w in SIZES:
        image = torch.rand(2, 1, h, w, generator=g)
        with torch.no_grad():
            want = model(image)
        got = network(image)
        assert list(got) == list(want)  # semi, desc[, seg], by name
        semi, desc = got["semi"].numpy(), got["desc"].numpy()
        assert semi.shape == (2, 65, h // 8, w // 8) and desc.shape == (2, 256, h // 8, w // 8)
        assert np.abs(semi - want["semi"].numpy()).max() <= 1e-4
        assert np.abs(desc - want["desc"].numpy()).max() <= 1e-4
        if "seg" in want:  # full resolution at every input size (the traced size must not stick)
            assert got["seg"].shape == (2, 5, h, w)
            assert np.abs(got["seg"].numpy() - want["seg"].numpy()).max() <= 1e-4
    # an engine behind the front end: the same keypoints as the PyTorch network's
    image = torch.rand(1, 1, 96, 128, generator=g)
    exported, eager = Frontend(network)(image), Frontend(model)(image)
    assert torch.equal(exported.keypoints.mask, eager.keypoints.mask)
    assert torch.allclose(exported.keypoints.points, eager.keypoints.points)
    assert torch.allclose(exported.descriptors, eager.descriptors, atol=1e-4)


def test_export_errors_are_one_line(tmp_path):
    _, config = _config(tmp_path, "SuperPointNet")
    with pytest.raises(UserError, match="--format: unknown format 'tflite'"):
        run(config, exper_path() / "x", argparse.Namespace(format="tflite"))
    with pytest.raises(UserError, match="pretrained: export_model needs trained weights"):
        run({**config, "pretrained": None}, exper_path() / "x", argparse.Namespace(format="onnx"))
    with pytest.raises(UserError, match="pretrained: weights file 'missing.pth' not found"):
        run({**config, "pretrained": "missing.pth"}, exper_path() / "x", argparse.Namespace(format="onnx"))
    assert not (exper_path() / "x").exists()
