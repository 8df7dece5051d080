"""Read TensorFlow checkpoints (tensor bundles) without TensorFlow.

A TF1 SavedModel keeps its weights in ``variables/variables.index`` and
``variables/variables.data-<shard>-of-<shards>``. The index is a LevelDB-format table (an SSTable)
that maps each variable name to a ``BundleEntryProto`` (dtype, shape, shard, offset, size,
crc32c); the key ``""`` holds the ``BundleHeaderProto`` (shards, endianness). The data files hold
the raw tensors back to back. Everything here is parsed by hand from those public formats:

* table: a 48-byte footer (meta-index and index block handles, magic ``0xdb4775248b80fb57``);
  the index block maps separator keys to data-block handles; every block is followed by a
  5-byte trailer (compression type, masked crc32c of block + type). Block entries are
  prefix-compressed keys (``shared, unshared, value_len`` varints) with restart points.
* protobufs: varints, fixed32 / fixed64 and length-delimited fields.

Only uncompressed blocks are supported (TensorFlow writes its bundles uncompressed); a
compressed block is reported as such.
"""
from __future__ import annotations

import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5

# tensorflow/core/framework/types.proto DataType -> numpy dtype (little-endian)
DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?", 14: "<u2",
          17: "<u2", 19: "<f2", 22: "<u4", 23: "<u8"}
BFLOAT16 = 14  # stored as the upper 16 bits of a float32
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")  # (not ".tar": eric-yyjau names torch files .pth.tar)


class BundleError(ValueError):
    """A tensor bundle that cannot be read (missing file, corruption, unsupported feature)."""


# ---------------------------------------------------------------------------- crc32c
def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # Castagnoli polynomial, reflected
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``, continuing from ``crc``."""
    table = _CRC_TABLE
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """LevelDB's masked CRC (stored CRCs are masked so that CRCs of CRCs are not degenerate)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------------------- varints, protobuf
def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of the base-128 varint at ``buf[pos]``."""
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise BundleError("truncated or malformed varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def parse_proto(buf: bytes) -> dict[int, list]:
    """Field number -> list of raw values (ints for varint / fixed, bytes for length-delimited)."""
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise BundleError("truncated protobuf field")
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            n, pos = read_varint(buf, pos)
            if pos + n > len(buf):
                raise BundleError("truncated protobuf field")
            value = bytes(buf[pos:pos + n])
            pos += n
        elif wire == 5:
            if pos + 4 > len(buf):
                raise BundleError("truncated protobuf field")
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise BundleError(f"unsupported protobuf wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def _last(fields: dict, number: int, default=0):
    return fields[number][-1] if number in fields else default


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


@dataclass(frozen=True)
class BundleEntry:
    """One tensor of the bundle (``BundleEntryProto``)."""
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None  # masked, as stored
    sliced: bool        # a partitioned variable (not supported)


def parse_entry(value: bytes) -> BundleEntry:
    f = parse_proto(value)
    shape: tuple[int, ...] = ()
    if 2 in f:
        shape_fields = parse_proto(f[2][-1])
        if _last(shape_fields, 3):
            raise BundleError("tensor of unknown rank")
        shape = tuple(_signed64(_last(parse_proto(d), 1)) for d in shape_fields.get(2, []))
    return BundleEntry(dtype=_last(f, 1), shape=shape, shard_id=_last(f, 3), offset=_last(f, 4),
                       size=_last(f, 5), crc32c=_last(f, 6, None), sliced=7 in f)


# ---------------------------------------------------------------------------- LevelDB table
def _block(table: bytes, offset: int, size: int, verify: bool) -> bytes:
    end = offset + size
    if offset < 0 or end + BLOCK_TRAILER_SIZE > len(table):
        raise BundleError(f"block at {offset} (+{size} bytes) lies outside the file")
    data = table[offset:end]
    kind = table[end]
    if verify:
        stored = struct.unpack_from("<I", table, end + 1)[0]
        if mask_crc(crc32c(table[offset:end + 1])) != stored:
            raise BundleError(f"block at {offset}: checksum mismatch (corrupt file)")
    if kind == 1:
        raise BundleError(f"block at {offset} is snappy-compressed (not supported; TensorFlow "
                          f"writes bundles uncompressed)")
    if kind != 0:
        raise BundleError(f"block at {offset}: unknown compression type {kind}")
    return data


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs of a table block, keys rebuilt from their shared prefixes."""
    if len(block) < 4:
        raise BundleError("block too short")
    n_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 * (n_restarts + 1)
    if end < 0:
        raise BundleError("block restart array overflows the block")
    restarts = set(struct.unpack_from(f"<{n_restarts}I", block, end))
    entries, key, pos = [], b"", 0
    while pos < end:
        start = pos
        shared, pos = read_varint(block, pos)
        unshared, pos = read_varint(block, pos)
        n_value, pos = read_varint(block, pos)
        if shared > len(key) or (start in restarts and shared) or pos + unshared + n_value > end:
            raise BundleError("malformed block entry")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        entries.append((key, block[pos:pos + n_value]))
        pos += n_value
    return entries


