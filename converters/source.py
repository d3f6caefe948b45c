"""Source models: a Keras classifier in any of the forms data teams hand over.

Accepted: a Keras 3 ``.keras`` file, a legacy Keras 2 ``.h5`` file, a TensorFlow
SavedModel directory, or an in-memory ``keras.Model``. Files are loaded with Keras safe
mode on, so a file cannot run arbitrary Python code (a ``Lambda`` layer is refused unless
the caller explicitly allows unsafe loading). Preprocessing and augmentation layers inside
the model are kept; augmentation is inactive at inference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tillsight.bundle import OutputActivation, sha256_of_file
from tillsight.errors import ModelLoadError, summarize

from ._tf import keras, tf
from .input_checks import model_file_kind

__all__ = ["PROBE_IMAGES", "SourceModel", "load_source_model", "output_activation"]

logger = logging.getLogger(__name__)

PROBE_IMAGES = 16  # images used to tell a model's probabilities from its logits


@dataclasses.dataclass(frozen=True)
class SourceModel:
    """A loaded float classifier with one NHWC image input and one class-score output."""

    description: str  # the path, or "in-memory model 'name'"
    format: str  # keras | h5 | saved_model | in-memory
    sha256: str
    input_size: tuple[int | None, int | None]  # (height, width); None where the model takes any size
    num_classes: int
    call: Callable[[tf.Tensor], tf.Tensor]  # float32 NHWC batch -> scores, inference mode
    trackable: Any  # what owns the variables (for the TFLite converter)
    keras_model: keras.Model | None = None

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Float model outputs for a float32 NHWC batch."""
        return np.asarray(self.call(tf.constant(batch, dtype=tf.float32)))

    def with_model(self, model: keras.Model, note: str) -> SourceModel:
        """The same source (file, format, hash) carried by a changed Keras model, e.g. after pruning."""
        return _from_keras(model, f"{self.description} ({note})", self.format, self.sha256)

    def export_saved_model(self, height: int, width: int, add_softmax: bool, directory: Path) -> Path:
        """Write a SavedModel with a static ``[1, height, width, 3]`` float32 input.

        Keras's own export tracks the model's variables so that converters can freeze them
        (a bare ``tf.function`` over a Keras 3 model leaves READ_VARIABLE ops behind), and
        augmentation layers are traced in inference mode, where they do nothing.

        Args:
            height: Input height.
            width: Input width.
            add_softmax: Append a softmax (the model outputs logits).
            directory: Where to write the SavedModel (must not exist or be empty).

        Returns:
            ``directory``.
        """
        call = self.call

        def serve(image: tf.Tensor) -> tf.Tensor:
            scores = call(image)
            return tf.nn.softmax(scores) if add_softmax else scores

        archive = keras.export.ExportArchive()
        archive.track(self.trackable)
        archive.add_endpoint(
            "serving_default", serve, input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32, name="image")]
        )
        archive.write_out(str(directory), verbose=False)
        return directory


def load_source_model(model: str | Path | keras.Model, allow_unsafe: bool = False) -> SourceModel:
    """Load and check a Keras classifier.

    Args:
        model: ``.keras`` / ``.h5`` path, SavedModel directory, or a ``keras.Model``.
        allow_unsafe: Disable Keras safe mode (only for files you trust).

    Returns:
        The source model.

    Raises:
        ModelLoadError: Missing, corrupt, unsafe or not a single-input image classifier.
    """
    if keras.backend.backend() != "tensorflow":
        raise ModelLoadError(
            f"KERAS_BACKEND is '{keras.backend.backend()}'; conversion needs the TensorFlow backend: set KERAS_BACKEND=tensorflow"
        )
    if isinstance(model, keras.Model):
        return _from_keras(model, f"in-memory model '{model.name}'", "in-memory", _sha256_of_keras_model(model))
    path = Path(model)
    kind = model_file_kind(path)
    if kind == "saved_model":
        return _from_saved_model(path)
    try:
        keras_model = keras.models.load_model(path, compile=False, safe_mode=not allow_unsafe)
    except Exception as exc:  # Keras raises ValueError, KeyError, OSError, ... for bad files
        text = str(exc)
        if "safe_mode" in text or "Lambda" in text or "unsafe" in text.lower():
            raise ModelLoadError(
                f"{path} contains a Lambda layer or other Python code and safe mode refuses it; "
                "if you trust the file, pass --unsafe-load (allow_unsafe_model=True)"
            ) from exc
        raise ModelLoadError(f"cannot load {path} as a Keras model ({summarize(exc, limit=200)}); is the file corrupt?") from exc
    if not isinstance(keras_model, keras.Model):
        raise ModelLoadError(f"{path} does not hold a Keras model")
    return _from_keras(keras_model, str(path), kind, sha256_of_file(path))


def _sha256_of_keras_model(model: keras.Model) -> str:
    digest = hashlib.sha256(model.to_json().encode("utf-8"))
    for weight in model.weights:
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()


