"""What every conversion target takes and returns."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tillsight.datasets import ImageSet
from tillsight.preprocess import InputSpec
from tillsight.profiles import Profile
from tillsight.runtimes.base import TensorSpec

if TYPE_CHECKING:  # the source module imports TensorFlow; keep this one light
    from .source import SourceModel

__all__ = ["ConversionJob", "TargetResult"]


@dataclasses.dataclass(frozen=True)
class ConversionJob:
    """One model to convert for one profile."""

    source: SourceModel
    profile: Profile
    input_spec: InputSpec  # float preprocessing of the source model (dtype float32)
    calibration: np.ndarray  # (N, H, W, 3) float32, made by tillsight.preprocess.preprocess
    add_softmax: bool  # the source outputs logits: append a softmax
    staging_dir: Path  # where the target writes its model file(s)
    evaluation: ImageSet | None = None  # labeled photos, for targets that tune against accuracy
    labels: tuple[str, ...] = ()  # class labels in output order, for targets that write them into the model

    @contextlib.contextmanager
    def saved_model(self) -> Iterator[Path]:
        """The source exported as a static-shape SavedModel in the staging folder, removed afterwards.

        Yields:
            The SavedModel directory, for a target's converter to read.
        """
        directory = self.staging_dir / ".saved_model"
        try:
            yield self.source.export_saved_model(self.input_spec.height, self.input_spec.width, self.add_softmax, directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class TargetResult:
    """The files a target wrote and how the runtime must feed and read the model."""

    files: tuple[str, ...]  # the model file first, then any companions (e.g. model.bin)
    input_spec: InputSpec  # what the runtime feeds the model file, quantization included
    output_tensor: TensorSpec
    quantization: dict[str, Any]
    runtime_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # backend-specific, to the manifest
    report: dict[str, Any] = dataclasses.field(default_factory=dict)  # what the target found (e.g. Edge TPU preflight)

    @property
    def model_file(self) -> str:
        """The file the runtime loads."""
        return self.files[0]
