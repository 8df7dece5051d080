"""utils/convert_weights.py and utils/tf_bundle.py: every public weight format converts into a
network that computes what the source network computes.

Each parity test builds a state dict (or a TensorFlow bundle, written by the small SSTable writer
below) with the source's own names and shapes and random values, converts it, and compares our
network's output with a forward pass written here from the source's description.
"""
import struct
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import build_model, load_weights
from utils import convert_weights as cw
from utils.tf_bundle import BundleError, crc32c, mask_crc, open_bundle, read_table

# ------------------------------------------------------------------ a minimal tensor-bundle writer


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value) -> bytes:
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    return _varint(number << 3) + _varint(value)


def _block(entries, restart_interval: int) -> bytes:
    """A LevelDB block: prefix-compressed keys, a restart point every ``restart_interval`` keys."""
    out, restarts, prev = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(key), len(prev)) and key[shared] == prev[shared]:
                shared += 1
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        prev = key
    restarts = restarts or [0]
    return bytes(out) + struct.pack(f"<{len(restarts)}I", *restarts) + struct.pack("<I", len(restarts))


def _write_table(entries, block_entries: int = 3, restart_interval: int = 2) -> bytes:
    """An uncompressed LevelDB table: data blocks of ``block_entries`` keys, an index block, an
    empty meta-index block and the footer."""
    out = bytearray()

    def emit(block: bytes) -> bytes:
        handle = _varint(len(out)) + _varint(len(block))
        trailer = bytes([0])
        out.extend(block + trailer + struct.pack("<I", mask_crc(crc32c(block + trailer))))
        return handle

    index = []
    for i in range(0, len(entries), block_entries):
        chunk = entries[i:i + block_entries]
        index.append((chunk[-1][0], emit(_block(chunk, restart_interval))))
    meta = emit(_block([], 1))
    idx = emit(_block(index, 1))
    footer = (meta + idx).ljust(40, b"\0") + struct.pack("<Q", 0xDB4775248B80FB57)
    return bytes(out) + footer


def write_bundle(folder, tensors: dict) -> None:
    """``folder/variables/variables.{index,data-00000-of-00001}`` holding ``tensors`` (numpy)."""
    dtypes = {np.dtype("float32"): 1, np.dtype("float64"): 2, np.dtype("int32"): 3, np.dtype("int64"): 9}
    data, entries = bytearray(), [(b"", _field(1, 1) + _field(2, 0) + _field(3, _field(1, 1)))]
    for name in sorted(tensors):
        arr = np.array(tensors[name], order="C")  # (ascontiguousarray would make scalars 1-D)
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        shape = b"".join(_field(2, _field(1, d)) for d in arr.shape)
        entry = (_field(1, dtypes[arr.dtype]) + _field(2, shape) + _field(4, len(data)) + _field(5, len(raw))
                 + _varint(6 << 3 | 5) + struct.pack("<I", mask_crc(crc32c(raw))))
        entries.append((name.encode(), entry))
        data += raw
    var = folder / "variables"
    var.mkdir(parents=True, exist_ok=True)
    (var / "variables.index").write_bytes(_write_table(entries))
    (var / "variables.data-00000-of-00001").write_bytes(bytes(data))
    (folder / "saved_model.pb").write_bytes(b"")  # the graph is not read


# ------------------------------------------------------------------ the TensorFlow MagicPoint

TF_LAYERS = [(f"vgg/conv{s}_{b}", k, cin, cout) for s, b, k, cin, cout in
             [(1, 1, 3, 1, 64), (1, 2, 3, 64, 64), (2, 1, 3, 64, 64), (2, 2, 3, 64, 64),
              (3, 1, 3, 64, 128), (3, 2, 3, 128, 128), (4, 1, 3, 128, 128), (4, 2, 3, 128, 128)]]
TF_LAYERS += [("detector/conv1", 3, 128, 256), ("detector/conv2", 1, 256, 65)]


