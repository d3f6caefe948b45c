"""``tillsight val``: a bundle's accuracy on labeled photos, through the device's own runtime.

What a retail team asks first: top-1 and top-5, the recall of each product, and which products
are taken for which (the most-confused pairs, and a confusion picture of the worst classes).
Each photo goes through :meth:`tillsight.Classifier.scores`, the path the conversion's accuracy
check takes too, so on the same photos the top-1 equals the manifest's. No TensorFlow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from .bundle_metrics import percent_equal
from .classifier import load
from .datasets import iter_images, read_image_set, read_labels
from .errors import DataError, TillsightError
from .jsonfile import write_json_file
from .staging import staged_file

__all__ = ["ClassRecall", "Confusion", "ValidationReport", "validate", "write_confusion_picture"]

FORMAT_NAME = "tillsight-val"
FORMAT_VERSION = 1
TOP_K = 5
#: Classes drawn in the confusion picture: the ones with the lowest recall.
PICTURE_CLASSES = 12


@dataclasses.dataclass(frozen=True)
class ClassRecall:
    """How often one product's photos were classified as that product."""

    label: str
    images: int
    correct: int

    @property
    def recall(self) -> float:
        return round(100.0 * self.correct / self.images, 2) if self.images else 0.0


@dataclasses.dataclass(frozen=True)
class Confusion:
    """Photos of ``truth`` classified as ``predicted``."""

    truth: str
    predicted: str
    count: int


@dataclasses.dataclass(frozen=True)
class ValidationReport:
    """Accuracy of one bundle on one labeled set."""

    bundle: str
    profile: str
    data: str
    images: int
    skipped: int
    top1: float
    top5: float
    classes: tuple[ClassRecall, ...]  # every class with photos, lowest recall first
    confused: tuple[Confusion, ...]  # off-diagonal pairs, most photos first
    matrix: tuple[tuple[int, ...], ...]  # counts, [truth][predicted], in label order
    labels: tuple[str, ...]
    manifest_top1: float | None  # what the conversion measured (on its own photos)
    manifest_images: int | None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["classes"] = [{**dataclasses.asdict(c), "recall": c.recall} for c in self.classes]
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **data}

    def markdown(self, worst: int = 10, pairs: int = 10) -> str:
        """Summary, the ``worst`` classes by recall and the ``pairs`` most-confused pairs, as markdown."""
        lines = [
            f"# {self.bundle} ({self.profile}) on {self.data}",
            "",
            f"- {self.images} photos ({self.skipped} unreadable skipped): top-1 {self.top1:.2f}%, top-{TOP_K} {self.top5:.2f}%",
        ]
        if self.manifest_top1 is not None:
            lines.append(f"- at conversion: top-1 {self.manifest_top1:.2f}% on {self.manifest_images} photos")
        lines += [
            "",
            f"## Lowest recall ({min(worst, len(self.classes))} of {len(self.classes)} classes)",
            "",
            "| product | photos | correct | recall |",
            "| --- | ---: | ---: | ---: |",
        ]
        lines += [f"| {c.label} | {c.images} | {c.correct} | {c.recall:.2f}% |" for c in self.classes[:worst]]
        lines += ["", "## Most-confused pairs", ""]
        if self.confused:
            lines += ["| product | taken for | photos |", "| --- | --- | ---: |"]
            lines += [f"| {c.truth} | {c.predicted} | {c.count} |" for c in self.confused[:pairs]]
        else:
            lines.append("None: every photo was classified as its product.")
        return "\n".join(lines) + "\n"


def validate(bundle: str | Path, data: str | Path, labels: str | Path | None = None, progress: bool = False) -> ValidationReport:
    """Classify every labeled photo of ``data`` with the bundle, as on the device.

    Args:
        bundle: A bundle folder.
        data: Labeled photos: a class folder (subfolders named as the bundle's labels) or a list file.
        labels: A labels file, when ``data``'s classes are named otherwise than the bundle's labels.
        progress: Show a progress bar.

    Returns:
        The report.

    Raises:
        BundleError, BackendUnavailableError: The bundle cannot be loaded here.
        DataError: ``data`` is missing, has no labels, or names classes the bundle does not know.
    """
    with load(bundle) as classifier:
        names = read_labels(labels) if labels else classifier.labels
        if len(names) != len(classifier.labels):
            raise DataError(
                f"{len(names)} labels for a bundle with {len(classifier.labels)} outputs: pass the bundle's labels file"
            )
        image_set = read_image_set(data, names)
        if not image_set.labeled:
            raise DataError(f"{data} has no labels: use a class folder or a list file with class indices")
        skipped: list[Path] = []
        truth, ranked = [], []
        for item, image in tqdm(
            iter_images(image_set.images, skipped), total=len(image_set.images), desc="val", disable=not progress
        ):
            truth.append(int(item.label_index))
            ranked.append(np.argsort(-classifier.scores(image), kind="stable")[:TOP_K])
        manifest = classifier.bundle.manifest if classifier.bundle is not None else None
    if not truth:
        raise DataError(f"no readable photo in {data}")
    return _report(str(bundle), manifest, str(data), names, np.array(truth), np.stack(ranked), len(skipped))


