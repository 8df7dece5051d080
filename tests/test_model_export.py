"""export_model: ONNX / TorchScript files equal the PyTorch network at several input sizes, within
fp32 reordering noise (utils.numerics.FP32_REORDERED) whichever CPU kernels run; a file outside that
bound is refused and nothing is written."""
import argparse
import copy
from pathlib import Path

import pytest
import torch

from exporters.model_export import exported_network, run
from models import build_model
from models.frontend import Frontend
from models.stand_in import seeded_stand_in
from settings import exper_path
from utils.cli import UserError
from utils.config import load_config
from utils.numerics import FP32_REORDERED

pytestmark = pytest.mark.numerics  # run again under lower CPU kernel sets (tests/lower_kernels.py)

REPO = Path(__file__).resolve().parents[1]

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
        if "seg" in want:  # full resolution at every input size (the traced size must not stick)
            assert got["seg"].shape == (2, 5, h, w)
        for n in want:
            d = FP32_REORDERED.check(got[n], want[n])
            assert d.ok, f"{n}: {d}"
    # an engine behind the front end: the same keypoints as the PyTorch network's
    image = torch.rand(1, 1, 96, 128, generator=g)
    exported, eager = Frontend(network)(image), Frontend(model)(image)
    assert torch.equal(exported.keypoints.mask, eager.keypoints.mask)
    assert torch.allclose(exported.keypoints.points, eager.keypoints.points)
    d = FP32_REORDERED.check(exported.descriptors, eager.descriptors)
    assert d.ok, d


@pytest.mark.parametrize("weights", ["superpoint_photos_joint.pth", "magicpoint_synth.pth"])
def test_shipped_weights_export(weights, capsys):
    config = load_config(None, [f"pretrained={REPO / 'pretrained' / weights}"])
    assert run(config, exper_path() / "shipped", argparse.Namespace(format="onnx")) == 0
    assert (exper_path() / "shipped" / "superpoint.onnx").is_file()
    assert "limit" in capsys.readouterr().out  # the report names each output's bound


@pytest.mark.parametrize("fmt,filename", [("onnx", "superpoint.onnx"), ("torchscript", "superpoint.pt")])
def test_a_mismatching_export_is_refused_and_nothing_is_written(tmp_path, monkeypatch, fmt, filename):
    import exporters.model_export as model_export

    model, config = _config(tmp_path, "SuperPointNet_gauss2")
    out = exper_path() / "deploy"
    out.mkdir(parents=True)
    (out / filename).write_bytes(b"an earlier good export")
    writer = model_export.export_onnx if fmt == "onnx" else model_export.export_torchscript

    def broken_writer(model, path, names, sample):  # the file's detector head is off by 1 %
        broken = copy.deepcopy(model)
        with torch.no_grad():
            broken.convPb.weight.mul_(1.01)
        writer(broken, path, names, sample)

    monkeypatch.setattr(model_export, "export_onnx" if fmt == "onnx" else "export_torchscript", broken_writer)
    with pytest.raises(UserError) as e:
        run(config, out, argparse.Namespace(format=fmt))
    line = str(e.value)
    assert "\n" not in line and f"{filename}: refused: output semi differs from PyTorch by" in line
    assert "limit" in line and "desc" not in line.split("(fp32 bound")[0]  # only semi was changed
    assert (out / filename).read_bytes() == b"an earlier good export"
    assert sorted(p.name for p in out.iterdir()) == [filename]  # no temporary file left


def test_export_errors_are_one_line(tmp_path):
    _, config = _config(tmp_path, "SuperPointNet")
    with pytest.raises(UserError, match="--format: unknown format 'tflite'"):
        run(config, exper_path() / "x", argparse.Namespace(format="tflite"))
    with pytest.raises(UserError, match="pretrained: export_model needs trained weights"):
        run({**config, "pretrained": None}, exper_path() / "x", argparse.Namespace(format="onnx"))
    with pytest.raises(UserError, match="pretrained: weights file 'missing.pth' not found"):
        run({**config, "pretrained": "missing.pth"}, exper_path() / "x", argparse.Namespace(format="onnx"))
    assert not (exper_path() / "x").exists()