def random_tf_magicpoint(seed: int = 0) -> dict:
    """The 60 variables of rpautrat's MagicPoint (kernels kh x kw x in x out), random values."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, k, cin, cout in TF_LAYERS:
        p = f"magicpoint/{name}/"
        out[p + "conv/kernel"] = rng.normal(0, 1 / np.sqrt(k * k * cin), (k, k, cin, cout)).astype(np.float32)
        out[p + "conv/bias"] = rng.normal(0, 0.1, cout).astype(np.float32)
        out[p + "bn/gamma"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
        out[p + "bn/beta"] = rng.normal(0, 0.1, cout).astype(np.float32)
        out[p + "bn/moving_mean"] = rng.normal(0, 0.5, cout).astype(np.float32)
        out[p + "bn/moving_variance"] = rng.uniform(0.5, 2.0, cout).astype(np.float32)
    return out


def tf_reference_semi(variables: dict, image255: np.ndarray) -> np.ndarray:
    """The TF graph in numpy (float64, NHWC): conv 'SAME' with the stored kh x kw x in x out
    kernel -> ReLU -> BN(eps 1e-3) per block, 2x2 max-pool after conv1_2 / 2_2 / 3_2, the
    detector's conv2 without ReLU. ``image255``: H x W in [0, 255]. Returns Hc x Wc x 65."""
    x = image255.astype(np.float64)[:, :, None]
    for name, k, _, _ in TF_LAYERS:
        v = {n: variables[f"magicpoint/{name}/{n}"].astype(np.float64)
             for n in ("conv/kernel", "conv/bias", "bn/gamma", "bn/beta", "bn/moving_mean", "bn/moving_variance")}
        pad = k // 2
        xp = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
        patches = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(0, 1))  # H x W x C x kh x kw
        x = np.einsum("hwcij,ijco->hwo", patches, v["conv/kernel"]) + v["conv/bias"]
        if name != "detector/conv2":
            x = np.maximum(x, 0)
        x = (x - v["bn/moving_mean"]) / np.sqrt(v["bn/moving_variance"] + 1e-3) * v["bn/gamma"] + v["bn/beta"]
        if name in ("vgg/conv1_2", "vgg/conv2_2", "vgg/conv3_2"):
            h, w, c = x.shape
            x = x.reshape(h // 2, 2, w // 2, 2, c).max(axis=(1, 3))
    return x


def _semi(model, image01: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(image01.astype(np.float32))[None, None])["semi"][0].numpy()


def _converted_model(path):
    obj = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(obj["config"]["model"])
    model.load_state_dict(obj["model_state_dict"], strict=True)
    return model.eval(), obj


def _close(ours: np.ndarray, ref: np.ndarray, rtol: float = 1e-4) -> None:
    scale = np.abs(ref).max()
    assert scale > 1e-3, "degenerate reference"
    assert np.abs(ours - ref).max() <= rtol * scale, f"max diff {np.abs(ours - ref).max()} vs scale {scale}"


def test_crc32c_known_answer():
    assert crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    assert crc32c(b"") == 0


def test_tf_bundle_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    tensors = {f"scope/v{i:02d}": rng.normal(size=(i % 3 + 1, 4)).astype(np.float32) for i in range(11)}
    tensors["scope/count"] = np.array([7, -3], dtype=np.int64)
    tensors["scope/scalar"] = np.array(2.5, dtype=np.float64)
    tensors["scope/ints"] = np.arange(6, dtype=np.int32).reshape(2, 3)
    write_bundle(tmp_path / "model", tensors)
    # several data blocks, keys sharing prefixes across restart points
    assert len(read_table((tmp_path / "model/variables/variables.index").read_bytes())) == len(tensors) + 1
    for src in (tmp_path / "model", tmp_path / "model/variables", tmp_path / "model/variables/variables.index"):
        bundle = open_bundle(src)
        assert set(bundle.entries) == set(tensors)
        for name, value in tensors.items():
            got = bundle.tensor(name)
            assert got.dtype == value.dtype and got.shape == value.shape
            np.testing.assert_array_equal(got, value)


def test_tf_bundle_reads_tar_gz(tmp_path):
    tensors = {"a/b": np.arange(5, dtype=np.float32)}
    write_bundle(tmp_path / "model_dir", tensors)
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "model_dir", arcname="model_dir")
    np.testing.assert_array_equal(open_bundle(archive).tensor("a/b"), tensors["a/b"])


def test_tf_bundle_corruption_is_one_line_error(tmp_path):
    write_bundle(tmp_path / "m", {"w": np.ones((4, 4), np.float32)})
    data = tmp_path / "m/variables/variables.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[5] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=r"variable 'w': checksum mismatch") as e:
        open_bundle(tmp_path / "m").tensor("w")
    assert str(tmp_path / "m") in str(e.value) and "\n" not in str(e.value)
    index = tmp_path / "m/variables/variables.index"
    raw = bytearray(index.read_bytes())
    raw[2] ^= 0xFF  # inside the first data block
    index.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="checksum mismatch"):
        open_bundle(tmp_path / "m")
    index.write_bytes(b"not a table")
    with pytest.raises(BundleError, match="no footer"):
        open_bundle(tmp_path / "m")


