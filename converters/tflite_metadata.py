"""TFLite Metadata in the bundle's model: labels, normalisation, input and output descriptions.

Written with MediaPipe's metadata writers (``mediapipe.tasks.python.metadata``), so a
retailer's Android app, or a MediaPipe Tasks ``ImageClassifier``, opens the same
``model.tflite`` the kiosk runs, with its labels.

Metadata readers feed the model the image's raw RGB pixels, resized to the input size; a
crop is theirs to ask for (MediaPipe's ``region_of_interest``: give it
:func:`tillsight.preprocess.input_region`). That gives tillsight's input only when the
model's input quantization maps each pixel value to itself (within one level) and the model
reads RGB; :func:`add_metadata` measures that and the report says so.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import struct
import sys
import types
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tillsight.errors import ConversionError, summarize
from tillsight.preprocess import ColorOrder, InputSpec, ResizeMode

__all__ = ["MetadataReport", "add_metadata"]

logger = logging.getLogger(__name__)

# What the writers need of _pywrap_metadata_version: the oldest metadata parser that can read
# what an image classifier's metadata uses (image properties, normalisation, axis labels,
# stats), all of which are in the first metadata schema version.
_MINIMUM_PARSER_VERSION = "1.0.0"


@dataclasses.dataclass(frozen=True)
class MetadataReport:
    """What was written into the model and whether metadata readers see tillsight's input.

    Attributes:
        writer: The library that wrote it, with its version.
        labels: How many labels the model file now carries.
        raw_pixel_input: True when a reader feeding raw RGB pixels gives the model the same
            tensor as tillsight (before resizing).
        max_input_error: Largest difference, in quantization levels, between a raw pixel and
            tillsight's input tensor value for it.
        note: Why readers may see other input than tillsight (empty when they do not).
    """

    writer: str
    labels: int
    raw_pixel_input: bool
    max_input_error: int
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _metadata_writers() -> tuple[Any, str]:
    """MediaPipe's metadata writer module, or ConversionError naming the extra."""
    try:
        import mediapipe
    except ImportError as exc:
        raise ConversionError('TFLite metadata needs mediapipe: pip install "tillsight[convert]"') from exc
    name = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
    try:
        __import__(name)
    except ImportError:  # mediapipe >= 0.10.30 wheels ship the writers without this compiled helper
        _provide_parser_version(name)
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer

    return metadata_writer, f"mediapipe {mediapipe.__version__}"


def _provide_parser_version(name: str) -> None:
    parts = name.split(".")
    for depth in range(3, len(parts)):
        package = ".".join(parts[:depth])
        if package not in sys.modules:
            module = types.ModuleType(package)
            module.__path__ = []  # a package, so its children import
            sys.modules[package] = module
    helper = types.ModuleType(name)
    helper.GetMinimumMetadataParserVersion = lambda metadata: _MINIMUM_PARSER_VERSION
    sys.modules[name] = helper
    setattr(sys.modules[".".join(parts[:-1])], parts[-1], helper)


def input_error(spec: InputSpec) -> int:
    """Largest difference in levels between a raw 0-255 pixel and its quantized model input."""
    if spec.dtype != "uint8":
        return 255
    pixels = np.arange(256, dtype=np.float64)
    worst = 0
    for mean, std in zip(spec.mean, spec.std, strict=True):
        levels = np.clip(np.round((pixels - mean) / std / spec.scale + spec.zero_point), 0, 255)
        worst = max(worst, int(np.max(np.abs(levels - pixels))))
    return worst


def _note(spec: InputSpec, error: int) -> str:
    notes = []
    if spec.dtype != "uint8":
        notes.append(f"the model's input is {spec.dtype}, readers feed uint8 pixels")
    elif error > 1:
        notes.append(f"the input quantization moves pixels by up to {error} levels")
    if spec.color_order is not ColorOrder.RGB:
        notes.append("the model reads BGR, readers feed RGB")
    if spec.resize is ResizeMode.LETTERBOX:
        notes.append("tillsight letterboxes, readers stretch the whole image")
    elif spec.resize is not ResizeMode.STRETCH or spec.crop < 1.0:
        notes.append("readers see the whole image unless given tillsight.preprocess.input_region as their region of interest")
    return "; ".join(notes)


def add_metadata(model_path: Path, labels: Sequence[str], spec: InputSpec, description: str) -> MetadataReport:
    """Write TFLite Metadata (labels, normalisation, descriptions) into ``model_path`` in place.

    Args:
        model_path: The integer model, rewritten with its metadata.
        labels: Class labels in output order.
        spec: How tillsight feeds the model: mean and std in pixel units, quantization.
        description: The model's description in the metadata.

    Raises:
        ConversionError: mediapipe is missing, or its writer rejects the model.
    """
    metadata_writer, writer = _metadata_writers()
    try:  # what MediaPipe's image_classifier.MetadataWriter.create writes, with tillsight's description
        created = metadata_writer.MetadataWriter(model_path.read_bytes())
        created.add_general_info("ImageClassifier", description)
        created.add_image_input(
            [float(v) for v in spec.mean],
            [float(v) for v in spec.std],
            name="image",
            description=f"{spec.width}x{spec.height} RGB product photo",
        )
        created.add_classification_output(
            metadata_writer.Labels().add(list(labels)), name="score", description="Score of each product label"
        )
        model_with_metadata, _ = created.populate()
        del created  # its temporary folder goes now, not in a finalizer at interpreter exit
    except Exception as exc:  # the writers raise ValueError, RuntimeError and flatbuffer errors
        raise ConversionError(f"writing TFLite metadata failed ({summarize(exc)}); report it with the model") from exc
    model_path.write_bytes(without_zip_times(model_with_metadata))
    error = input_error(spec)
    note = _note(spec, error)
    return MetadataReport(
        writer, len(labels), raw_pixel_input=spec.dtype == "uint8" and error <= 1, max_input_error=error, note=note
    )


_LOCAL_HEADER, _CENTRAL_HEADER = b"PK\x03\x04", b"PK\x01\x02"
_ZIP_EPOCH_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01, the earliest a zip entry can say; time 00:00:00


def without_zip_times(model: bytes) -> bytes:
    """The model with every packed file's modification time set to the zip epoch.

    The metadata packs the labels as a zip archive after the flatbuffer, and a zip entry records
    when it was written: the same conversion gave files a few bytes apart. With a fixed time the
    same model and labels give the same bytes (and the same sha256 in the manifest).
    """
    data = bytearray(model)
    with zipfile.ZipFile(io.BytesIO(model)) as archive:
        infos = archive.infolist()
        central = archive.start_dir
    for info in infos:
        if data[info.header_offset : info.header_offset + 4] != _LOCAL_HEADER:
            raise ConversionError("the TFLite metadata's packed files are not where their zip directory says")
        struct.pack_into("<HH", data, info.header_offset + 10, 0, _ZIP_EPOCH_DATE)
    for _ in infos:
        if data[central : central + 4] != _CENTRAL_HEADER:
            raise ConversionError("the TFLite metadata's zip directory is malformed")
        struct.pack_into("<HH", data, central + 12, 0, _ZIP_EPOCH_DATE)
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, central + 28)
        central += 46 + name_length + extra_length + comment_length
    return bytes(data)
