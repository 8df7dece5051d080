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

from models import build_network
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

TF_ENCODER = [(f"vgg/conv{s}_{b}", 3, cin, cout) for s, b, cin, cout in
              [(1, 1, 1, 64), (1, 2, 64, 64), (2, 1, 64, 64), (2, 2, 64, 64),
               (3, 1, 64, 128), (3, 2, 128, 128), (4, 1, 128, 128), (4, 2, 128, 128)]]
TF_DETECTOR = [("detector/conv1", 3, 128, 256), ("detector/conv2", 1, 256, 65)]
TF_DESCRIPTOR = [("descriptor/conv1", 3, 128, 256), ("descriptor/conv2", 1, 256, 256)]
TF_LAYERS = TF_ENCODER + TF_DETECTOR


def random_tf_variables(seed: int = 0, prefix: str = "magicpoint", layers=TF_LAYERS) -> dict:
    """rpautrat's variables (kernels kh x kw x in x out) with random values: by default the 60
    of its MagicPoint."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, k, cin, cout in layers:
        p = f"{prefix}/{name}/"
        out[p + "conv/kernel"] = rng.normal(0, 1 / np.sqrt(k * k * cin), (k, k, cin, cout)).astype(np.float32)
        out[p + "conv/bias"] = rng.normal(0, 0.1, cout).astype(np.float32)
        out[p + "bn/gamma"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
        out[p + "bn/beta"] = rng.normal(0, 0.1, cout).astype(np.float32)
        out[p + "bn/moving_mean"] = rng.normal(0, 0.5, cout).astype(np.float32)
        out[p + "bn/moving_variance"] = rng.uniform(0.5, 2.0, cout).astype(np.float32)
    return out


def random_tf_magicpoint(seed: int = 0) -> dict:
    return random_tf_variables(seed)


def tf_reference(variables: dict, image255: np.ndarray, prefix: str = "magicpoint", head=TF_DETECTOR) -> np.ndarray:
    """The TF graph in numpy (float64, NHWC): conv 'SAME' with the stored kh x kw x in x out
    kernel -> ReLU -> BN(eps 1e-3) per block, 2x2 max-pool after conv1_2 / 2_2 / 3_2, then the
    ``head``, whose last conv has no ReLU. ``image255``: H x W in [0, 255]. Returns Hc x Wc x C."""
    x = image255.astype(np.float64)[:, :, None]
    for i, (name, k, _, _) in enumerate(TF_ENCODER + head):
        v = {n: variables[f"{prefix}/{name}/{n}"].astype(np.float64)
             for n in ("conv/kernel", "conv/bias", "bn/gamma", "bn/beta", "bn/moving_mean", "bn/moving_variance")}
        pad = k // 2
        xp = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
        patches = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(0, 1))  # H x W x C x kh x kw
        x = np.einsum("hwcij,ijco->hwo", patches, v["conv/kernel"]) + v["conv/bias"]
        if i != len(TF_ENCODER) + len(head) - 1:
            x = np.maximum(x, 0)
        x = (x - v["bn/moving_mean"]) / np.sqrt(v["bn/moving_variance"] + 1e-3) * v["bn/gamma"] + v["bn/beta"]
        if name in ("vgg/conv1_2", "vgg/conv2_2", "vgg/conv3_2"):
            h, w, c = x.shape
            x = x.reshape(h // 2, 2, w // 2, 2, c).max(axis=(1, 3))
    return x


def tf_reference_semi(variables: dict, image255: np.ndarray) -> np.ndarray:
    return tf_reference(variables, image255)


def _semi(model, image01: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(image01.astype(np.float32))[None, None])["semi"][0].numpy()


def _converted_model(path):
    obj = torch.load(path, map_location="cpu", weights_only=True)
    model = build_network(obj["config"]["model"]["name"], obj["config"]["model"]["params"])
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


def test_tf_superpoint_with_descriptor_converts_both_heads(tmp_path):
    """An rpautrat SuperPoint (``superpoint/`` scope, descriptor head present): nothing untrained."""
    variables = random_tf_variables(4, "superpoint", TF_LAYERS + TF_DESCRIPTOR)
    write_bundle(tmp_path / "saved", variables)
    cw.convert(tmp_path / "saved", tmp_path / "sp.pth")
    model, obj = _converted_model(tmp_path / "sp.pth")
    assert obj["converted_from"]["untrained"] == []
    image = np.random.default_rng(2).uniform(0, 1, (16, 24))
    with torch.no_grad():
        desc = model(torch.from_numpy(image.astype(np.float32))[None, None])["desc"][0].numpy().transpose(1, 2, 0)
    ref = tf_reference(variables, image * 255.0, "superpoint", TF_DESCRIPTOR)
    _close(desc, ref / np.linalg.norm(ref, axis=-1, keepdims=True))
    _close(_semi(model, image).transpose(1, 2, 0), tf_reference(variables, image * 255.0, "superpoint"))


def test_tf_magicpoint_descriptor_head_is_seeded(tmp_path):
    write_bundle(tmp_path / "saved", random_tf_magicpoint())
    states = []
    for seed in (0, 1):
        cw.convert(tmp_path / "saved", tmp_path / f"{seed}.pth", seed=seed)
        states.append(torch.load(tmp_path / f"{seed}.pth", weights_only=True)["model_state_dict"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        fresh = build_network("SuperPointTF").state_dict()  # PyTorch's default init, seed 0
    key = "descriptor.0.conv.weight"
    assert torch.equal(states[0][key], fresh[key])
    assert not torch.equal(states[0][key], states[1][key])
    assert torch.equal(states[0]["detector.0.conv.weight"], states[1]["detector.0.conv.weight"])
    assert not torch.equal(states[0]["detector.0.conv.weight"], fresh["detector.0.conv.weight"])


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
    training images never had any; see pretrained/README.md.)"""
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