def read_table(table: bytes, verify: bool = True) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of a LevelDB-format table, in key order."""
    if len(table) < FOOTER_SIZE:
        raise BundleError("too short for a table (no footer)")
    footer = table[-FOOTER_SIZE:]
    if struct.unpack_from("<Q", footer, 40)[0] != TABLE_MAGIC:
        raise BundleError("not a LevelDB table (bad magic number)")
    _, pos = read_varint(footer, 0)       # meta-index offset (unused)
    _, pos = read_varint(footer, pos)     # meta-index size
    index_offset, pos = read_varint(footer, pos)
    index_size, pos = read_varint(footer, pos)
    entries = []
    for _, handle in _block_entries(_block(table, index_offset, index_size, verify)):
        offset, p = read_varint(handle, 0)
        size, _ = read_varint(handle, p)
        entries.extend(_block_entries(_block(table, offset, size, verify)))
    return entries


# ---------------------------------------------------------------------------- bundles
class TensorBundle:
    """The variables of a TensorFlow checkpoint: ``bundle.entries`` (name -> :class:`BundleEntry`),
    ``bundle.tensor(name)`` / ``bundle.tensors()`` as numpy arrays (copied, native byte order).

    ``index``: the bytes of ``<prefix>.index``; ``shards[i]``: the bytes of data shard ``i``;
    ``source`` names the checkpoint in error messages. ``verify`` checks every crc32c.
    """

    def __init__(self, index: bytes, shards: list[bytes], source: str, verify: bool = True):
        self.source = source
        self.verify = verify
        self.shards = shards
        try:
            pairs = read_table(index, verify)
        except BundleError as e:
            raise BundleError(f"{source}: variables.index: {e}") from None
        self.entries: dict[str, BundleEntry] = {}
        header = None
        for key, value in pairs:
            try:
                if key == b"":
                    header = parse_proto(value)
                else:
                    self.entries[key.decode("utf-8")] = parse_entry(value)
            except (BundleError, UnicodeDecodeError) as e:
                raise BundleError(f"{source}: variables.index entry {key!r}: {e}") from None
        if header is None:
            raise BundleError(f"{source}: variables.index has no bundle header (not a TensorFlow checkpoint)")
        self.num_shards = _last(header, 1, 1)
        if _last(header, 2) != 0:
            raise BundleError(f"{source}: big-endian bundles are not supported")

    def tensor(self, name: str) -> np.ndarray:
        e = self.entries.get(name)
        if e is None:
            raise BundleError(f"{self.source}: no variable {name!r}")
        where = f"{self.source}: variable {name!r}"
        if e.sliced:
            raise BundleError(f"{where} is partitioned into slices (not supported)")
        if e.dtype not in DTYPES:
            raise BundleError(f"{where} has unsupported TensorFlow dtype {e.dtype}")
        if not 0 <= e.shard_id < len(self.shards):
            raise BundleError(f"{where} lives in data shard {e.shard_id}, which is missing")
        data = self.shards[e.shard_id]
        if e.offset + e.size > len(data):
            raise BundleError(f"{where} lies past the end of data shard {e.shard_id} (truncated file)")
        raw = data[e.offset:e.offset + e.size]
        if self.verify and e.crc32c is not None and mask_crc(crc32c(raw)) != e.crc32c:
            raise BundleError(f"{where}: checksum mismatch (corrupt data file)")
        dtype = np.dtype(DTYPES[e.dtype])
        count = int(np.prod(e.shape, dtype=np.int64))
        if count * dtype.itemsize != e.size:
            raise BundleError(f"{where}: {e.size} bytes do not hold shape {list(e.shape)}")
        arr = np.frombuffer(raw, dtype=dtype, count=count)
        if e.dtype == BFLOAT16:
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        return arr.reshape(e.shape).astype(arr.dtype.newbyteorder("="), copy=True)

    def tensors(self) -> dict[str, np.ndarray]:
        return {name: self.tensor(name) for name in sorted(self.entries)}


def is_bundle_archive(path: str | Path) -> bool:
    """True for a tar archive that holds a ``variables.index``."""
    try:
        if not tarfile.is_tarfile(path):
            return False
        with tarfile.open(path) as tar:
            return any(n.endswith("variables.index") for n in tar.getnames())
    except (tarfile.TarError, EOFError, OSError):
        return False


def _shard_names(num_shards: int) -> list[str]:
    return [f"variables.data-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]


def open_bundle(path: str | Path, verify: bool = True) -> TensorBundle:
    """The variables of a TF SavedModel: its folder (with ``variables/``), the ``variables/``
    folder, the ``variables.index`` file, or a ``.tar.gz`` holding the SavedModel folder."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path}: not found")
    if path.is_file() and tarfile.is_tarfile(path):
        return _open_tar(path, verify)
    if path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES):
        raise BundleError(f"{path}: not a readable tar archive (corrupt or truncated)")
    if path.is_dir():
        index = next((p for p in (path / "variables" / "variables.index", path / "variables.index")
                      if p.is_file()), None)
        if index is None:
            raise BundleError(f"{path}: no variables/variables.index (not a TensorFlow SavedModel)")
    elif path.name.endswith(".index"):
        index = path
    else:
        raise BundleError(f"{path}: expected a SavedModel folder, its variables.index or a .tar.gz")
    index_bytes = index.read_bytes()
    num_shards = _header_shards(index_bytes, index, verify)
    shards = []
    for name in _shard_names(num_shards):
        p = index.parent / name
        if not p.is_file():
            raise BundleError(f"{p}: data shard missing")
        shards.append(p.read_bytes())
    return TensorBundle(index_bytes, shards, str(path), verify)


