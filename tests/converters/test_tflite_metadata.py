"""The bundle's model.tflite carries TFLite Metadata that MediaPipe's ImageClassifier reads."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import tillsight
from tillsight.bundle import sha256_of_file
from tillsight.preprocess import input_region, model_pixels

vision = pytest.importorskip(
    "mediapipe.tasks.python.vision", reason='TFLite metadata needs mediapipe: pip install "tillsight[convert]"'
)


@pytest.fixture
def mediapipe_classifier(bundle_dir):
    from mediapipe.tasks.python import BaseOptions

    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(bundle_dir / "model.tflite")), max_results=1
    )
    classifier = vision.ImageClassifier.create_from_options(options)
    yield classifier
    classifier.close()


def _top1(mediapipe_classifier, rgb, region=None):
    import mediapipe
    from mediapipe.tasks.python.components.containers.rect import RectF
    from mediapipe.tasks.python.vision.core.image_processing_options import ImageProcessingOptions

    options = None
    if region is not None:  # tillsight's crop, as MediaPipe's region of interest
        height, width = rgb.shape[:2]
        left, top, right, bottom = region
        options = ImageProcessingOptions(
            region_of_interest=RectF(left=left / width, top=top / height, right=right / width, bottom=bottom / height)
        )
    image = mediapipe.Image(image_format=mediapipe.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
    result = mediapipe_classifier.classify(image, options)
    category = result.classifications[0].categories[0]
    return category.category_name, category.score


@pytest.mark.integration
def test_mediapipe_image_classifier_agrees_with_tillsight_on_the_bundles_model(bundle_dir, photos, mediapipe_classifier):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    report = manifest["target_report"]["tflite_metadata"]
    assert report["labels"] == len(photos.labels) and report["raw_pixel_input"]
    assert manifest["artifacts"]["model.tflite"]["sha256"] == sha256_of_file(bundle_dir / "model.tflite")  # the final file
    same_photo = same_pixels = 0
    with tillsight.load(bundle_dir) as classifier:
        spec = classifier.input_spec
        for path, _ in photos.eval_items:
            image = cv2.imread(str(path))
            ours = classifier.classify(image, 1)[0]
            # The photo as tillsight sizes it: both read the same tensor, so the labels must match.
            label, score = _top1(mediapipe_classifier, model_pixels(image, spec))
            same_pixels += label == ours.label
            assert score == pytest.approx(ours.score, abs=0.02)
            # The whole photo, tillsight's crop as the region of interest: MediaPipe resizes it its own way.
            region = input_region(spec, image.shape[1], image.shape[0])
            same_photo += _top1(mediapipe_classifier, cv2.cvtColor(image, cv2.COLOR_BGR2RGB), region)[0] == ours.label
    assert same_pixels == len(photos.eval_items)
    assert same_photo >= 0.9 * len(photos.eval_items), f"{same_photo} of {len(photos.eval_items)} photos"