# ------------------------------------------------------------------ the PyTorch formats

def _random_state(spec, seed: int) -> dict:
    """Random tensors for ``spec`` = [(name, shape)]: BN variances positive, counters long."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in spec:
        if name.endswith("num_batches_tracked"):
            out[name] = torch.tensor(1000)
        elif name.endswith("running_var"):
            out[name] = torch.rand(shape, generator=g) * 1.5 + 0.5
        elif name.endswith("weight") and len(shape) == 4:
            out[name] = torch.randn(shape, generator=g) / (shape[1] * shape[2] * shape[3]) ** 0.5
        elif name.endswith("weight") and len(shape) == 1:  # BN scale
            out[name] = torch.rand(shape, generator=g) + 0.5
        else:
            out[name] = torch.randn(shape, generator=g) * 0.1
    return out


def _conv(name, cin, cout, k):
    return [(f"{name}.weight", (cout, cin, k, k)), (f"{name}.bias", (cout,))]


def _bn(name, c):
    return [(f"{name}.{p}", (c,)) for p in ("weight", "bias", "running_mean", "running_var")] + \
        [(f"{name}.num_batches_tracked", ())]


ENCODER = [(1, 64), (64, 64), (64, 128), (128, 128)]  # (in, out) of each stage


def open_spec(descriptor_dim=256):
    """superpoint_v6_from_tf.pth: backbone.<stage>.<0|1>.{conv,bn}, detector.<0|1>, descriptor.<0|1>."""
    spec = []
    for s, (cin, cout) in enumerate(ENCODER):
        for b, c in enumerate((cin, cout)):
            spec += _conv(f"backbone.{s}.{b}.conv", c, cout, 3) + _bn(f"backbone.{s}.{b}.bn", cout)
    for head, last in (("detector", 65), ("descriptor", descriptor_dim)):
        spec += _conv(f"{head}.0.conv", 128, 256, 3) + _bn(f"{head}.0.bn", 256)
        spec += _conv(f"{head}.1.conv", 256, last, 1) + _bn(f"{head}.1.bn", last)
    return spec


def open_reference(sd, x):
    """conv -> ReLU -> BN(eps 1e-3) blocks, [0, 1] input, max-pool after stages 0-2."""
    def block(x, p, relu=True):
        w = sd[f"{p}.conv.weight"]
        x = F.conv2d(x, w, sd[f"{p}.conv.bias"], padding=w.shape[-1] // 2)
        x = F.relu(x) if relu else x
        return F.batch_norm(x, sd[f"{p}.bn.running_mean"], sd[f"{p}.bn.running_var"], sd[f"{p}.bn.weight"],
                            sd[f"{p}.bn.bias"], training=False, eps=1e-3)
    for s in range(4):
        x = block(block(x, f"backbone.{s}.0"), f"backbone.{s}.1")
        x = F.max_pool2d(x, 2) if s < 3 else x
    semi = block(block(x, "detector.0"), "detector.1", relu=False)
    desc = F.normalize(block(block(x, "descriptor.0"), "descriptor.1", relu=False), dim=1)
    return semi, desc


def gauss2_spec():
    """eric-yyjau's SuperPointNet_gauss2: inc / down1..3 double convs (conv, BN, ReLU) x 2, heads."""
    spec = []
    for s, (cin, cout) in enumerate(ENCODER):
        p = "inc.conv.conv" if s == 0 else f"down{s}.mpconv.1.conv"
        spec += _conv(f"{p}.0", cin, cout, 3) + _bn(f"{p}.1", cout)
        spec += _conv(f"{p}.3", cout, cout, 3) + _bn(f"{p}.4", cout)
    spec += _conv("convPa", 128, 256, 3) + _bn("bnPa", 256) + _conv("convPb", 256, 65, 1) + _bn("bnPb", 65)
    spec += _conv("convDa", 128, 256, 3) + _bn("bnDa", 256) + _conv("convDb", 256, 256, 1) + _bn("bnDb", 256)
    return spec


