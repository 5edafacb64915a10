"""scripts/predict.py treats images and models as untrusted (issue 15): a pixel limit checked on the header
before decoding, one clear message for unreadable image and model files, and class ids checked against the
manifest. Tiny inputs and a hand-made ONNX model that predicts one constant class id."""

from __future__ import annotations

import importlib.util
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from cpsl_tf.export.manifest import make_manifest, manifest_path, write_manifest
from cpsl_tf.labels import class_names
from tests.conftest import REPO

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

SIZE = (8, 12)  # the model's input (height, width)


def load_predict():
    spec = importlib.util.spec_from_file_location("script_predict", REPO / "scripts" / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def constant_model(folder: Path, class_id: int, num_classes: int = 19) -> Path:
    """``folder/model.onnx`` (NHWC image in, int32 class map out, every pixel ``class_id``) + manifest."""
    from onnx import TensorProto, helper

    height, width = SIZE
    nodes = [
        helper.make_node("ReduceMax", ["image"], ["peak"], axes=[3], keepdims=0),
        helper.make_node("Mul", ["peak", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "class_id"], ["ids"]),
        helper.make_node("Cast", ["ids"], ["class_map"], to=TensorProto.INT32),
    ]
    graph = helper.make_graph(
        nodes, "constant",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", height, width, 3])],
        [helper.make_tensor_value_info("class_map", TensorProto.INT32, ["batch", height, width])],
        initializer=[helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
                     helper.make_tensor("class_id", TensorProto.FLOAT, [], [float(class_id)])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save(model, path)
    write_manifest(manifest_path(path), make_manifest(
        artefact=path, kind="onnx", precision="float32", height=height, width=width, layout="nhwc",
        output="argmax", argmax_dtype="int32", class_names=class_names(num_classes), input_mean=[0.0] * 3,
        input_std=[1.0] * 3, opset=17, checkpoint=None, align_corners=True))
    return path


def small_image(path: Path, size=(40, 72)) -> Path:
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8))
    return path


def huge_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A valid 1-bit PNG of width x height, all black: a few hundred kB on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit per pixel, grey
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))
    return path


def run(argv, capsys) -> tuple[int, str]:
    code = load_predict().main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.fixture
def no_decoding_of(monkeypatch):
    """Fail the test if predict decodes one of the listed files (checked before any buffer is made)."""
    import cpsl_tf.export.preprocess as preprocess

    refused: set[Path] = set()
    original = preprocess.read_rgb

    def guarded(path):
        assert Path(path) not in refused, f"{path} was decoded"
        return original(path)

    monkeypatch.setattr(preprocess, "read_rgb", guarded)
    return refused


def test_an_image_above_the_pixel_limit_is_refused_from_its_header(tmp_path, capsys, no_decoding_of):
    model = constant_model(tmp_path / "model", 3)
    images = tmp_path / "images"
    images.mkdir()
    big = huge_png(images / "big.png")
    assert big.stat().st_size < 2_000_000
    small_image(images / "small.png")
    no_decoding_of.add(big)
    code, err = run(["--model", model, images, "--out", tmp_path / "out"], capsys)
    assert code == 1
    assert f"skipped: {big}: image of 20000x20000 = 400.0 megapixels is above the limit of 64.0" in err
    assert "--max-pixels" in err and "1 of 2 inputs skipped" in err
    assert (tmp_path / "out" / "small_classes.png").is_file()
    assert not (tmp_path / "out" / "big_classes.png").exists()


def test_the_pixel_limit_is_configurable(tmp_path, capsys, no_decoding_of):
    model = constant_model(tmp_path / "model", 3)
    image = small_image(tmp_path / "frame.png")  # 40 x 72 = 2880 pixels
    no_decoding_of.add(image)
    code, err = run(["--model", model, image, "--out", tmp_path / "out", "--max-pixels", 2879], capsys)
    assert code == 1 and "frame.png: image of 72x40" in err
    no_decoding_of.clear()
    code, _ = run(["--model", model, image, "--out", tmp_path / "out", "--max-pixels", 2880], capsys)
    assert code == 0
    classes = cv2.imread(str(tmp_path / "out" / "frame_classes.png"), cv2.IMREAD_UNCHANGED)
    assert classes.shape == (40, 72) and (classes == 3).all()


def test_a_video_with_frames_above_the_limit_is_refused(tmp_path, capsys):
    model = constant_model(tmp_path / "model", 3)
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (72, 40))
    for _ in range(2):
        writer.write(np.zeros((40, 72, 3), np.uint8))
    writer.release()
    code, err = run(["--model", model, video, "--out", tmp_path / "out", "--max-pixels", 1000], capsys)
    assert code == 1 and f"{video}: video frame of 72x40" in err
    assert not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("damage", ["header_only", "truncated", "random_bytes"])
def test_an_unreadable_image_is_named_and_skipped(tmp_path, capsys, damage):
    model = constant_model(tmp_path / "model", 3)
    images = tmp_path / "images"
    images.mkdir()
    data = small_image(images / "good.png").read_bytes()
    bad = images / "bad.png"
    bad.write_bytes({"header_only": data[:33],  # signature + IHDR, no pixel data
                     "truncated": data[: len(data) // 2],
                     "random_bytes": np.random.default_rng(0).bytes(300)}[damage])
    code, err = run(["--model", model, images, "--out", tmp_path / "out"], capsys)
    assert code == 1
    assert f"skipped: {bad}: not a readable image file" in err
    assert (tmp_path / "out" / "good_classes.png").is_file()


@pytest.mark.parametrize("damage", ["random_onnx", "no_manifest", "damaged_manifest", "random_checkpoint"])
def test_an_unreadable_model_is_named_without_a_traceback(tmp_path, capsys, damage):
    image = small_image(tmp_path / "frame.png")
    if damage == "random_checkpoint":
        model = tmp_path / "model.weights.h5"
        model.write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        model = constant_model(tmp_path / "model", 3)
        if damage == "random_onnx":
            model.write_bytes(np.random.default_rng(0).bytes(4096))
        elif damage == "no_manifest":
            manifest_path(model).unlink()
        else:
            manifest_path(model).write_text('{"input": ')
    code, err = run(["--model", model, image, "--out", tmp_path / "out"], capsys)
    assert code == 2
    assert err.startswith(f"error: {model}") and len(err.strip().splitlines()) == 1


def test_class_ids_outside_the_manifest_stop_the_run(tmp_path, capsys):
    model = constant_model(tmp_path / "model", 200)  # argmax 200 under a 19-class manifest
    image = small_image(tmp_path / "frame.png")
    code, err = run(["--model", model, image, "--out", tmp_path / "out"], capsys)
    assert code == 2
    assert "predicted class id 200" in err and "19 classes" in err and str(image) in err
    assert not list((tmp_path / "out").glob("*.png"))
