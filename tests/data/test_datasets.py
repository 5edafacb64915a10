"""Readers on tiny trees in each official layout, written here with OpenCV, Pillow and a hand-made PNG."""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from cpsl_tf.data.datasets import (
    DatasetError,
    Sample,
    check_pairs,
    image_shape,
    list_samples,
    load_image,
    load_label,
    read_raw_label,
    reader_for,
)

HEIGHT, WIDTH = 8, 16

# Cityscapes labelIds written into the tiny labels and their 19-class train ids (Cityscapes definitions):
# 7 road -> 0, 26 car -> 13, 24 person -> 11, 0 unlabeled -> ignore.
CITYSCAPES_LABEL = np.array([[7] * 8 + [26] * 4 + [24] * 2 + [0] * 2] * HEIGHT, dtype=np.uint8)
CITYSCAPES_TRAIN_IDS = np.array([[0] * 8 + [13] * 4 + [11] * 2 + [255] * 2] * HEIGHT, dtype=np.uint8)


def write_image(path: Path, seed: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """Write a random BGR image with OpenCV and return it in RGB order."""
    bgr = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), bgr)
    return bgr[..., ::-1]


def write_palette_label(path: Path, ids: np.ndarray) -> None:
    """An 8-bit palette PNG like GTA5's labels: pixel values are ids, the palette holds colours."""
    image = Image.fromarray(ids.astype(np.uint8), mode="L").convert("P")
    image.putpalette([(7 * i) % 256 for i in range(768)])
    image.putdata(ids.astype(np.uint8).ravel().tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def write_gray_label(path: Path, ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), ids.astype(np.uint8))


