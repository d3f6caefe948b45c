"""Data arguments: list files, class folders, labels files, unreadable files."""

from __future__ import annotations

import pytest

from tillsight import DataError
from tillsight.datasets import iter_images, read_image_set, read_labels


def test_list_file_paths_are_relative_to_the_list_file(grocery):
    lines = (grocery / "val.txt").read_text().splitlines()
    image_set = read_image_set(grocery / "val.txt")
    assert image_set.labeled and len(image_set.images) == len(lines) > 0
    for item, line in zip(image_set.images, lines, strict=True):
        path, fine_id = (field.strip() for field in line.split(",")[:2])
        assert item.path == grocery / path and item.path.is_file()
        assert item.label_index == int(fine_id)  # the list's own ids, not re-numbered


def test_class_folder_indices_come_from_the_labels_file(photos):
    image_set = read_image_set(photos.train_folder, photos.labels)
    by_folder = {item.path.parent.name: item.label_index for item in image_set.images}
    assert by_folder == {label: i for i, label in enumerate(photos.labels)}
    assert sorted(photos.labels) != list(photos.labels)  # so alphabetical order would be wrong


def test_class_folder_without_labels_uses_sorted_names(photos):
    image_set = read_image_set(photos.train_folder)
    by_folder = {item.path.parent.name: item.label_index for item in image_set.images}
    assert by_folder == {label: i for i, label in enumerate(sorted(photos.labels))}


def test_unknown_folder_and_bad_lines_are_clear(photos, tmp_path):
    with pytest.raises(DataError, match="folder 'Banana' .* is not a label"):
        read_image_set(photos.train_folder, ("Satsumas", "Watermelon", "Regular-Tomato", "Kiwi"))
    bad = tmp_path / "list.txt"
    bad.write_text("a.jpg, 0\nb.jpg\n")
    with pytest.raises(DataError, match=r"list.txt:2: expected 'relative/path.jpg, class_id'"):
        read_image_set(bad)
    bad.write_text("a.jpg, seven\n")
    with pytest.raises(DataError, match="class id 'seven' is not an integer"):
        read_image_set(bad)
    bad.write_text("a.jpg, 4\n")
    with pytest.raises(DataError, match=r"class id 4 is out of range \(expected 0..3\)"):
        read_image_set(bad, photos.labels)
    with pytest.raises(DataError, match="does not exist"):
        read_image_set(tmp_path / "nowhere")


def test_unreadable_files_are_skipped_and_counted(photos, tmp_path):
    folder = tmp_path / "mixed" / "Banana"
    folder.mkdir(parents=True)
    real = [p for p, i in photos.eval_items if photos.labels[i] == "Banana"][:3]
    for path in real:
        (folder / path.name).symlink_to(path)
    (folder / "notes.txt").write_text("not an image")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(real[0].read_bytes()[:200])
    skipped: list = []
    images = list(iter_images(read_image_set(folder.parent, photos.labels).images, skipped))
    assert len(images) == 3 and len(skipped) == 3
    assert all(image.ndim == 3 and image.shape[2] == 3 for _, image in images)


def test_spread_over_classes_is_round_robin_and_deterministic(photos):
    image_set = read_image_set(photos.train_list, photos.labels)
    picked = image_set.spread_over_classes(8)
    assert sorted(item.label_index for item in picked) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert picked == image_set.spread_over_classes(8)
    assert len(image_set.spread_over_classes(10_000)) == len(image_set.images)


def test_labels_file_rules(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_bytes("\ufeffApple\r\nBanana\r\n\r\n".encode())  # Notepad: a byte-order mark, CRLF, a blank line last
    assert read_labels(path) == ("Apple", "Banana")
    for blank in ("Apple\n\nBanana\n", "Apple\n   \nBanana\n"):  # a blank label would shift Banana to index 2
        path.write_text(blank)
        with pytest.raises(DataError, match="blank label at line 2"):
            read_labels(path)
    path.write_text("Apple\nApple\n")
    with pytest.raises(DataError, match="twice"):
        read_labels(path)
    path.write_text("\n")
    with pytest.raises(DataError, match="no labels"):
        read_labels(path)
