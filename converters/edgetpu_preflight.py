"""Edge TPU preflight: which ops of a ``.tflite`` model can map to the Edge TPU, without the compiler.

Reads the flatbuffer (LiteRT's generated schema, no TensorFlow) and applies the rules of
Coral's "TensorFlow models on the Edge TPU": every activation tensor int8/uint8, static
shapes, only the three innermost dimensions larger than 1, and ops from the supported
list (with their documented limitations). The compiler maps ops in order until the first
one it cannot map; that op and everything after it run on the CPU. The report gives that
first op, the share of ops and of multiply-accumulates expected on the TPU, and the
parameter size against the ~8 MB on-chip cache. :func:`check` (``tillsight edgetpu-check``)
runs it on a ``.tflite`` file or a bundle.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from tillsight.bundle import read_bundle
from tillsight.errors import BundleError

__all__ = ["EDGETPU_CACHE_BYTES", "SUPPORTED_OPS", "OpVerdict", "PreflightReport", "check", "preflight"]

EDGETPU_CACHE_BYTES = 8 * 1024 * 1024

#: Ops Coral documents as supported by the Edge TPU compiler (v16).
SUPPORTED_OPS = frozenset(
    {
        "ADD",
        "AVERAGE_POOL_2D",
        "CONCATENATION",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "EXPAND_DIMS",
        "FULLY_CONNECTED",
        "HARD_SWISH",
        "L2_NORMALIZATION",
        "LOGISTIC",
        "LSTM",
        "MAXIMUM",
        "MAX_POOL_2D",
        "MEAN",
        "MINIMUM",
        "MUL",
        "PACK",
        "PAD",
        "PRELU",
        "QUANTIZE",
        "REDUCE_MAX",
        "REDUCE_MIN",
        "RELU",
        "RELU6",
        "RELU_N1_TO_1",
        "RESHAPE",
        "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR",
        "RSQRT",
        "SLICE",
        "SOFTMAX",
        "SPACE_TO_DEPTH",
        "SPLIT",
        "SQUARED_DIFFERENCE",
        "SQUEEZE",
        "STRIDED_SLICE",
        "SUB",
        "SUM",
        "TANH",
        "TRANSPOSE",
        "TRANSPOSE_CONV",
    }
)
_NO_FUSED_ACTIVATION = frozenset({"AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION"})
_INTEGER_ACTIVATIONS = ("INT8", "UINT8")


@dataclasses.dataclass(frozen=True)
class OpVerdict:
    """One op in execution order."""

    index: int
    op: str
    version: int
    maps: bool  # can run on the Edge TPU by itself
    reason: str  # why not, or ""
    macs: int


@dataclasses.dataclass(frozen=True)
class PreflightReport:
    """What the Edge TPU compiler is expected to do with a model."""

    ops: tuple[OpVerdict, ...]
    parameter_bytes: int

    @property
    def first_unmapped(self) -> OpVerdict | None:
        """The op that splits the graph (it and all later ops run on the CPU)."""
        return next((verdict for verdict in self.ops if not verdict.maps), None)

    @property
    def ops_on_tpu(self) -> int:
        first = self.first_unmapped
        return len(self.ops) if first is None else first.index

    @property
    def fully_mapped(self) -> bool:
        return self.first_unmapped is None

    def summary(self) -> str:
        """One line a person can act on."""
        first = self.first_unmapped
        total_macs = sum(v.macs for v in self.ops) or 1
        tpu_macs = sum(v.macs for v in self.ops[: self.ops_on_tpu])
        cache = "fits" if self.parameter_bytes <= EDGETPU_CACHE_BYTES else "exceeds"
        head = (
            "all ops map to the Edge TPU"
            if first is None
            else f"op {first.index} {first.op} cannot map ({first.reason}): it and the {len(self.ops) - first.index - 1} ops after it run on the CPU"
        )
        return (
            f"{head}; {self.ops_on_tpu}/{len(self.ops)} ops and {100 * tpu_macs / total_macs:.1f}% of MACs on the TPU; "
            f"parameters {self.parameter_bytes / 1e6:.2f} MB {cache} the ~8 MB on-chip cache"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form recorded in the manifest."""
        first = self.first_unmapped
        total_macs = sum(v.macs for v in self.ops)
        tpu_macs = sum(v.macs for v in self.ops[: self.ops_on_tpu])
        return {
            "fully_mapped": self.fully_mapped,
            "first_unmapped": None if first is None else {"index": first.index, "op": first.op, "reason": first.reason},
            "ops_total": len(self.ops),
            "ops_on_tpu": self.ops_on_tpu,
            "macs_total": total_macs,
            "macs_on_tpu": tpu_macs,
            "mac_share_on_tpu": round(tpu_macs / total_macs, 4) if total_macs else 1.0,
            "parameter_bytes": self.parameter_bytes,
            "cache_bytes": EDGETPU_CACHE_BYTES,
            "fits_cache": self.parameter_bytes <= EDGETPU_CACHE_BYTES,
            "summary": self.summary(),
            "ops": [dataclasses.asdict(v) for v in self.ops],
        }


