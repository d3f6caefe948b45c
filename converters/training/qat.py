"""Quantization-aware fine-tuning on Keras 3 (TensorFlow Model Optimization's QAT needs Keras 2).

:func:`quantization_aware` rebuilds a float classifier so that, while it fine-tunes, it
computes what the int8 TFLite model will compute:

* **Weights**: every Conv2D, DepthwiseConv2D and Dense kernel is fake-quantized the way
  the TFLite converter will store it: symmetric, narrow range, per output channel (per
  tensor when the profile says so). Per-channel symmetric quantization does not change
  when a channel is multiplied by a constant, so quantizing a kernel before its
  BatchNormalization gives exactly the integers the converter gets from the folded kernel,
  provided BatchNormalization uses its moving statistics: those layers are frozen.
* **Activations**: a per-tensor fake-quantizer follows each layer whose output TFLite keeps
  as its own int8 tensor (a convolution not followed by BatchNormalization or a fusable ReLU,
  a BatchNormalization or Add not followed by a fusable ReLU, a ReLU or other activation).
  Its range starts at the min/max seen on calibration images, as the converter would set
  it, then follows a moving average of each training batch's min/max.
* The model's own random augmentation layers become identities: the teacher's cached
  outputs are for the photo as given, so the student must see that photo.

Gradients pass straight through the rounding (TensorFlow's fake-quant ops). For
conversion, :func:`for_conversion` switches the weight simulation off (the converter
quantizes the float weights to the same integers) and keeps the activation quantizers:
``TFLiteConverter`` reads their learned ranges from the FakeQuant ops instead of
calibrating those tensors.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from tillsight.bundle import OutputActivation
from tillsight.errors import ConversionError
from tillsight.profiles import DistillationOptions

from .._tf import keras, tf
from .finetune import TrainingSchedule
from .guard import HeldOutGuard, held_out_indices

__all__ = ["ActivationQuantizer", "QuantizationAwareModel", "quantization_aware", "quantization_aware_finetune"]

logger = logging.getLogger(__name__)

_FIXED_RANGE_ACTIVATIONS = {"softmax", "sigmoid", "hard_sigmoid", "log_softmax"}  # int8 kernels fix these scales
_FUSABLE_ACTIVATIONS = {"relu", "relu6"}


class ActivationQuantizer(keras.layers.Layer):
    """Per-tensor int8 fake quantization with a moving-average min/max range."""

    def __init__(self, momentum: float = 0.99, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.momentum = momentum
        self.observing = False  # eager calls only: widen the range to what is seen, do not quantize

    def build(self, input_shape: Any) -> None:
        self.range_min = self.add_weight(shape=(), initializer="zeros", trainable=False, name="range_min")
        self.range_max = self.add_weight(shape=(), initializer="zeros", trainable=False, name="range_max")

    def call(self, inputs: Any, training: bool = False) -> Any:
        low, high = tf.minimum(tf.reduce_min(inputs), 0.0), tf.maximum(tf.reduce_max(inputs), 0.0)
        if self.observing:
            self.range_min.assign(tf.minimum(self.range_min, low))
            self.range_max.assign(tf.maximum(self.range_max, high))
            return inputs
        if training:
            m = self.momentum
            self.range_min.assign(m * self.range_min + (1.0 - m) * low)
            self.range_max.assign(m * self.range_max + (1.0 - m) * high)
        return tf.quantization.fake_quant_with_min_max_vars(inputs, self.range_min, self.range_max, num_bits=8)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum}


def fake_quantize_kernel(kernel: Any, per_channel: bool, depthwise: bool = False) -> Any:
    """A kernel rounded to the int8 grid TFLite stores it on, with straight-through gradients."""
    if not per_channel:
        bound = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(kernel)), 1e-12))
        return tf.quantization.fake_quant_with_min_max_vars(kernel, -bound, bound, num_bits=8, narrow_range=True)
    shape = tf.shape(kernel)
    channels = tf.reshape(kernel, tf.concat([shape[:-2], [-1]], 0)) if depthwise else kernel  # TFLite: in * multiplier
    axes = list(range(len(kernel.shape) - (2 if depthwise else 1)))
    bound = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(channels), axis=axes), 1e-12))
    rounded = tf.quantization.fake_quant_with_min_max_vars_per_channel(channels, -bound, bound, num_bits=8, narrow_range=True)
    return tf.reshape(rounded, shape) if depthwise else rounded


class _SimulatedKernel:
    """Mixin: the layer's ``kernel`` reads as its int8-rounded value while ``simulate`` is on."""

    simulate = True
    per_channel = True
    depthwise = False

    def _rounded(self, value: Any) -> Any:
        return fake_quantize_kernel(value, self.per_channel, self.depthwise) if self.simulate else value


