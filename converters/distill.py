"""``tillsight.distill``: train a smaller student from a Keras classifier (the teacher).

For profiles whose latency budget the teacher cannot meet: the student (a built-in small
architecture or the user's own ``.keras`` file) learns from the teacher's softened outputs
on labeled photos, unlabeled store frames, or both, then converts like any classifier.
The teacher runs once per photo and view before training; the student file is written
atomically, so a failed run never replaces a good student.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from tillsight.bundle import OutputActivation
from tillsight.bundle_metrics import TrainingMetrics, percent_equal
from tillsight.conversion_options import ConversionOptions
from tillsight.datasets import read_image_set, read_labels
from tillsight.errors import DataError, ModelLoadError, OptionsError, ProfileError
from tillsight.preprocess import InputSpec
from tillsight.profiles import DistillationOptions
from tillsight.staging import check_output_folder, staged_file

from ._tf import keras
from .source import PROBE_IMAGES, load_source_model, output_activation
from .steps import conversion_step
from .training import TeacherCache, load_training_photos, seeded
from .training.guard import HeldOutGuard, held_out_indices, top1_of
from .training.students import FROM_TEACHER_RATE_FACTOR, PRETRAINED_STUDENTS, start_student, train_in_stages

__all__ = ["DistillReport", "DistillResult", "StudentAccuracy", "distill"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class StudentAccuracy:
    """Float top-1 of teacher and student on the same labeled photos (percent), and how often they agree."""

    images: int
    teacher_top1: float
    student_top1: float
    top1_agreement: float


@dataclasses.dataclass(frozen=True)
class DistillReport:
    """What a distillation run did and measured."""

    teacher: str
    student: str
    teacher_parameters: int
    student_parameters: int
    student_input: tuple[int, int]  # (height, width)
    training: TrainingMetrics  # epochs, seconds, loss per epoch, photos; details: alpha, temperature, teacher views
    labeled_photos: int
    teacher_images_run: int  # the teacher ran once per photo and view, before training
    step_seconds: dict[str, float]
    accuracy: StudentAccuracy | None = None  # with evaluation photos
    started_from_teacher: bool = False  # same architecture: the teacher's weights, not ImageNet's or random
    seed: int = 0  # seeded the new layers, the batches and the views: the same seed and photos give the same student

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data = dataclasses.asdict(self)
        data["training"] = self.training.to_dict()
        return data


@dataclasses.dataclass(frozen=True)
class DistillResult:
    """The written student and what the training measured."""

    path: Path
    report: DistillReport


def distill(
    teacher: str | Path | Any,
    student: str | Path,
    out: str | Path,
    data: str | Path | None = None,
    unlabeled: str | Path | None = None,
    epochs: int = 10,
    learning_rate: float = 0.001,
    distillation: DistillationOptions | None = None,
    evaluation: str | Path | None = None,
    labels: str | Path | None = None,
    options: ConversionOptions | None = None,
    student_size: tuple[int, int] | None = None,
) -> DistillResult:
    """Distill a teacher classifier into a student and save it as a ``.keras`` file.

    Longer than 60 lines on purpose: the body is the outline of a distillation, one call per step in the
    order they run, each timed under its name for the report.

    Args:
        teacher: ``.keras`` / ``.h5`` file or an in-memory ``keras.Model``.
        student: ``efficientnet-lite0``, ``-lite1`` or ``-lite2`` (ImageNet-pretrained; needs the ``pretrained``
            extra), ``mobilenetv2-0.35``, ``mobilenetv3-small``, ``mobilenetv3-small-minimal`` (from scratch), or a
            ``.keras`` file with the teacher's input and outputs.
        out: The student file to write (``.keras``).
        data: Labeled photos (class folder or list file).
        unlabeled: A folder of unlabeled photos (store camera frames): the teacher labels them softly.
        epochs: Passes over the photos.
        learning_rate: Adam's starting rate, cosine-decayed; a pretrained student's backbone trains at 1/10 of it,
            a student that starts from the teacher's weights at 3/10.
        distillation: Alpha (label weight) and temperature (default: 0.5 and 4).
        evaluation: Labeled photos on which teacher and student top-1 and agreement are measured.
        labels: Labels file, to read class folders in output-index order.
        options: The teacher's input colour order, crop, mean and std; progress bars; unsafe loading; the seed of
            every random choice of the training (TensorFlow's ops made deterministic too).
        student_size: ``(height, width)`` of the student's input; the teacher's by default. The teacher
            still sees its own size: each photo is prepared once for each.

    Returns:
        The student's path and a report (sizes, MACs, losses, teacher runs, accuracy when measured).

    Raises:
        ModelLoadError, DataError, ProfileError: Nothing is written when any of these is raised.
    """
    distillation = distillation or DistillationOptions()
    options = options or ConversionOptions()
    out = Path(out)
    _check_arguments(out, data, unlabeled, epochs, student_size, distillation)
    timings: dict[str, float] = {}
    with conversion_step("load teacher", timings):
        source, label_names, spec, student_spec = _teacher(teacher, labels, options, student_size)
    with conversion_step("training photos", timings):
        sets = _photo_sets(source, data, unlabeled, evaluation, label_names, spec, student_spec, options.progress)
    seeded(options.seed)
    with conversion_step("build student", timings):
        model, from_teacher, student_activation = start_student(student, student_spec, source, sets.student, options)
    guard, sets = _guard(source.keras_model, model, sets)
    with conversion_step("teacher outputs", timings):
        cache = TeacherCache(source.keras_model, sets.teacher, sets.activation, options.progress)
    with conversion_step(f"distill ({epochs} epochs)", timings):
        training = train_in_stages(
            model,
            cache,
            sets.student,
            student_activation,
            distillation,
            epochs,
            learning_rate,
            new_head=str(student) in PRETRAINED_STUDENTS and not from_teacher,
            progress=options.progress,
            rate_factor=FROM_TEACHER_RATE_FACTOR if from_teacher else 1.0,
        )
    training.update(guard.settle(model) if guard is not None else {})
    accuracy = (
        _compare(source.keras_model, model, sets.evaluation[0], sets.evaluation[-1]) if sets.evaluation is not None else None
    )
    report = DistillReport(
        teacher=source.description,
        student=str(student),
        teacher_parameters=int(source.keras_model.count_params()),
        student_parameters=int(model.count_params()),
        student_input=(student_spec.height, student_spec.width),
        training=TrainingMetrics.from_report(training),
        labeled_photos=int(training["labeled_photos"]),
        teacher_images_run=int(training["teacher_images_run"]),
        step_seconds=timings,
        accuracy=accuracy,
        started_from_teacher=from_teacher,
        seed=options.seed,
    )
    _save_atomically(model, out)
    return DistillResult(out, report)


def _guard(teacher: Any, student: Any, sets: _PhotoSets) -> tuple[HeldOutGuard | None, _PhotoSets]:
    """Hold out every :data:`~.training.guard.HOLD_OUT_EVERY`-th photo and measure the untrained student on it."""
    split = held_out_indices(len(sets.teacher.labels))
    if split is None:
        return None, sets
    held, kept = split
    teacher_top1 = top1_of(teacher, sets.teacher.subset(held))
    guard = HeldOutGuard.before_training(student, sets.student.subset(held), teacher_top1, "distillation")
    student_set = sets.student.subset(kept)
    teacher_set = student_set if sets.teacher is sets.student else sets.teacher.subset(kept)
    return guard, dataclasses.replace(sets, teacher=teacher_set, student=student_set)


def _check_arguments(
    out: Path, data: Any, unlabeled: Any, epochs: int, student_size: tuple[int, int] | None, distillation: DistillationOptions
) -> None:
    """Refuse what cannot work before anything loads."""
    if out.suffix != ".keras":
        raise DataError(f"student output {out} must end in .keras")
    if out.is_dir():
        raise OptionsError(f"student output {out} is a folder; name the .keras file to write")
    check_output_folder(out.parent, "student output")
    if data is None and unlabeled is None:
        raise DataError("distillation needs photos: pass --data (labeled) and/or --unlabeled (a folder of frames)")
    if epochs < 1:
        raise DataError(f"epochs must be at least 1, got {epochs}")
    if student_size is not None and min(student_size) < 8:
        raise OptionsError(f"student size must be at least 8x8, got {list(student_size)}")
    if problem := distillation.problem():
        raise ProfileError(f"distillation settings (--alpha, --temperature): {problem}")


def _teacher(
    teacher: Any, labels: Any, options: ConversionOptions, student_size: tuple[int, int] | None
) -> tuple[Any, Any, InputSpec, InputSpec]:
    """The teacher, the label names, and the input specs of teacher and student."""
    source = load_source_model(teacher, allow_unsafe=options.allow_unsafe_model)
    if source.keras_model is None:
        raise ModelLoadError(f"teacher {source.description} is a SavedModel: pass the .keras or .h5 file")
    if None in source.input_size:
        raise ModelLoadError(f"teacher {source.description} has no fixed input size; export it with one")
    label_names = read_labels(labels) if labels else None
    height, width = source.input_size
    spec = InputSpec(
        height=height,
        width=width,
        color_order=options.color_order,
        crop=options.crop or 1.0,
        mean=options.mean,
        std=options.std,
    )
    student_spec = spec if student_size is None else dataclasses.replace(spec, height=student_size[0], width=student_size[1])
    return source, label_names, spec, student_spec


@dataclasses.dataclass(frozen=True)
class _PhotoSets:
    teacher: Any  # TrainingPhotos at the teacher's size
    student: Any  # the same photos at the student's size (the same object when the sizes match)
    evaluation: list[Any] | None  # labeled evaluation photos at the teacher's size, then the student's if it differs
    activation: OutputActivation  # what the teacher outputs


def _photo_sets(
    source: Any,
    data: Any,
    unlabeled: Any,
    evaluation: Any,
    label_names: Any,
    spec: InputSpec,
    student_spec: InputSpec,
    progress: bool,
) -> _PhotoSets:
    """Training photos at both sizes, the evaluation photos, and the teacher's output kind."""
    photos = _photos(data, unlabeled, label_names, spec, source.num_classes, progress)
    student_photos = photos
    if student_spec != spec:
        student_photos = _photos(data, unlabeled, label_names, student_spec, source.num_classes, progress)
    eval_photos = None
    if evaluation is not None:
        eval_set = read_image_set(evaluation, label_names)
        if not eval_set.labeled:
            raise DataError(f"evaluation data {evaluation} has no labels: use a class folder or a list file")
        eval_photos = [
            load_training_photos(eval_set, each, source.num_classes, progress, desc="evaluation photos")
            for each in dict.fromkeys([spec, student_spec])
        ]
    probe_images = np.asarray(photos.normalise(photos.pixels[:PROBE_IMAGES]))
    return _PhotoSets(photos, student_photos, eval_photos, output_activation(source, probe_images))


def _photos(data: Any, unlabeled: Any, labels: Any, spec: InputSpec, num_classes: int, progress: bool) -> Any:
    """Labeled photos, then unlabeled ones (labels ignored), as one set."""
    sets = []
    if data is not None:
        labeled = read_image_set(data, labels)
        if not labeled.labeled:
            raise DataError(f"--data {data} has no labels: use a class folder or a list file, or pass it as --unlabeled")
        sets.append(load_training_photos(labeled, spec, num_classes, progress, desc="labeled photos"))
    if unlabeled is not None:
        frames = read_image_set(unlabeled)
        sets.append(load_training_photos(frames, spec, num_classes, progress, need_labels=False, desc="unlabeled photos"))
        if frames.labeled:  # a class folder given as unlabeled: its labels are not used
            sets[-1] = dataclasses.replace(sets[-1], labels=np.full_like(sets[-1].labels, -1))
    photos = sets[0]
    for extra in sets[1:]:
        photos = photos.with_unlabeled(extra)
    return photos


def _compare(teacher: Any, student: Any, photos: Any, student_photos: Any) -> StudentAccuracy:
    """Float top-1 of teacher and student, and how often they agree, on the same labeled photos at each one's size."""
    teacher_top1, student_top1 = [], []
    for start in range(0, len(photos.labels), 64):
        batch = photos.normalise(photos.pixels[start : start + 64])
        student_batch = student_photos.normalise(student_photos.pixels[start : start + 64])
        teacher_top1.append(np.argmax(np.asarray(teacher(batch, training=False)), axis=-1))
        student_top1.append(np.argmax(np.asarray(student(student_batch, training=False)), axis=-1))
    t, s = np.concatenate(teacher_top1), np.concatenate(student_top1)
    accuracy = StudentAccuracy(
        images=int(len(t)),
        teacher_top1=percent_equal(t, photos.labels, 2),
        student_top1=percent_equal(s, photos.labels, 2),
        top1_agreement=percent_equal(t, s, 2),
    )
    logger.info("distill: %s", accuracy)
    return accuracy


def _save_atomically(model: Any, out: Path) -> None:
    """Write the student without its training loss and optimizer (it loads anywhere); only a complete file lands."""
    plain = keras.Model.from_config(model.get_config())
    plain.set_weights(model.get_weights())
    with staged_file(out) as temporary:
        plain.save(temporary)