def gauss2_reference(sd, x):
    def cbr(x, conv, bn, relu=True):
        w = sd[f"{conv}.weight"]
        x = F.conv2d(x, w, sd[f"{conv}.bias"], padding=w.shape[-1] // 2)
        x = F.batch_norm(x, sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"], sd[f"{bn}.weight"],
                         sd[f"{bn}.bias"], training=False, eps=1e-5)
        return F.relu(x) if relu else x
    for s in range(4):
        p = "inc.conv.conv" if s == 0 else f"down{s}.mpconv.1.conv"
        x = F.max_pool2d(x, 2) if s > 0 else x
        x = cbr(cbr(x, f"{p}.0", f"{p}.1"), f"{p}.3", f"{p}.4")
    semi = cbr(cbr(x, "convPa", "bnPa"), "convPb", "bnPb", relu=False)
    desc = F.normalize(cbr(cbr(x, "convDa", "bnDa"), "convDb", "bnDb", relu=False), dim=1)
    return semi, desc


def magicleap_spec():
    names = ["conv1a", "conv1b", "conv2a", "conv2b", "conv3a", "conv3b", "conv4a", "conv4b"]
    spec = []
    for i, name in enumerate(names):
        cin, cout = ENCODER[i // 2]
        spec += _conv(name, cin if i % 2 == 0 else cout, cout, 3)
    return spec + _conv("convPa", 128, 256, 3) + _conv("convPb", 256, 65, 1) + \
        _conv("convDa", 128, 256, 3) + _conv("convDb", 256, 256, 1)


def magicleap_reference(sd, x):
    """MagicLeap's network: conv + ReLU everywhere except the heads' 1x1 convs, no batch norm."""
    def c(x, n, relu=True):
        w = sd[f"{n}.weight"]
        x = F.conv2d(x, w, sd[f"{n}.bias"], padding=w.shape[-1] // 2)
        return F.relu(x) if relu else x
    for s in range(1, 5):
        x = c(c(x, f"conv{s}a"), f"conv{s}b")
        x = F.max_pool2d(x, 2) if s < 4 else x
    return c(c(x, "convPa"), "convPb", relu=False), F.normalize(c(c(x, "convDa"), "convDb", relu=False), dim=1)


def _compare(dst, reference, sd):
    model, obj = _converted_model(dst)
    x = torch.rand(2, 1, 32, 48, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = model(x)
        semi, desc = reference(sd, x)
    _close(out["semi"].numpy(), semi.numpy(), 1e-4)
    _close(out["desc"].numpy(), desc.numpy(), 1e-4)
    return model, obj


def test_superpoint_open_conversion(tmp_path):
    sd = _random_state(open_spec(), 11)
    torch.save(sd, tmp_path / "superpoint_v6_from_tf.pth")
    assert cw.detect_format(tmp_path / "superpoint_v6_from_tf.pth") == "superpoint_open"
    cw.convert(tmp_path / "superpoint_v6_from_tf.pth", tmp_path / "open.pth")
    model, obj = _compare(tmp_path / "open.pth", open_reference, sd)
    assert obj["config"]["model"]["name"] == "SuperPointTF" and float(model.input_scale) == 1.0
    assert obj["converted_from"]["untrained"] == []


@pytest.mark.parametrize("legacy", [True, False])
def test_eric_yyjau_checkpoint_conversion(tmp_path, legacy):
    sd = _random_state(gauss2_spec(), 12)
    # an Adam state dict as eric-yyjau saves it (written by hand: building an optimizer costs seconds)
    optimizer = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(3), "exp_avg_sq": torch.zeros(3)}},
                 "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0,
                                   "amsgrad": False, "params": [0]}]}
    loss = torch.tensor(0.25, requires_grad=True) * 2  # eric-yyjau saves the last loss tensor as is
    ck = {"n_iter": 170001, "model_state_dict": {f"module.{k}": v for k, v in sd.items()},
          "optimizer_state_dict": optimizer, "loss": loss}
    src = tmp_path / "superPointNet_170000_checkpoint.pth.tar"
    torch.save(ck, src, _use_new_zipfile_serialization=not legacy)  # legacy: the pre-1.6 format
    assert cw.detect_format(src) == "eric_yyjau"  # read with weights_only=True in both formats
    cw.convert(src, tmp_path / "eric.pth")
    _, obj = _compare(tmp_path / "eric.pth", gauss2_reference, sd)
    assert obj["config"]["model"]["name"] == "SuperPointNet_gauss2" and obj["n_iter"] == 170001