class _Conv2D(_SimulatedKernel, keras.layers.Conv2D):
    @property
    def kernel(self) -> Any:
        return self._rounded(keras.layers.Conv2D.kernel.fget(self))


class _Dense(_SimulatedKernel, keras.layers.Dense):
    @property
    def kernel(self) -> Any:
        return self._rounded(keras.layers.Dense.kernel.fget(self))


class _DepthwiseConv2D(_SimulatedKernel, keras.layers.DepthwiseConv2D):
    depthwise = True

    @property
    def kernel(self) -> Any:  # a plain attribute in Keras's layer: kept under another name
        return self._rounded(self._float_kernel)

    @kernel.setter
    def kernel(self, value: Any) -> None:
        self._float_kernel = value


_SIMULATED = {keras.layers.Conv2D: _Conv2D, keras.layers.DepthwiseConv2D: _DepthwiseConv2D, keras.layers.Dense: _Dense}


@dataclasses.dataclass
class QuantizationAwareModel:
    """A model rebuilt to simulate int8, and what was put in it."""

    model: Any  # keras.Model
    weight_layers: list[Any]
    activation_quantizers: list[Any]

    def observe_ranges(self, images: np.ndarray, batch_size: int = 32) -> None:
        """Set every activation range to the min/max over ``images`` (float model input)."""
        for quantizer in self.activation_quantizers:
            quantizer.range_min.assign(0.0)
            quantizer.range_max.assign(0.0)
            quantizer.observing = True
        simulate = [layer.simulate for layer in self.weight_layers]
        self.set_weight_simulation(False)
        try:
            for start in range(0, len(images), batch_size):
                self.model(images[start : start + batch_size], training=False)
        finally:
            for quantizer in self.activation_quantizers:
                quantizer.observing = False
            for layer, value in zip(self.weight_layers, simulate, strict=True):
                layer.simulate = value

    def set_weight_simulation(self, on: bool) -> None:
        """Round kernels while training (on); hand the converter float kernels (off)."""
        for layer in self.weight_layers:
            layer.simulate = on

    def report(self) -> dict[str, Any]:
        """Counts and the learned ranges, for the manifest."""
        return {
            "weight_layers": len(self.weight_layers),
            "activation_quantizers": len(self.activation_quantizers),
            "activation_ranges": {
                q.name: [round(float(q.range_min.numpy()), 4), round(float(q.range_max.numpy()), 4)]
                for q in self.activation_quantizers
            },
        }


def quantization_aware(model: Any, per_channel: bool = True) -> QuantizationAwareModel:
    """Rebuild a functional or sequential Keras model to simulate full-int8 inference.

    Args:
        model: The float model (left unchanged; its weights are copied).
        per_channel: Weights per output channel (as the profile's quantization says).

    Returns:
        The rebuilt model with the same weights; call :meth:`QuantizationAwareModel.observe_ranges` before training.

    Raises:
        ConversionError: A subclassed model (its graph cannot be rebuilt).
    """
    functional = _as_functional(model)
    quantized_outputs = _quantized_outputs(functional)
    pairs: list[tuple[Any, Any]] = []
    origin: dict[int, Any] = {}
    weight_layers: list[Any] = []
    quantizers: list[Any] = []

    def clone_layer(layer: Any) -> Any:
        if _is_augmentation(layer):  # the teacher's cached outputs are for the photo as given: the student must see it too
            return keras.layers.Identity(name=layer.name)
        cls = _SIMULATED.get(type(layer), type(layer))
        clone = cls.from_config(layer.get_config())
        if cls is not type(layer):
            clone.per_channel = per_channel
            weight_layers.append(clone)
        pairs.append((layer, clone))
        origin[id(clone)] = layer
        return clone

    def call_layer(layer: Any, *args: Any, **kwargs: Any) -> Any:
        outputs = layer(*args, **kwargs)
        if id(origin.get(id(layer))) in quantized_outputs:
            quantizer = ActivationQuantizer(name=f"{layer.name}_int8_range")
            quantizers.append(quantizer)
            outputs = quantizer(outputs)
        return outputs

    clone = keras.models.clone_model(functional, clone_function=clone_layer, call_function=call_layer, recursive=True)
    for original, copy in pairs:
        copy.set_weights(original.get_weights())
        if isinstance(copy, keras.layers.BatchNormalization):  # after the copy: freezing reorders get_weights()
            copy.trainable = False  # moving statistics: what the converter folds, and what keeps per-channel scales exact
    logger.info("QAT: %d kernels and %d activation ranges simulated", len(weight_layers), len(quantizers))
    return QuantizationAwareModel(clone, weight_layers, quantizers)


def _is_augmentation(layer: Any) -> bool:
    """Keras's random augmentation layers (RandomFlip, RandomRotation...): identity at inference."""
    return type(layer).__name__.startswith("Random") and type(layer).__module__.startswith("keras.")


