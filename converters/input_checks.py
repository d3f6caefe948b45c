"""The inputs of a conversion checked before TensorFlow is imported (no TensorFlow here).

Importing TensorFlow and loading a model take 5-20 s; a missing file, a photo given as the model,
an empty folder, a labels file that does not fit the model or too few calibration photos must not
wait for that. :func:`check_conversion_inputs` raises the same one-line errors ``convert`` would,
from what can be told by reading file headers and listing folders.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tillsight.datasets import ImageSet, check_labels, read_image_set, read_labels
from tillsight.errors import CalibrationError, DataError, ModelLoadError, OptionsError
from tillsight.profiles import BackendKind, Precision, Profile
from tillsight.staging import check_output_folder

__all__ = ["model_file_kind", "check_conversion_inputs"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def model_file_kind(path: Path) -> str:
    """What kind of model file ``path`` is, from its header: ``saved_model``, ``keras`` or ``h5``.

    Raises:
        ModelLoadError: Missing, a folder that is no SavedModel, or not a Keras file.
    """
    if not path.exists():
        raise ModelLoadError(f"model path {path} does not exist")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ModelLoadError(f"{path} is a directory but not a TensorFlow SavedModel (no saved_model.pb)")
        return "saved_model"
    with open(path, "rb") as handle:
        head = handle.read(8)
    if zipfile.is_zipfile(path):
        return "keras"
    if head == HDF5_MAGIC:
        return "h5"
    if path.suffix in (".keras", ".h5", ".hdf5"):
        raise ModelLoadError(f"{path} is not a valid {path.suffix} model file (corrupt or truncated); export it again")
    raise ModelLoadError(f"{path} is not a Keras model: expected a .keras file, a .h5 file or a SavedModel directory")


def check_conversion_inputs(
    model: Any,
    profile: Profile,
    calibration: str | Path | None,
    evaluation: str | Path | None,
    labels: str | Path | Sequence[str] | None,
    finetune: str | Path | None,
    out: str | Path | None = None,
) -> None:
    """Raise what ``convert`` would raise for these inputs, without TensorFlow.

    Args:
        model: The model argument of ``convert`` (an in-memory model is not checked here).
        profile: The profile with the options applied (its calibration minimum).
        calibration, evaluation, labels, finetune: As given to ``convert``.
        out: The output folder; the bundle goes to ``out/<profile name>/`` (None: not checked).

    Raises:
        ModelLoadError, DataError, CalibrationError: The first problem found.
        OptionsError: No calibration photos for a profile that quantizes, or an output folder that cannot be written.
    """
    if out is not None:
        check_output_folder(Path(out) / profile.name)
    label_names = (
        check_labels(labels, "the labels") if isinstance(labels, (list, tuple)) else (read_labels(labels) if labels else None)
    )
    if isinstance(model, (str, Path)):
        path = Path(model)
        if model_file_kind(path) == "keras" and label_names is not None:
            outputs = keras_file_outputs(path)
            if outputs is not None and outputs != len(label_names):
                raise DataError(
                    f"{len(label_names)} labels for a model with {outputs} outputs ({path}); "
                    "the labels file needs one line per output"
                )
    if calibration is None:
        if quantizes(profile):
            raise OptionsError(
                f"profile '{profile.name}' quantizes to int8 ({profile.backend.value}): pass --calibration DATA, "
                f"{profile.quantization.calibration_images} or so photos like the ones the kiosk will see"
            )
    else:
        _check_calibration_count(read_image_set(calibration, label_names), profile)
    if evaluation is not None and not read_image_set(evaluation, label_names).labeled:
        raise DataError(f"evaluation data {evaluation} has no labels: use a class folder or a list file")
    if finetune is not None and not Path(finetune).exists():
        raise DataError(
            f"fine-tuning data {finetune} does not exist (expected a class folder, a list file or a folder of frames)"
        )


def quantizes(profile: Profile) -> bool:
    """Whether the profile's model is integer-quantized (and so needs calibration photos)."""
    return profile.backend is not BackendKind.OPENVINO or profile.openvino.precision is Precision.INT8


def _check_calibration_count(image_set: ImageSet, profile: Profile) -> None:
    needed = profile.quantization.min_calibration_images
    missing = [item.path for item in image_set.images if not item.path.is_file()]
    present = len(image_set.images) - len(missing)
    if missing and present < needed:
        raise CalibrationError(
            f"calibration data {image_set.path} lists {len(image_set.images)} images but {len(missing)} do not exist "
            f"(the first: {missing[0]}); profile '{profile.name}' needs at least {needed}: fix the paths (relative to the "
            "list file's folder) or accept fewer with --min-calibration N"
        )
    if len(image_set.images) < needed:
        raise CalibrationError(
            f"calibration data {image_set.path} has {len(image_set.images)} image files; profile '{profile.name}' "
            f"needs at least {needed}: add images, or accept fewer with --min-calibration N "
            "(ConversionOptions.min_calibration_images; profile key quantization.min_calibration_images)"
        )


def keras_file_outputs(path: Path) -> int | None:
    """The output width of a ``.keras`` file whose output layer is a Dense layer, read from its config; else None."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (KeyError, OSError, ValueError, zipfile.BadZipFile):
        return None
    inner = config.get("config", {}) if isinstance(config, dict) else {}
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(layers, list) or not layers:
        return None
    outputs = inner.get("output_layers")
    if isinstance(outputs, list) and outputs and isinstance(outputs[0], str):  # one output: ["name", 0, 0]
        outputs = [outputs]
    if config.get("class_name") == "Sequential":
        last = layers[-1]
    elif isinstance(outputs, list) and len(outputs) == 1 and isinstance(outputs[0], list) and outputs[0]:
        last = next((layer for layer in layers if isinstance(layer, dict) and layer.get("name") == outputs[0][0]), None)
    else:
        return None
    if not isinstance(last, dict) or last.get("class_name") != "Dense":
        return None
    units = last.get("config", {}).get("units")
    return units if isinstance(units, int) else None