def test_tf_magicpoint_conversion_matches_the_tf_graph(tmp_path, capsys):
    variables = random_tf_magicpoint()
    write_bundle(tmp_path / "saved", variables)
    assert cw.detect_format(tmp_path / "saved") == "tf_savedmodel"
    dst = tmp_path / "out" / "mp.pth"
    assert cw.main([str(tmp_path / "saved"), str(dst)]) == 0
    assert "SuperPointTF" in capsys.readouterr().out
    model, obj = _converted_model(dst)
    assert obj["config"] == {"model": {"name": "SuperPointTF", "params": {"descriptor_dim": 256}}}
    assert obj["converted_from"]["untrained"] == ["descriptor"]
    assert float(model.input_scale) == 255.0
    image = np.random.default_rng(1).uniform(0, 1, (24, 32))
    _close(_semi(model, image).transpose(1, 2, 0), tf_reference_semi(variables, image * 255.0))


def test_tf_magicpoint_descriptor_head_is_seeded(tmp_path):
    write_bundle(tmp_path / "saved", random_tf_magicpoint())
    states = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cw.convert(tmp_path / "saved", tmp_path / f"{name}.pth", seed=seed)
        states.append(torch.load(tmp_path / f"{name}.pth", weights_only=True)["model_state_dict"])
    key = "descriptor.0.conv.weight"
    assert torch.equal(states[0][key], states[1][key])
    assert not torch.equal(states[0][key], states[2][key])
    assert torch.equal(states[0]["detector.0.conv.weight"], states[2]["detector.0.conv.weight"])


def test_tf_missing_variable_is_named(tmp_path):
    variables = random_tf_magicpoint()
    del variables["magicpoint/vgg/conv3_1/bn/gamma"]
    write_bundle(tmp_path / "saved", variables)
    with pytest.raises(ValueError, match=r"missing \(e\.g\. 'backbone\.2\.0\.bn\.weight'\)"):
        cw.convert(tmp_path / "saved", tmp_path / "x.pth")
    assert not (tmp_path / "x.pth").exists()


# ------------------------------------------------------------------ the real file (shared data)

def _rpautrat_archive(shared_data):
    path = shared_data / "weights" / "rpautrat_magicpoint" / "magic-point_02-12-2018.tar.gz"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


def test_real_tf_magicpoint_variables(shared_data):
    bundle = open_bundle(_rpautrat_archive(shared_data))
    assert len(bundle.entries) == 60
    for name, k, cin, cout in TF_LAYERS:
        assert bundle.entries[f"magicpoint/{name}/conv/kernel"].shape == (k, k, cin, cout)
        for p in ("conv/bias", "bn/gamma", "bn/beta", "bn/moving_mean", "bn/moving_variance"):
            assert bundle.entries[f"magicpoint/{name}/{p}"].shape == (cout,)
    variance = bundle.tensor("magicpoint/vgg/conv1_1/bn/moving_variance")
    assert variance.dtype == np.float32 and (variance > 0).all()


def test_real_tf_magicpoint_fires_on_square_corners(shared_data, tmp_path):
    """A bright square on a near-black background (13/255): the 4 strongest detections after NMS
    are the 4 corners, each within 2 px. (On exactly-0 regions this network fires all over: its
    training images never had any; see docs/BENCHMARKS.md.)"""
    from utils.keypoints import extract_keypoints, semi_to_heatmap

    dst = tmp_path / "mp.pth"
    cw.convert(_rpautrat_archive(shared_data), dst)
    model, _ = _converted_model(dst)
    image = np.full((120, 160), 0.05, np.float32)
    image[30:90, 50:110] = 1.0
    corners = np.array([[50, 30], [109, 30], [50, 89], [109, 89]], np.float32)
    with torch.no_grad():
        heat = semi_to_heatmap(model(torch.from_numpy(image)[None, None])["semi"])
    kp = extract_keypoints(heat, threshold=0.015, nms_radius=4, border=4)
    top = kp.points[0][kp.mask[0]][:4].numpy()
    dist = np.linalg.norm(top[:, None] - corners[None], axis=-1)
    assert len(top) == 4 and (dist.min(axis=1) <= 2.0).all()
    assert sorted(dist.argmin(axis=1).tolist()) == [0, 1, 2, 3]