def preflight(model_path: str | Path) -> PreflightReport:
    """Analyse a ``.tflite`` model for the Edge TPU.

    Raises:
        BundleError: The file is not a readable TFLite flatbuffer.
    """
    from ai_edge_litert import schema_py_generated as schema

    path = Path(model_path)
    try:
        buffer = path.read_bytes()
        model = schema.ModelT.InitFromPackedBuf(buffer, 0)
        subgraph = model.subgraphs[0]
    except Exception as exc:  # flatbuffers raises assorted errors on garbage
        raise BundleError(f"{path} is not a readable .tflite model ({type(exc).__name__})") from exc
    op_names = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    type_names = {value: name for name, value in vars(schema.TensorType).items() if not name.startswith("_")}
    activations = {value: name for name, value in vars(schema.ActivationFunctionType).items() if not name.startswith("_")}
    constant = {
        index for index, tensor in enumerate(subgraph.tensors) if tensor.buffer and model.buffers[tensor.buffer].data is not None
    }
    verdicts = []
    for index, op in enumerate(subgraph.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        name = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), f"BUILTIN_{code.builtinCode}")
        if name == "CUSTOM":
            name = f"CUSTOM:{code.customCode.decode() if code.customCode else '?'}"
        reason = _why_not(name, op, subgraph, constant, type_names, activations)
        verdicts.append(OpVerdict(index, name, int(code.version), not reason, reason, _macs(name, op, subgraph)))
    parameters = sum(len(model.buffers[subgraph.tensors[i].buffer].data) for i in constant)
    return PreflightReport(tuple(verdicts), parameters)


def check(path: str | Path) -> PreflightReport:
    """Edge TPU preflight of a ``.tflite`` file or of a bundle's int8 model.

    Returns:
        The :class:`PreflightReport`.

    Raises:
        BundleError: Not a readable model or bundle.
    """
    path = Path(path)
    if path.is_dir():
        bundle = read_bundle(path)
        if not bundle.manifest.runtime.model_file.endswith(".tflite"):
            raise BundleError(f"{path} is a bundle for the {bundle.manifest.runtime.backend.value} backend, not a TFLite one")
        path = bundle.model_path
    elif not path.is_file():
        raise BundleError(f"{path} does not exist (expected a .tflite file or a bundle directory)")
    return preflight(path)


def _why_not(name: str, op: Any, subgraph: Any, constant: set[int], types: dict, activations: dict) -> str:
    if name not in SUPPORTED_OPS:
        return f"{name} is not an Edge TPU op"
    for tensor_index in [*op.inputs, *op.outputs]:
        if tensor_index < 0:
            continue
        tensor = subgraph.tensors[tensor_index]
        signature = tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape
        if signature is not None and any(int(d) < 0 for d in signature):
            return f"tensor '{_name(tensor)}' has a dynamic shape"
        if tensor_index in constant:
            continue
        if types.get(tensor.type) not in _INTEGER_ACTIVATIONS:
            return f"tensor '{_name(tensor)}' is {types.get(tensor.type, '?').lower()}, not int8/uint8"
        shape = [int(d) for d in (tensor.shape if tensor.shape is not None else [])]
        if any(d != 1 for d in shape[:-3]):
            return f"tensor '{_name(tensor)}' has shape {shape}: only the 3 innermost dimensions may exceed 1"
    options = op.builtinOptions
    fused = getattr(options, "fusedActivationFunction", 0) if options is not None else 0
    if name in _NO_FUSED_ACTIVATION and fused:
        return f"{name} with a fused {activations.get(fused, 'activation').lower()} is not supported"
    return ""


def _name(tensor: Any) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)


def _macs(name: str, op: Any, subgraph: Any) -> int:
    """Multiply-accumulates of the compute-heavy ops; 0 for the rest."""
    if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"):
        return 0
    output = np.prod([int(d) for d in subgraph.tensors[op.outputs[0]].shape])
    weights = [int(d) for d in subgraph.tensors[op.inputs[1]].shape]  # input 1 holds the weights for all four
    if name == "DEPTHWISE_CONV_2D":
        per_output = weights[1] * weights[2]  # [1, kh, kw, channels]
    elif name == "FULLY_CONNECTED":
        per_output = weights[-1]  # [outputs, inputs]
    else:
        per_output = weights[1] * weights[2] * weights[3]  # [out channels, kh, kw, in channels]
    return int(output * per_output)