def _check_shapes(description: str, input_shape: Any, output_shape: Any) -> tuple[tuple[int | None, int | None], int]:
    input_shape, output_shape = tuple(input_shape), tuple(output_shape)
    if len(input_shape) != 4 or input_shape[-1] != 3:
        raise ModelLoadError(
            f"{description} takes input of shape {input_shape}; tillsight needs one NHWC image input "
            "with 3 channels, (batch, height, width, 3)"
        )
    if len(output_shape) != 2 or output_shape[-1] is None or output_shape[-1] < 2:
        raise ModelLoadError(
            f"{description} gives output of shape {output_shape}; tillsight needs one class-score "
            "output (batch, classes) with at least 2 classes"
        )
    return (input_shape[1], input_shape[2]), int(output_shape[-1])


def _from_keras(model: keras.Model, description: str, kind: str, sha256: str) -> SourceModel:
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError) as exc:
        raise ModelLoadError(f"{description} has no defined input; build it with keras.Input(shape=...)") from exc
    if not inputs or len(inputs) != 1 or len(outputs) != 1:
        raise ModelLoadError(
            f"{description} has {len(inputs or [])} inputs and {len(outputs or [])} outputs; "
            "tillsight converts single-input, single-output classifiers"
        )
    input_size, num_classes = _check_shapes(description, inputs[0].shape, outputs[0].shape)
    if not str(inputs[0].dtype).startswith("float"):
        model = _with_float_input(model, description)

    def call(images: tf.Tensor) -> tf.Tensor:
        return model(images, training=False)

    return SourceModel(description, kind, sha256, input_size, num_classes, call, model, model)


def _with_float_input(model: keras.Model, description: str) -> keras.Model:
    """The same model and weights taking float32 pixels instead of an integer input.

    A model declared with ``keras.Input(dtype="uint8")`` starts with a float-to-uint8 cast
    that has no int8 kernel; the pixels tillsight feeds are integral 0-255 values anyway.
    """
    float_input = keras.Input(shape=model.inputs[0].shape[1:], dtype="float32", batch_size=None)
    try:
        clone = keras.models.clone_model(model, input_tensors=float_input)
        clone.set_weights(model.get_weights())
    except Exception as exc:  # clone_model refuses some custom layers
        raise ModelLoadError(
            f"{description} takes {model.inputs[0].dtype} input and cannot be rebuilt with a float input "
            f"({exc}); declare keras.Input(dtype='float32') and keep the Rescaling layer"
        ) from exc
    logger.info("%s takes %s input: converting a float32-input copy with the same weights", description, model.inputs[0].dtype)
    return clone


def _sha256_of_directory(path: Path) -> str:
    digest = hashlib.sha256()
    for file_path in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file_path.relative_to(path)).encode("utf-8"))
        digest.update(sha256_of_file(file_path).encode("ascii"))
    return digest.hexdigest()


def _from_saved_model(path: Path) -> SourceModel:
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # TensorFlow raises many types for broken SavedModels
        raise ModelLoadError(f"cannot load SavedModel {path}: {summarize(exc, limit=200)}") from exc
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise ModelLoadError(f"SavedModel {path} has no 'serving_default' signature; export it with one")
    input_specs = signature.structured_input_signature[1]
    output_specs = signature.structured_outputs
    if len(input_specs) != 1 or len(output_specs) != 1:
        raise ModelLoadError(
            f"SavedModel {path} has {len(input_specs)} inputs and {len(output_specs)} outputs; "
            "tillsight converts single-input, single-output classifiers"
        )
    ((input_name, input_spec),) = input_specs.items()
    ((output_name, output_spec),) = output_specs.items()
    input_size, num_classes = _check_shapes(f"SavedModel {path}", input_spec.shape, output_spec.shape)
    graph = signature.graph.as_graph_def()
    random_ops = sorted(
        {node.op for function in graph.library.function for node in function.node_def if "Random" in node.op}
        | {node.op for node in graph.node if "Random" in node.op}
    )
    if random_ops:
        raise ModelLoadError(
            f"SavedModel {path} runs random ops at inference ({', '.join(random_ops[:2])}): augmentation layers "
            "were exported in training mode; convert the .keras file instead, or export without augmentation layers"
        )

    def call(images: tf.Tensor) -> tf.Tensor:
        return signature(**{input_name: tf.cast(images, input_spec.dtype)})[output_name]

    return SourceModel(str(path), "saved_model", _sha256_of_directory(path), input_size, num_classes, call, loaded)


def output_activation(source: Any, calibration: np.ndarray) -> OutputActivation:
    """What a model outputs, told from a few preprocessed images: ``softmax``, ``sigmoid`` or ``softmax-added`` (logits).

    Args:
        source: Anything with ``predict(images) -> scores`` (a SourceModel).
        calibration: Preprocessed images; the first 16 are used.
    """
    outputs = source.predict(calibration[:PROBE_IMAGES])
    in_unit_range = bool(np.all(outputs >= -1e-6) and np.all(outputs <= 1.0 + 1e-6))
    if in_unit_range and np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-3):
        return OutputActivation.SOFTMAX
    if in_unit_range:
        return OutputActivation.SIGMOID
    return OutputActivation.SOFTMAX_ADDED