def _as_functional(model: Any) -> Any:
    if isinstance(model, keras.Sequential):
        return keras.Model(model.inputs, model.outputs, name=model.name)
    if not hasattr(model, "_nodes_by_depth"):
        raise ConversionError(
            f"model '{model.name}' is a subclassed Keras model, whose graph cannot be rebuilt for quantization-aware "
            "training; rebuild it as a functional model or drop --qat"
        )
    return model


def _layers(model: Any) -> list[Any]:
    found = []
    for layer in model.layers:
        found.extend(_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return found


def _activation_name(layer: Any) -> str:
    if isinstance(layer, keras.layers.ReLU):
        plain = float(layer.negative_slope) == 0.0 and float(layer.threshold) == 0.0
        return "relu6" if plain and layer.max_value == 6 else ("relu" if plain and layer.max_value is None else "other")
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "linear") if activation is not None else "linear"


def _quantized_outputs(model: Any) -> set[int]:
    """Ids of the layers whose output TFLite keeps as a separate int8 tensor with a range of its own."""
    outputs = {id(tensor._keras_history[0]) for tensor in model.outputs}
    chosen = set()
    for layer in _layers(model):
        if id(layer) in outputs or isinstance(layer, keras.layers.InputLayer):
            continue
        kind = _kind(layer)
        if kind is None:
            continue
        consumers = [node.operation for node in layer._outbound_nodes]
        if consumers and all(_fuses(kind, layer, consumer) for consumer in consumers):
            continue
        chosen.add(id(layer))
    return chosen


def _kind(layer: Any) -> str | None:
    """How a layer's output is quantized: ``linear`` (a fusion may follow), ``activated``, or None (leave to calibration)."""
    name = _activation_name(layer)
    if name in _FIXED_RANGE_ACTIVATIONS:
        return None
    if isinstance(
        layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense, keras.layers.BatchNormalization)
    ):
        return "linear" if name == "linear" else "activated"
    if isinstance(layer, keras.layers.Add):
        return "linear"
    if isinstance(layer, (keras.layers.ReLU, keras.layers.Activation)) and name != "linear":
        return "activated"
    return None


def _fuses(kind: str, layer: Any, consumer: Any) -> bool:
    """Whether TFLite fuses ``consumer`` into ``layer``, leaving no tensor between them."""
    if kind != "linear":
        return False
    if isinstance(consumer, keras.layers.BatchNormalization):
        return isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense))
    return (
        isinstance(consumer, (keras.layers.ReLU, keras.layers.Activation)) and _activation_name(consumer) in _FUSABLE_ACTIVATIONS
    )


def quantization_aware_finetune(
    model: Any,
    photos: Any,
    calibration: np.ndarray,
    teacher: Any,
    activation: OutputActivation,
    distillation: DistillationOptions,
    schedule: TrainingSchedule,
    per_channel: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Fine-tune a float model as it will compute in int8, learning from the teacher's cached outputs.

    Args:
        model: The float model (left unchanged).
        photos: Training photos (labels optional).
        calibration: Preprocessed calibration images: the starting activation ranges.
        teacher: A :class:`~.distillation.TeacherCache` built on ``photos`` (the original float model).
        activation: What ``model`` outputs (``softmax``, ``softmax-added``, ``sigmoid``).
        distillation: Alpha (weight of the label loss on labeled photos) and temperature.
        schedule: Epochs, rate, progress.
        per_channel: Weights per output channel, as the profile quantizes them.

    Returns:
        The model to convert (float kernels, activation quantizers with the learned ranges) and a report.
    """
    from ..weight_rounding import compensated_weights
    from .distillation import train_student

    with compensated_weights(model, calibration, per_channel) as rounding:  # GPTQ's integers: where QAT starts
        aware = quantization_aware(model, per_channel)
    aware.observe_ranges(calibration)
    guard, photos, teacher = _held_out(aware.model, photos, teacher)
    report = train_student(aware.model, teacher, photos, activation, distillation, dataclasses.replace(schedule, desc="QAT"))
    report.update(guard.settle(aware.model) if guard is not None else {})
    aware.set_weight_simulation(False)  # the converter rounds the float kernels to the same integers
    return aware.model, {**report, **aware.report(), "started_from": rounding.to_dict()}


def _held_out(aware_model: Any, photos: Any, teacher: Any) -> tuple[HeldOutGuard | None, Any, Any]:
    """The guard that keeps the compensated start when training makes the int8 simulation agree less with the
    float model on held-out photos, and the photos and teacher outputs left to train on."""
    split = held_out_indices(len(photos.labels))
    if split is None:
        return None, photos, teacher
    held, kept = split
    guard = HeldOutGuard.before_training(
        aware_model, photos.subset(held), teacher.subset(held).top1(), "quantization-aware fine-tuning"
    )
    return guard, photos.subset(kept), teacher.subset(kept)
