"""Classifier: the task logic above a runtime backend.

``tillsight.load(bundle_dir)`` verifies a bundle, opens its backend and returns a
:class:`Classifier`. The classifier preprocesses frames with the manifest's input spec,
quantizes them, runs the backend, dequantizes the scores and sorts the top k. It
serialises calls into the backend, so one classifier can be shared between threads.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from .bundle import Bundle, read_bundle
from .errors import BundleError, InferenceError
from .preprocess import InputSpec, model_input
from .runtimes import open_backend
from .runtimes.base import Backend
from .signing import TRUSTED_KEYS_VARIABLE, TrustedKey, load_trusted_keys, trusted_keys_from_environment

__all__ = ["Prediction", "Classifier", "load"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One class and its score (a probability in 0-1)."""

    label: str
    index: int
    score: float


def dequantize(raw: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer tensor to float: ``scale * (q - zero_point)``; float tensors pass through."""
    if scale == 0.0:
        return raw.astype(np.float32, copy=False)
    return (scale * (raw.astype(np.int32) - zero_point)).astype(np.float32)


class Classifier:
    """Classifies BGR frames with one loaded model."""

    def __init__(
        self,
        backend: Backend,
        labels: Sequence[str],
        input_spec: InputSpec,
        bundle: Bundle | None = None,
        version: str | None = None,
    ):
        """Wrap a loaded backend.

        Args:
            backend: The runtime backend holding the model.
            labels: Class names in output-index order.
            input_spec: Preprocessing of the model input (from the manifest).
            bundle: The bundle the model came from, if any.
            version: The bundle's version, as a fleet rollout names it; default: the first
                12 hex digits of the model file's sha256. Every pipeline event carries it.

        Raises:
            BundleError: The labels or input spec do not fit the backend's tensors.
        """
        in_spec, out_spec = backend.input_tensor, backend.output_tensor
        if out_spec.shape[-1] != len(labels):
            raise BundleError(f"the model has {out_spec.shape[-1]} outputs but {len(labels)} labels")
        quantization_differs = in_spec.scale and (
            not np.isclose(in_spec.scale, input_spec.scale) or in_spec.zero_point != input_spec.zero_point
        )
        if (
            in_spec.shape[1:3] != (input_spec.height, input_spec.width)
            or in_spec.dtype != input_spec.dtype
            or quantization_differs
        ):
            raise BundleError(
                f"the model takes {in_spec.dtype} {in_spec.shape} but the manifest describes "
                f"{input_spec.dtype} {input_spec.height}x{input_spec.width}; convert the model again"
            )
        self.backend = backend
        self.labels = tuple(labels)
        self.input_spec = input_spec
        self.bundle = bundle
        self.version = version or (self.model_sha256[:12] if self.model_sha256 else "")
        self._lock = threading.Lock()

    @property
    def model_sha256(self) -> str:
        """The sha256 of the bundle's model file, as its manifest records it ("" without a bundle)."""
        if self.bundle is None:
            return ""
        manifest = self.bundle.manifest
        return manifest.model_sha256

    def warm_up(self) -> None:
        """Run the model once on a blank input, so that the first real frame does not pay for lazy allocation.

        Raises:
            InferenceError: The backend failed.
        """
        blank = np.zeros((self.input_spec.height, self.input_spec.width, 3), np.uint8)
        self.infer(self.prepare(blank))

    @property
    def engine(self) -> str:
        """What runs the model (e.g. ``ai_edge_litert.interpreter``)."""
        return str(self.backend.engine)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """Preprocess and quantize one BGR frame into the model's input tensor (batch of 1).

        Raises:
            InferenceError: ``image`` is not a usable uint8 image.
        """
        try:
            return model_input(image, self.input_spec)[np.newaxis]
        except ValueError as exc:
            raise InferenceError(f"cannot classify this image: {exc}") from exc

    def scores(self, image: np.ndarray) -> np.ndarray:
        """Scores of every class for one BGR frame, as float32 probabilities.

        Raises:
            InferenceError: The image is unusable or the backend failed.
        """
        return self.infer(self.prepare(image))

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Scores of every class for an input tensor made by :meth:`prepare`.

        Pipelines call :meth:`prepare` and :meth:`infer` apart to time the two stages.

        Raises:
            InferenceError: The backend failed.
        """
        with self._lock:
            raw = self.backend.invoke(tensor)
        out = self.backend.output_tensor
        return dequantize(raw.reshape(-1), out.scale, out.zero_point)

    def infer_many(self, tensors: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Scores for several tensors made by :meth:`prepare`, in order (one call: engines that
        overlap requests, such as OpenVINO loaded with ``throughput=True``, run them in parallel).

        Raises:
            InferenceError: The backend failed.
        """
        with self._lock:
            raws = self.backend.invoke_many(list(tensors))
        out = self.backend.output_tensor
        return [dequantize(raw.reshape(-1), out.scale, out.zero_point) for raw in raws]

    def top(self, scores: np.ndarray, top_k: int = 5) -> list[Prediction]:
        """The ``top_k`` highest of ``scores`` as predictions, highest first."""
        k = max(1, min(top_k, scores.size))
        order = np.argsort(-scores, kind="stable")[:k]
        return [Prediction(self.labels[i], int(i), float(scores[i])) for i in order]

    def classify(self, image: np.ndarray, top_k: int = 5) -> list[Prediction]:
        """Classify one frame.

        Args:
            image: OpenCV BGR uint8 ``HxWx3`` array of any size.
            top_k: How many classes to return.

        Returns:
            Up to ``top_k`` predictions, highest score first.

        Raises:
            InferenceError: The image is unusable or the backend failed.
        """
        return self.top(self.scores(image), top_k)

    def close(self) -> None:
        """Release the backend."""
        with self._lock:
            self.backend.close()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def load(
    bundle_dir: str | Path,
    threads: int | None = None,
    device: str | None = None,
    trusted_keys: Sequence[str | Path | TrustedKey] | None = None,
    throughput: bool = False,
    version: str | None = None,
) -> Classifier:
    """Load a bundle for inference.

    Args:
        bundle_dir: A bundle directory written by ``tillsight convert``.
        threads: CPU threads; defaults to the thread count of the bundle's profile.
        device: Accelerator device overriding the profile's: OpenVINO ``GPU.1``, Edge TPU
            ``usb``, ``usb:N``, ``pci``, ``pci:N`` or ``:N``.
        trusted_keys: Public keys (PEM paths or loaded :class:`~tillsight.signing.TrustedKey`)
            the bundle must be signed with; None: those ``TILLSIGHT_TRUSTED_KEYS`` names. With
            none configured the bundle loads unchecked, with a warning.
        throughput: Several frames will be in flight (multi-lane kiosks, :meth:`Classifier.infer_many`):
            OpenVINO compiles with its ``THROUGHPUT`` hint; other backends ignore it.
        version: The bundle's version (a fleet rollout's name for it), on every event; default:
            the start of the model file's sha256.

    Returns:
        A classifier; close it (or use it as a context manager) when done.

    Raises:
        BundleError: Not a bundle, or an artifact does not match the manifest.
        SignatureError: Trusted keys are configured and the bundle is not signed by one of
            them, or was changed after signing (before its model is opened).
        OptionsError: A trusted key file cannot be read.
        BackendUnavailableError: The bundle's runtime package is not installed.
    """
    keys = _trusted_keys(trusted_keys)
    if not keys:
        _warn_unchecked_origin(Path(bundle_dir))
    return _open(bundle_dir, threads, device, keys, throughput, version)


def load_written(bundle_dir: str | Path) -> Classifier:
    """Load a bundle this process has just written (a conversion's staging folder): its origin is known."""
    return _open(bundle_dir, None, None, (), False, None)


_warned_unchecked = False


def _warn_unchecked_origin(bundle_dir: Path) -> None:
    """Say once per process that bundles load unchecked; never for the package's own demo bundle."""
    global _warned_unchecked
    shipped = bundle_dir.resolve().is_relative_to(Path(__file__).resolve().parent)  # only the demo bundle ships inside
    if _warned_unchecked or shipped:
        return
    _warned_unchecked = True
    logger.warning(
        "bundle %s: its origin is not checked (no trusted keys); set %s or pass trusted_keys= to refuse unsigned "
        "bundles (said once per process)",
        bundle_dir,
        TRUSTED_KEYS_VARIABLE,
    )


def _open(
    bundle_dir: str | Path,
    threads: int | None,
    device: str | None,
    keys: tuple[TrustedKey, ...],
    throughput: bool,
    version: str | None,
) -> Classifier:
    bundle = read_bundle(bundle_dir, trusted_keys=keys)
    backend = open_backend(bundle, threads, device, throughput)
    try:
        return Classifier(backend, bundle.manifest.labels, bundle.manifest.input, bundle, version)
    except BundleError:
        backend.close()
        raise


def _trusted_keys(given: Sequence[str | Path | TrustedKey] | None) -> tuple[TrustedKey, ...]:
    """The trusted keys ``load`` checks against: those given, else those the environment names."""
    entries = trusted_keys_from_environment() if given is None else tuple(given)
    loaded = tuple(entry for entry in entries if isinstance(entry, TrustedKey))
    paths = [entry for entry in entries if not isinstance(entry, TrustedKey)]
    return loaded + (load_trusted_keys(paths) if paths else ())