def _report(
    bundle: str, manifest: Any, data: str, names: Sequence[str], truth: np.ndarray, ranked: np.ndarray, skipped: int
) -> ValidationReport:
    predicted = ranked[:, 0]
    matrix = np.zeros((len(names), len(names)), np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    classes = sorted(
        (ClassRecall(names[k], int(matrix[k].sum()), int(matrix[k, k])) for k in range(len(names)) if matrix[k].sum()),
        key=lambda c: (c.recall, c.label),
    )
    pairs = [(int(matrix[t, p]), names[t], names[p]) for t, p in zip(*np.nonzero(matrix), strict=True) if t != p]
    confused = tuple(Confusion(t, p, n) for n, t, p in sorted(pairs, key=lambda x: (-x[0], x[1], x[2])))
    accuracy = manifest.metrics.accuracy if manifest is not None else None
    return ValidationReport(
        bundle=bundle,
        profile=manifest.profile_name if manifest else "",
        data=data,
        images=int(len(truth)),
        skipped=skipped,
        top1=percent_equal(predicted, truth, 2),
        top5=round(100.0 * float(np.mean([t in row for t, row in zip(truth, ranked, strict=True)])), 2),
        classes=tuple(classes),
        confused=confused,
        matrix=tuple(tuple(int(v) for v in row) for row in matrix),
        labels=tuple(names),
        manifest_top1=accuracy.converted_top1 if accuracy else None,
        manifest_images=accuracy.images if accuracy else None,
    )


def write_report(report: ValidationReport, out: str | Path) -> tuple[Path, Path | None]:
    """``val.md`` and ``confusion.png`` in ``out``; each file appears only when complete."""
    out = Path(out)
    with staged_file(out / "val.md") as temporary:
        temporary.write_text(report.markdown(), encoding="utf-8")
    return out / "val.md", write_confusion_picture(report, out / "confusion.png")


def write_json(report: ValidationReport, path: str | Path) -> Path:
    return write_json_file(path, report.to_dict())


def write_confusion_picture(report: ValidationReport, path: str | Path, classes: int = PICTURE_CLASSES) -> Path | None:
    """A PNG of the confusion matrix over the lowest-recall classes and what they were taken for.

    Rows are the ``classes`` products with the lowest recall; columns are those and every product
    they were taken for (up to twice as many), then "other". Returns None when no photo was confused.

    Raises:
        TillsightError: The PNG cannot be written.
    """
    worst = [c for c in report.classes if c.recall < 100.0][:classes]
    if not worst:
        return None
    index = {name: k for k, name in enumerate(report.labels)}
    rows = [index[c.label] for c in worst]
    columns = list(rows)
    for c in report.confused:
        if index[c.truth] in rows and index[c.predicted] not in columns and len(columns) < 2 * classes:
            columns.append(index[c.predicted])
    matrix = np.array(report.matrix)
    counts = matrix[np.ix_(rows, columns)]
    other = matrix[rows].sum(axis=1) - counts.sum(axis=1)
    cells = np.concatenate([counts, other[:, None]], axis=1)
    image = _draw_matrix(
        cells,
        [report.labels[k] for k in rows],
        [report.labels[k] for k in columns] + ["other"],
        f"{report.bundle}: lowest-recall products (rows) and what they were taken for",
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged_file(path) as temporary:
        if not cv2.imwrite(str(temporary), image):
            raise TillsightError(f"cannot write the confusion picture {path}: check that its folder is writable")
    return path


def _draw_matrix(cells: np.ndarray, row_names: list[str], column_names: list[str], title: str) -> np.ndarray:
    """Cells shaded by their share of the row, with counts; names on the left and (rotated) on top."""
    cell, left, top = 34, 230, 200
    height, width = top + cell * len(row_names) + 20, left + cell * len(column_names) + 20
    image = np.full((height, width, 3), 255, np.uint8)
    font, black = cv2.FONT_HERSHEY_SIMPLEX, (0, 0, 0)
    cv2.putText(image, title[:110], (10, 22), font, 0.45, black, 1, cv2.LINE_AA)
    for k, name in enumerate(column_names):  # written sideways above each column
        label = np.full((cell, top - 40, 3), 255, np.uint8)
        cv2.putText(label, name[:28], (4, cell // 2 + 5), font, 0.42, black, 1, cv2.LINE_AA)
        rotated = cv2.rotate(label, cv2.ROTATE_90_COUNTERCLOCKWISE)
        x = left + cell * k
        image[40 : 40 + rotated.shape[0], x : x + cell] = np.minimum(image[40 : 40 + rotated.shape[0], x : x + cell], rotated)
    for r, name in enumerate(row_names):
        y = top + cell * r
        cv2.putText(image, name[:30], (8, y + cell // 2 + 5), font, 0.42, black, 1, cv2.LINE_AA)
        total = max(1, int(cells[r].sum()))
        for c in range(cells.shape[1]):
            x = left + cell * c
            share = cells[r, c] / total
            shade = int(255 - 200 * share)
            colour = (shade, shade, 255) if c != r else (shade, 255, shade)  # the diagonal in green, confusions in red
            cv2.rectangle(image, (x, y), (x + cell - 1, y + cell - 1), colour if cells[r, c] else (250, 250, 250), -1)
            cv2.rectangle(image, (x, y), (x + cell - 1, y + cell - 1), (210, 210, 210), 1)
            if cells[r, c]:
                cv2.putText(image, str(int(cells[r, c])), (x + 8, y + cell // 2 + 5), font, 0.45, black, 1, cv2.LINE_AA)
    return image
