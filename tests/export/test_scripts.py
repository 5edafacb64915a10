"""scripts/export.py and scripts/predict.py on a tiny checkpoint: gate, manifest, same maps per backend."""

from __future__ import annotations

import importlib.util
import json
import re

import cv2
import numpy as np
import pytest

from tests.conftest import REPO
from tests.export.conftest import tiny_model_and_meta, write_image_folder


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    checkpoint_module = pytest.importorskip("cpsl_tf.models.checkpoint")
    root = tmp_path_factory.mktemp("scripts")
    model, meta = tiny_model_and_meta()
    checkpoint = root / "tiny.weights.h5"
    checkpoint_module.save_model_checkpoint(model, checkpoint, meta)
    images, labels = write_image_folder(root / "val", 2, size=(40, 72))
    out = root / "export"
    code = load_script("export").main(["--checkpoint", str(checkpoint), "--out", str(out), "--height", "32",
                                       "--width", "48", "--images", str(images), "--labels", str(labels)])
    return root, checkpoint, images, out, code


def test_export_script_writes_model_and_manifest_with_parity(exported):
    root, checkpoint, images, out, code = exported
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    for key in ("max_abs_logit_diff", "argmax_agreement", "miou_keras", "miou_onnx"):
        assert manifest["parity"][key] is not None
    assert manifest["source_checkpoint_sha256"] and (out / "model.onnx").is_file()
    assert manifest["evaluation_data"] == {"image_folder": str(images), "images": 2,
                                           "label_folder": str(root / "val" / "labels")}
    assert (out / "build_engine.sh").is_file()


def test_export_script_fails_loudly_without_images(exported, capsys):
    _, checkpoint, _, out, _ = exported
    assert load_script("export").main(["--checkpoint", str(checkpoint), "--out", str(out / "x")]) == 2
    assert "needs target images" in capsys.readouterr().err


def test_checkpoint_and_onnx_give_the_same_maps_on_images_and_video(exported, capsys):
    root, checkpoint, images, out, _ = exported
    video = root / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (72, 40))
    first = cv2.imread(str(sorted(images.iterdir())[0]))
    for index in range(3):
        writer.write(np.full((40, 72, 3), 40 * index, np.uint8) + first)
    writer.release()
    predict = load_script("predict")
    results = {}
    for backend, model_path in (("keras", checkpoint), ("onnx", out / "model.onnx")):
        target = root / f"pred_{backend}"
        assert predict.main(["--model", str(model_path), str(images), str(video), "--out", str(target),
                             "--size", "32", "48", "--video-maps", "--alpha", "0.3"]) == 0
        results[backend] = target
        # 2 images + 3 frames: the first call is warm-up, the median of the other 4 is the rate.
        timing = re.search(r"model ([0-9.]+) ms/frame median \(([0-9.]+) FPS\) over 4 frames after the first "
                           r"\(([0-9.]+) ms, warm-up\); end to end .* ([0-9.]+) frames/s",
                           capsys.readouterr().out)
        assert timing, backend
        milliseconds, fps = float(timing[1]), float(timing[2])
        assert fps > 0 and abs(1000 / fps - milliseconds) <= 0.05 + 0.01 * milliseconds  # printed rounding
    keras_maps = sorted(results["keras"].glob("*_classes.png"))
    assert len(keras_maps) == 2 + 3
    for path in keras_maps:
        a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(results["onnx"] / path.name), cv2.IMREAD_UNCHANGED)
        assert a.shape == (40, 72) and (a == b).mean() >= 0.999
    assert (results["onnx"] / "clip_overlay.mp4").stat().st_size > 0
    overlay = cv2.imread(str(results["onnx"] / "img000_overlay.png"))
    assert overlay.shape[0] == 40 and overlay.shape[1] > 72  # overlay + legend
