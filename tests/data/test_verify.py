"""The verification CLI, run in-process on tiny trees with known contents."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cpsl_tf.data.verify import EXIT_BAD_LAYOUT, EXIT_OK, EXIT_UNREADABLE, main, verify_dataset
from tests.conftest import REPO
from tests.data.test_datasets import (
    CITYSCAPES_LABEL,
    HEIGHT,
    WIDTH,
    make_cityscapes_tree,
    make_gta5_tree,
    truncate,
    write_image,
    write_palette_label,
    write_png16,
)

# CITYSCAPES_LABEL per 8x16 image: 64 road (7), 32 car (26), 16 person (24), 16 unlabeled (0).
ROAD, CAR, PERSON, VOID = 8 * HEIGHT, 4 * HEIGHT, 2 * HEIGHT, 2 * HEIGHT


def test_gta5_report_with_corrupt_mismatched_and_unknown(tmp_path, capsys):
    root = make_gta5_tree(tmp_path / "GTA5", count=5)
    truncate(root / "images" / "00002.png")
    write_image(root / "images" / "00003.png", seed=3, height=HEIGHT - 2)
    unknown = CITYSCAPES_LABEL.copy()
    unknown[:, -2:] = 200  # replaces the 16 void pixels
    write_palette_label(root / "labels" / "00004.png", unknown)
    out_json, out_plot = tmp_path / "report.json", tmp_path / "hist.png"

    code = main([
        "verify", "--dataset", "gta5", "--root", str(root), "--json", str(out_json),
        "--plot", str(out_plot), "--no-progress", "--workers", "2",
    ])
    assert code == EXIT_UNREADABLE
    captured = capsys.readouterr()
    assert "00002.png" in captured.out and "unreadable" in captured.out
    assert "00003: image 16x6, label 16x8" in captured.out
    assert "unknown label ids" in captured.out and "200 (16 px)" in captured.out and "00004" in captured.out
    assert "unreadable file" in captured.err

    report = json.loads(out_json.read_text())
    assert report["num_samples"] == 5 and report["num_labelled"] == 5 and report["num_usable"] == 3
    assert report["image_sizes"] == {"16x8": 3, "16x6": 1}
    assert report["label_sizes"] == {"16x8": 5}
    assert [entry["name"] for entry in report["unreadable"]] == ["00002"]
    assert [(m["name"], m["image_size"], m["label_size"]) for m in report["size_mismatches"]] == [
        ("00003", "16x6", "16x8")
    ]
    assert report["raw_id_range"] == [0, 200]
    expected_ids = {"0": 4 * VOID, "7": 5 * ROAD, "24": 5 * PERSON, "26": 5 * CAR, "200": 16}
    assert report["raw_id_pixels"] == expected_ids
    assert report["ignored_ids"] == [0, 200]
    assert report["unknown_ids"] == {"200": 16} and report["unknown_id_files"] == ["00004"]
    assert report["label_pixels"] == 5 * HEIGHT * WIDTH and report["ignore_pixels"] == 5 * VOID
    pixels = report["class_pixels"]
    assert (pixels["road"], pixels["car"], pixels["person"]) == (5 * ROAD, 5 * CAR, 5 * PERSON)
    assert sum(pixels.values()) == 5 * (ROAD + CAR + PERSON)
    assert report["class_images"]["car"] == 5 and report["class_images"]["sky"] == 0
    assert out_plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_clean_cityscapes_val_exits_zero(tmp_path, capsys):
    root = make_cityscapes_tree(tmp_path / "cityscapes", {"train": {"aachen": 1}, "val": {"lindau": 3}})
    out_json = tmp_path / "r.json"
    code = main(["verify", "--dataset", "cityscapes", "--root", str(root), "--split", "val",
                 "--num-classes", "16", "--json", str(out_json), "--no-progress"])
    assert code == EXIT_OK
    out = capsys.readouterr().out
    assert "3 samples, 3 with labels, 3 usable" in out and "split val" in out
    report = json.loads(out_json.read_text())
    assert report["split"] == "val" and report["num_classes"] == 16
    assert len(report["class_pixels"]) == 16 and report["class_pixels"]["car"] == 3 * CAR
    assert report["unknown_ids"] == {} and report["unreadable"] == [] and report["size_mismatches"] == []


def test_synthia_histogram_uses_the_red_channel(tmp_path):
    root = tmp_path / "RAND_CITYSCAPES"
    red = np.zeros((HEIGHT, WIDTH), np.uint16)
    red[:, :4] = 3  # road
    red[:, 4:] = 8  # car
    channels = np.stack([red, np.full_like(red, 10), np.full_like(red, 1)], axis=-1)  # G, B: decoys
    for i in range(2):
        write_image(root / "RGB" / f"{i:07d}.png", seed=i)
        write_png16(root / "GT" / "LABELS" / f"{i:07d}.png", channels)
    report = verify_dataset("synthia", root, num_classes=16, progress=False)
    assert report["raw_id_pixels"] == {"3": 2 * 4 * HEIGHT, "8": 2 * 12 * HEIGHT}
    pixels = report["class_pixels"]
    assert pixels["road"] == 2 * 4 * HEIGHT and pixels["car"] == 2 * 12 * HEIGHT
    assert pixels["person"] == 0 and pixels["sky"] == 0


def test_wrong_layout_exits_2_with_a_hint(tmp_path, capsys):
    root = make_gta5_tree(tmp_path / "downloads" / "GTA5", count=1)
    code = main(["verify", "--dataset", "gta5", "--root", str(tmp_path / "downloads"), "--no-progress"])
    assert code == EXIT_BAD_LAYOUT
    err = capsys.readouterr().err
    assert "images/NNNNN.png" in err and f"did you mean {root}?" in err

    (tmp_path / "empty").mkdir()
    assert main(["verify", "--dataset", "folder", "--root", str(tmp_path / "empty"), "--no-progress"]) == 2
    assert "no samples" in capsys.readouterr().err


def test_folder_without_labels(tmp_path, capsys):
    write_image(tmp_path / "f" / "x.jpg", seed=0)
    assert main(["verify", "--dataset", "folder", "--root", str(tmp_path / "f"), "--no-progress"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "1 samples, 0 with labels, 1 usable" in out and "no labels" in out


def test_script_entry_point(tmp_path):
    if not (REPO / "scripts" / "prepare_data.py").exists():
        pytest.skip("scripts/prepare_data.py is not present")
    root = make_gta5_tree(tmp_path / "GTA5", count=2)
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "prepare_data.py"), "verify", "--dataset", "gta5",
         "--root", str(root), "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "2 samples, 2 with labels, 2 usable" in result.stdout