def _header_shards(index_bytes: bytes, where, verify: bool) -> int:
    try:
        pairs = read_table(index_bytes, verify)
    except BundleError as e:
        raise BundleError(f"{where}: {e}") from None
    header = next((v for k, v in pairs if k == b""), None)
    if header is None:
        raise BundleError(f"{where}: no bundle header (not a TensorFlow checkpoint)")
    return max(1, _last(parse_proto(header), 1, 1))


def _open_tar(path: Path, verify: bool) -> TensorBundle:
    try:
        with tarfile.open(path) as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}
            index_name = next((n for n in members if n.endswith("variables.index")), None)
            if index_name is None:
                raise BundleError(f"{path}: the archive holds no variables/variables.index")
            index_bytes = tar.extractfile(members[index_name]).read()
            num_shards = _header_shards(index_bytes, f"{path}:{index_name}", verify)
            folder = index_name[:-len("variables.index")]
            shards = []
            for name in _shard_names(num_shards):
                if folder + name not in members:
                    raise BundleError(f"{path}: the archive lacks {folder + name}")
                shards.append(tar.extractfile(members[folder + name]).read())
    except (tarfile.TarError, EOFError, OSError) as e:
        raise BundleError(f"{path}: unreadable archive ({e})") from None
    return TensorBundle(index_bytes, shards, str(path), verify)