def test_magicleap_conversion(tmp_path):
    sd = _random_state(magicleap_spec(), 13)
    torch.save(sd, tmp_path / "superpoint_v1.pth")
    assert cw.detect_format(tmp_path / "superpoint_v1.pth") == "magicleap"
    cw.convert(tmp_path / "superpoint_v1.pth", tmp_path / "ml.pth")
    _, obj = _compare(tmp_path / "ml.pth", magicleap_reference, sd)
    assert obj["config"]["model"]["name"] == "SuperPointNet"


def test_unknown_or_corrupt_files_give_one_line_errors(tmp_path, capsys):
    (tmp_path / "junk.pth").write_bytes(b"\x00garbage" * 10)
    (tmp_path / "model.tar.gz").write_bytes(b"\x1f\x8b truncated")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    torch.save(_random_state(open_spec(), 1), tmp_path / "open.pth")
    cases = [(["junk.pth"], "junk.pth: not a readable PyTorch weights file"),
             (["other.pth"], "other.pth: unrecognised weights"),
             (["open.pth", "--format", "magicleap"], "open.pth: not a magicleap state dict"),
             (["missing.pth"], "missing.pth: weights not found"),
             (["model.tar.gz"], "model.tar.gz: not a readable tar archive"),
             (["open.pth", "--input-scale", "0"], "--input-scale: must be > 0")]
    for args, message in cases:
        argv = [str(tmp_path / args[0]), str(tmp_path / "out.pth")] + args[1:]
        assert cw.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "out.pth").exists()


# ------------------------------------------------------------------ pretrained: <converted file>

def test_converted_file_works_as_pretrained_in_any_config(tmp_path):
    from models import load_pretrained
    from utils.config import load_config

    sd = _random_state(open_spec(), 21)
    torch.save(sd, tmp_path / "v6.pth")
    cw.convert(tmp_path / "v6.pth", tmp_path / "open.pth")
    model = load_pretrained(load_config(None)["model"], tmp_path / "open.pth")
    assert type(model).__name__ == "SuperPointTF"
    assert torch.equal(model.state_dict()["detector.1.conv.weight"], sd["detector.1.conv.weight"])


def test_joint_training_starts_from_a_converted_magicpoint(tmp_path, monkeypatch):
    """A SuperPointNet_gauss2 joint-training config with ``pretrained:`` a converted TF MagicPoint
    trains the converted layout (input scale kept) and its checkpoints record that layout."""
    import datasets
    import settings
    from training.checkpoints import latest_checkpoint, load_checkpoint
    from training.superpoint import SuperPointTask
    from training.trainer import Trainer
    from utils.config import load_config

    monkeypatch.setitem(datasets.DATASETS, "squares", "tests.fixtures.squares:Squares")
    write_bundle(tmp_path / "saved", random_tf_magicpoint())
    cw.convert(tmp_path / "saved", tmp_path / "mp.pth")
    overrides = [
        "data.dataset=squares", "data.warped_pair.enable=true", "model.name=SuperPointNet_gauss2",
        "model.batch_size=2", "model.eval_batch_size=2", "num_workers=0", "precision=fp32", "device=cpu",
        "train_iter=1", "save_interval=1", "tensorboard_interval=100", "validation_interval=100",
        "model.lambda_loss=1", "model.sparse_loss.enable=true", "model.sparse_loss.params.num_matching_attempts=20",
        "model.sparse_loss.params.num_masked_non_matches_per_match=5", f"pretrained={tmp_path / 'mp.pth'}"]
    cfg = load_config(None, overrides)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared, busy CPU: one intra-op thread is faster
    try:
        Trainer(cfg, "from_tf", SuperPointTask(cfg)).train()
    finally:
        torch.set_num_threads(threads)
    ck = load_checkpoint(latest_checkpoint(settings.exper_path() / "from_tf" / "checkpoints"))
    assert ck["n_iter"] == 1 and ck["config"]["model"]["name"] == "SuperPointTF"
    assert float(ck["model_state_dict"]["input_scale"]) == 255.0
    start = torch.load(tmp_path / "mp.pth", weights_only=True)["model_state_dict"]
    assert not torch.equal(ck["model_state_dict"]["detector.1.conv.weight"], start["detector.1.conv.weight"])
    # resuming with the same (gauss2) config rebuilds the layout its checkpoint records
    cfg = load_config(None, overrides + ["train_iter=2"])
    Trainer(cfg, "from_tf", SuperPointTask(cfg)).train()
    ck = load_checkpoint(latest_checkpoint(settings.exper_path() / "from_tf" / "checkpoints"))
    assert ck["n_iter"] == 2 and ck["config"]["model"]["name"] == "SuperPointTF"
