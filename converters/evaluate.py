"""The accuracy check: the float source model and the converted bundle on the same photos.

Both models see exactly the same preprocessed pixels: the float model gets
:func:`tillsight.preprocess.preprocess` output, the converted model goes through the
device's own :class:`tillsight.Classifier` (which applies that same function).
"""

from __future__ import annotations

import logging

import numpy as np
from tqdm import tqdm

from tillsight._benchmark_worker import timed
from tillsight.bundle_metrics import AccuracyMetrics, LatencyMetrics, latency_percentiles_ms, percent_equal
from tillsight.classifier import Classifier
from tillsight.datasets import ImageSet, iter_images
from tillsight.host import HostInfo
from tillsight.preprocess import InputSpec, preprocess

from .source import SourceModel

__all__ = ["evaluate", "measure_latency"]

logger = logging.getLogger(__name__)

_BATCH = 32


def evaluate(
    source: SourceModel,
    classifier: Classifier,
    image_set: ImageSet,
    float_spec: InputSpec,
    progress: bool = False,
    pruned: SourceModel | None = None,
) -> AccuracyMetrics:
    """Run both models (and the pruned float model, if any) on every readable image of a labeled set.

    Args:
        source: The original float model: drop and agreement are measured against it.
        classifier: The converted model, loaded as on the device.
        image_set: Labeled evaluation images.
        float_spec: The float model's input spec (the classifier's, before quantization).
        progress: Show a progress bar.
        pruned: The pruned float model the conversion started from, to report each step's drop.

    Returns:
        The accuracy report (images counted only when readable).
    """
    skipped: list = []
    truth: list[int] = []
    float_inputs: list[np.ndarray] = []
    float_top1: list[int] = []
    pruned_top1: list[int] = []
    converted_top1: list[int] = []

    def flush() -> None:
        if float_inputs:
            batch = np.stack(float_inputs)
            float_top1.extend(np.argmax(source.predict(batch), axis=-1).tolist())
            if pruned is not None:
                pruned_top1.extend(np.argmax(pruned.predict(batch), axis=-1).tolist())
            float_inputs.clear()

    for item, image in tqdm(
        iter_images(image_set.images, skipped), total=len(image_set.images), desc="evaluation", disable=not progress
    ):
        truth.append(int(item.label_index))
        float_inputs.append(preprocess(image, float_spec))
        converted_top1.append(int(np.argmax(classifier.scores(image))))
        if len(float_inputs) == _BATCH:
            flush()
    flush()
    count = len(truth)
    if skipped:
        examples = ", ".join(str(path) for path in skipped[:3])
        logger.warning(
            "accuracy check: %d of %d evaluation photos of %s are missing or unreadable and were left out (%s%s); "
            "the figures are on the %d others",
            len(skipped),
            len(image_set.images),
            image_set.path,
            examples,
            ", ..." if len(skipped) > 3 else "",
            count,
        )
    if count == 0:
        return AccuracyMetrics(0, len(skipped), 0.0, 0.0, 0.0)
    truth_array, float_array, converted_array = np.array(truth), np.array(float_top1), np.array(converted_top1)
    pruned_accuracy = percent_equal(pruned_top1, truth_array) if pruned else None
    return AccuracyMetrics(
        images=count,
        skipped=len(skipped),
        float_top1=percent_equal(float_array, truth_array),
        converted_top1=percent_equal(converted_array, truth_array),
        top1_agreement=percent_equal(float_array, converted_array),
        pruned_top1=pruned_accuracy,
    )


def measure_latency(classifier: Classifier, sample: np.ndarray, runs: int = 30, warmup: int = 3) -> LatencyMetrics:
    """Median and p95 of backend inference time on this host (not the device).

    Args:
        classifier: The converted model.
        sample: One BGR frame.
        runs: Timed inferences.
        warmup: Untimed inferences first.
    """
    tensor = classifier.prepare(sample)
    seconds = timed(classifier.infer, [tensor], runs, warmup)  # under the classifier's lock, as a kiosk app's frames run
    p50_ms, p95_ms = latency_percentiles_ms(seconds)
    return LatencyMetrics(
        p50_ms=p50_ms,
        p95_ms=p95_ms,
        runs=runs,
        threads=getattr(classifier.backend, "threads", None),
        engine=classifier.engine,
        host=HostInfo.current().describe(),  # the names tillsight benchmark gives the same machine
    )
