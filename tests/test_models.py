import pytest
import torch

from models import build_network, load_weights
from models.superpoint import SuperPointNet
from models.superpoint_bn import SuperPointNet_gauss2

pytestmark = pytest.mark.numerics  # run again under lower CPU kernel sets (tests/lower_kernels.py)

# MagicLeap superpoint_v1.pth: key -> shape (a fact of that file's format)
MAGICLEAP_SHAPES = {
    "conv1a": (64, 1), "conv1b": (64, 64), "conv2a": (64, 64), "conv2b": (64, 64),
    "conv3a": (128, 64), "conv3b": (128, 128), "conv4a": (128, 128), "conv4b": (128, 128),
    "convPa": (256, 128), "convPb": (65, 256), "convDa": (256, 128), "convDb": (256, 256),
}


def test_superpointnet_state_dict_matches_magicleap_layout(tmp_path):
    sd = SuperPointNet().state_dict()
    expected = {}
    for name, (cout, cin) in MAGICLEAP_SHAPES.items():
        k = 1 if name in ("convPb", "convDb") else 3
        expected[f"{name}.weight"] = (cout, cin, k, k)
        expected[f"{name}.bias"] = (cout,)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    # a file in that layout loads strictly, as a bare state dict
    fake = {k: torch.randn(v) for k, v in expected.items()}
    torch.save(fake, tmp_path / "superpoint_v1.pth")
    m = SuperPointNet()
    load_weights(m, tmp_path / "superpoint_v1.pth")
    assert torch.equal(m.conv1a.weight, fake["conv1a.weight"])


@pytest.mark.parametrize("cls", [SuperPointNet, SuperPointNet_gauss2])
def test_output_shapes_and_unit_descriptors(cls):
    m = cls().eval()
    out = m(torch.rand(2, 1, 48, 64))
    assert out["semi"].shape == (2, 65, 6, 8)
    assert out["desc"].shape == (2, 256, 6, 8)
    assert torch.allclose(out["desc"].norm(dim=1), torch.ones(2, 6, 8), atol=1e-5)


def test_checkpoint_dict_and_ddp_prefix_load(tmp_path):
    src = SuperPointNet_gauss2()
    sd = {f"module.{k}": v for k, v in src.state_dict().items()}
    torch.save({"model_state_dict": sd, "n_iter": 7}, tmp_path / "ck.pth.tar")
    dst = build_network("SuperPointNet_gauss2")
    obj = load_weights(dst, tmp_path / "ck.pth.tar")
    assert obj["n_iter"] == 7
    assert torch.equal(dst.inc.conv.conv[0].weight, src.inc.conv.conv[0].weight)


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_weights(SuperPointNet(), tmp_path / "missing.pth")
    torch.save(SuperPointNet().state_dict(), tmp_path / "ml.pth")
    with pytest.raises(ValueError, match="do not fit SuperPointNet_gauss2"):
        load_weights(SuperPointNet_gauss2(), tmp_path / "ml.pth")
    with pytest.raises(ValueError, match="unknown model"):
        build_network("Nope")