def write_png16(path: Path, channels: np.ndarray) -> None:
    """A 16-bit PNG written byte by byte (no OpenCV), channels in PNG order (R, G, B[, A])."""
    height, width, count = channels.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[count]
    rows = b"".join(b"\x00" + channels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def make_gta5_tree(root: Path, count: int = 4) -> Path:
    for i in range(1, count + 1):
        write_image(root / "images" / f"{i:05d}.png", seed=i)
        write_palette_label(root / "labels" / f"{i:05d}.png", CITYSCAPES_LABEL)
    return root


def make_cityscapes_tree(root: Path, cities: dict[str, dict[str, int]]) -> Path:
    """``cities`` maps split -> {city: number of images}."""
    for split, per_city in cities.items():
        for city, count in per_city.items():
            for i in range(count):
                name = f"{city}_{i:06d}_000019"
                write_image(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", seed=i)
                label = root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png"
                write_gray_label(label, CITYSCAPES_LABEL)
    return root


# --------------------------------------------------------------------------------------------- GTA5


def test_gta5_pairs_by_name_and_logs_unpaired_files(tmp_path, caplog):
    root = make_gta5_tree(tmp_path / "GTA5", count=3)
    write_image(root / "images" / "00009.png", seed=9)
    write_palette_label(root / "labels" / "00010.png", CITYSCAPES_LABEL)
    with caplog.at_level(logging.WARNING, logger="cpsl_tf.data.datasets"):
        samples = list_samples("gta5", root)
    assert [s.name for s in samples] == ["00001", "00002", "00003"]
    assert all(s.label == root / "labels" / f"{s.name}.png" and s.dataset == "gta5" for s in samples)
    assert "00009" in caplog.text and "without a label" in caplog.text
    assert "00010" in caplog.text and "without an image" in caplog.text


def test_gta5_palette_label_is_read_as_ids_not_colours(tmp_path):
    path = tmp_path / "00001.png"
    write_palette_label(path, CITYSCAPES_LABEL)
    # OpenCV would return palette colours here; the reader must return the stored ids.
    np.testing.assert_array_equal(read_raw_label(path, "gta5"), CITYSCAPES_LABEL)
    np.testing.assert_array_equal(load_label(path, "gta5"), CITYSCAPES_TRAIN_IDS)


def test_load_image_returns_rgb(tmp_path):
    path = tmp_path / "x.png"
    bgr = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV's order
    cv2.imwrite(str(path), bgr)
    image = load_image(str(path).encode())  # tf.numpy_function passes bytes
    assert image.dtype == np.uint8 and image.shape == (HEIGHT, WIDTH, 3)
    assert (image[..., 2] == 200).all() and (image[..., :2] == 0).all()


def test_unknown_label_ids_map_to_ignore(tmp_path):
    ids = CITYSCAPES_LABEL.copy()
    ids[0, 0] = 200
    path = tmp_path / "l.png"
    write_palette_label(path, ids)
    expected = CITYSCAPES_TRAIN_IDS.copy()
    expected[0, 0] = 255
    np.testing.assert_array_equal(load_label(path, "gta5"), expected)


def test_16_class_protocol_drops_truck_terrain_train(tmp_path):
    ids = np.array([[7, 22, 27, 31, 33, 26]], dtype=np.uint8)  # road terrain truck train bicycle car
    path = tmp_path / "l.png"
    write_gray_label(path, ids)
    # 16-class order: road 0 ... car 12, bus 13, motorcycle 14, bicycle 15.
    expected = [[0, 255, 255, 255, 15, 12]]
    np.testing.assert_array_equal(load_label(path, "cityscapes", num_classes=16), expected)


# --------------------------------------------------------------------------------------------- SYNTHIA


@pytest.mark.parametrize("count", [3, 4])
def test_synthia_class_id_is_the_first_png_channel(tmp_path, count):
    # SYNTHIA ids: 3 road, 10 pedestrian, 8 car, 1 sky, 0 void.
    red = np.array([[3, 3, 10, 8, 1, 0] * 2], dtype=np.uint16).repeat(2, axis=0)
    channels = np.stack([red, np.full_like(red, 8), np.full_like(red, 1), np.full_like(red, 65535)], axis=-1)
    path = tmp_path / "GT" / "LABELS" / "0000001.png"
    write_png16(path, channels[..., :count])
    np.testing.assert_array_equal(read_raw_label(path, "synthia"), red)
    # 16-class protocol: road 0, person 10, car 12, sky 9, void ignore.
    expected = np.array([[0, 0, 10, 12, 9, 255] * 2], dtype=np.uint8).repeat(2, axis=0)
    np.testing.assert_array_equal(load_label(path, "synthia", num_classes=16), expected)
    # 19-class protocol: road 0, person 11, car 13, sky 10.
    expected19 = np.array([[0, 0, 11, 13, 10, 255] * 2], dtype=np.uint8).repeat(2, axis=0)
    np.testing.assert_array_equal(load_label(path, "synthia", num_classes=19), expected19)


def test_synthia_layout(tmp_path):
    root = tmp_path / "RAND_CITYSCAPES"
    for i in range(3):
        write_image(root / "RGB" / f"{i:07d}.png", seed=i)
        write_png16(root / "GT" / "LABELS" / f"{i:07d}.png", np.full((HEIGHT, WIDTH, 3), 3, np.uint16))
    samples = list_samples("synthia", root, num_classes=16)
    assert [s.name for s in samples] == ["0000000", "0000001", "0000002"]
    assert samples[0].label == root / "GT" / "LABELS" / "0000000.png"
    good, bad = check_pairs(samples, decode=True)
    assert len(good) == 3 and not bad
    with pytest.raises(DatasetError, match="did you mean"):
        list_samples("synthia", root / "RGB")


# --------------------------------------------------------------------------------------------- Cityscapes


def test_cityscapes_splits_and_names(tmp_path):
    splits = {"train": {"aachen": 2, "bremen": 1}, "val": {"lindau": 2}}
    root = make_cityscapes_tree(tmp_path / "cityscapes", splits)
    train = list_samples("cityscapes", root, "train")
    val = list_samples("cityscapes", root, "val")
    assert [s.name for s in train] == ["aachen_000000_000019", "aachen_000001_000019", "bremen_000000_000019"]
    assert [s.name for s in val] == ["lindau_000000_000019", "lindau_000001_000019"]
    assert val[1].label == root / "gtFine/val/lindau/lindau_000001_000019_gtFine_labelIds.png"
    np.testing.assert_array_equal(load_label(val[0].label, "cityscapes"), CITYSCAPES_TRAIN_IDS)


def test_cityscapes_without_labels(tmp_path, caplog):
    root = make_cityscapes_tree(tmp_path / "cs", {"train": {"aachen": 2}})
    (root / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelIds.png").unlink()
    with caplog.at_level(logging.WARNING, logger="cpsl_tf.data.datasets"):
        samples = list_samples("cityscapes", root)
    assert samples[0].label is not None and samples[1].label is None
    assert "aachen_000001_000019" in caplog.text
    with pytest.raises(DatasetError, match="aachen_000001_000019"):
        list_samples("cityscapes", root, require_labels=True)


def test_cityscapes_root_one_level_off(tmp_path):
    root = make_cityscapes_tree(tmp_path / "data" / "cityscapes", {"train": {"aachen": 1}})
    with pytest.raises(DatasetError) as above:
        list_samples("cityscapes", tmp_path / "data")
    message = str(above.value)
    assert "leftImg8bit/train/<city>/*_leftImg8bit.png" in message
    assert "cityscapes/" in message  # what was found
    assert f"did you mean {root}?" in message
    with pytest.raises(DatasetError, match=f"did you mean {root}\\?"):
        list_samples("cityscapes", root / "leftImg8bit")
    with pytest.raises(DatasetError, match=r"splits \['train'\].*'val'"):
        list_samples("cityscapes", root, "val")


def test_colour_visualisation_label_is_rejected(tmp_path):
    path = tmp_path / "x_gtFine_color.png"
    write_image(path, seed=0)
    with pytest.raises(DatasetError, match="x_gtFine_color.png.*mode RGB"):
        load_label(path, "cityscapes")


# --------------------------------------------------------------------------------------------- folder


def test_folder_recursive_with_parallel_labels(tmp_path, caplog):
    root = tmp_path / "footage"
    write_image(root / "a.png", seed=0)
    write_image(root / "drive1" / "b.jpg", seed=1)
    write_image(root / "drive1" / "c.BMP", seed=2)
    (root / "notes.txt").write_text("not an image")
    labels = tmp_path / "labels"
    write_gray_label(labels / "a.png", CITYSCAPES_LABEL)
    write_gray_label(labels / "drive1" / "b.png", CITYSCAPES_LABEL)

    unlabelled = list_samples("folder", root)
    assert [s.name for s in unlabelled] == ["a", "drive1/b", "drive1/c"]
    assert all(s.label is None for s in unlabelled)
    assert load_image(unlabelled[1].image).shape == (HEIGHT, WIDTH, 3)

    with caplog.at_level(logging.WARNING, logger="cpsl_tf.data.datasets"):
        samples = list_samples("folder", root, label_root=labels)
    assert [s.label for s in samples] == [labels / "a.png", labels / "drive1" / "b.png", None]
    assert "drive1/c" in caplog.text
    np.testing.assert_array_equal(load_label(samples[0].label, "folder"), CITYSCAPES_TRAIN_IDS)
    with pytest.raises(DatasetError, match="drive1/c"):
        list_samples("folder", root, label_root=labels, require_labels=True)


def test_folder_label_root_inside_root_is_not_listed_as_images(tmp_path):
    root = tmp_path / "footage"
    write_image(root / "a.png", seed=0)
    write_gray_label(root / "labels" / "a.png", CITYSCAPES_LABEL)
    samples = list_samples("folder", root, label_root=root / "labels")
    assert [(s.name, s.label) for s in samples] == [("a", root / "labels" / "a.png")]


def test_empty_folder_and_missing_root(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no samples.*is empty"):
        list_samples("folder", tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        list_samples("gta5", tmp_path / "missing")
    (tmp_path / "gta" / "images").mkdir(parents=True)
    (tmp_path / "gta" / "labels").mkdir()
    with pytest.raises(DatasetError, match="images/NNNNN.png"):
        list_samples("gta5", tmp_path / "gta")


def test_bad_arguments(tmp_path):
    root = make_gta5_tree(tmp_path / "g", count=1)
    with pytest.raises(DatasetError, match="num_classes"):
        list_samples("gta5", root, num_classes=18)
    with pytest.raises(DatasetError, match="unknown dataset 'kitti'"):
        list_samples("kitti", root)
    with pytest.raises(DatasetError, match="label_root"):
        list_samples("gta5", root, label_root=root)
    assert issubclass(DatasetError, ValueError)


# --------------------------------------------------------------------------------------------- checks


def test_corrupt_and_mismatched_pairs(tmp_path, caplog):
    root = make_gta5_tree(tmp_path / "GTA5", count=4)
    truncate(root / "images" / "00002.png")
    write_image(root / "images" / "00003.png", seed=3, height=HEIGHT - 2)  # like GTA5's 1046-high images
    (root / "labels" / "00004.png").write_bytes(b"not a png at all")
    samples = list_samples("gta5", root)

    with pytest.raises(DatasetError, match="00002.png"):
        load_image(root / "images" / "00002.png")
    with pytest.raises(DatasetError, match="00004.png"):
        load_label(root / "labels" / "00004.png", "gta5")
    assert image_shape(root / "images" / "00003.png") == (HEIGHT - 2, WIDTH)

    with caplog.at_level(logging.WARNING, logger="cpsl_tf.data.datasets"):
        good, bad = check_pairs(samples, decode=True)
    assert [s.name for s in good] == ["00001"]
    reasons = {s.name: reason for s, reason in bad}
    assert set(reasons) == {"00002", "00003", "00004"}
    assert reasons["00002"].startswith("unreadable") and "00002.png" in reasons["00002"]
    assert reasons["00003"] == (
        "size mismatch: image 00003.png is 16x6 (WxH) but label 00003.png is 16x8"
    )
    assert "00004.png" in reasons["00004"]
    for name in ("00002", "00003", "00004"):
        assert name in caplog.text

    # Headers alone find the mismatch and the garbage file, not the truncated pixel data.
    good, bad = check_pairs(samples)
    assert [s.name for s in good] == ["00001", "00002"]
    assert [s.name for s, _ in bad] == ["00003", "00004"]

    with pytest.raises(DatasetError, match="00003.*00004"):
        check_pairs(samples, bad_samples="error")
    with pytest.raises(DatasetError, match="bad_samples"):
        check_pairs(samples, bad_samples="ignore")


def test_missing_file_is_named(tmp_path):
    sample = Sample("x", tmp_path / "x.png", None, "folder")
    with pytest.raises(DatasetError, match="x.png"):
        load_image(sample.image)
    _, bad = check_pairs([sample], decode=True)
    assert "x.png" in bad[0][1]


def test_reader_for_config_kinds():
    assert reader_for("bench", role="source") == "gta5"
    assert reader_for("bench", role="target") == "cityscapes"
    assert reader_for("gta5") == "gta5" and reader_for("folder", role="target") == "folder"
    with pytest.raises(DatasetError, match="role"):
        reader_for("bench")
    with pytest.raises(DatasetError, match="unknown dataset 'kitti'"):
        reader_for("kitti")
