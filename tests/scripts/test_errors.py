"""Ordinary mistakes on the deployment side are one message naming the file and what was expected, with exit
code 2, never a traceback: a missing or misspelt checkpoint or model, a damaged checkpoint, a dataset root or
folder that does not exist, a full disk. predict.py skips bad inputs, unless --strict."""

from __future__ import annotations

import errno
import shutil

import numpy as np
import pytest

from cpsl_tf.evaluation.cli import main as evaluate
from tests.evaluation.test_evaluate import write_cityscapes
from tests.export.conftest import tiny_model_and_meta
from tests.export.test_predict_limits import constant_model, small_image
from tests.scripts.test_help import load_script


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny real segmenter saved with its sidecar: ``<tmp>/tiny.weights.h5``."""
    from cpsl_tf.models.checkpoint import save_model_checkpoint

    model, meta = tiny_model_and_meta()
    path = tmp_path_factory.mktemp("checkpoint") / "tiny.weights.h5"
    save_model_checkpoint(model, path, meta)
    return path


def script_main(name: str):
    return evaluate if name == "evaluate" else load_script(name).main


def run(main, argv, capsys) -> tuple[int, str]:
    """Exit code and the one error line of a script's main."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) <= 1, err
    return code, errors[0] if errors else err


@pytest.mark.parametrize("script", ["evaluate", "export"])
def test_a_misspelt_checkpoint_is_named_with_the_one_meant(checkpoint, tmp_path, capsys, script):
    typo = checkpoint.with_name("tiny.weight.h5")
    code, error = run(script_main(script), ["--checkpoint", typo, "--out", tmp_path / "out.json"], capsys)
    assert code == 2
    assert error.startswith(f"error: {typo}: ") and f"did you mean {checkpoint}?" in error


@pytest.mark.parametrize("script", ["evaluate", "export"])
def test_a_damaged_checkpoint_is_one_message(checkpoint, tmp_path, capsys, script):
    damaged = tmp_path / "tiny.weights.h5"
    damaged.write_bytes(np.random.default_rng(0).bytes(4096))
    shutil.copy(checkpoint.with_name("tiny.json"), tmp_path / "tiny.json")
    code, error = run(script_main(script), ["--checkpoint", damaged, "--dataset", "cityscapes",
                                            "--root", tmp_path, "--out", tmp_path / "out"], capsys)
    assert code == 2 and error.startswith(f"error: {damaged}: the weights file is damaged")


@pytest.mark.parametrize("script", ["evaluate", "export"])
def test_a_dataset_root_that_does_not_exist(checkpoint, tmp_path, capsys, script):
    (tmp_path / "cityscapes").mkdir()
    root = tmp_path / "cityscape"
    code, error = run(script_main(script), ["--checkpoint", checkpoint, "--dataset", "cityscapes",
                                            "--root", root, "--out", tmp_path / "out"], capsys)
    assert code == 2 and f"{root} does not exist (did you mean {tmp_path / 'cityscapes'}?)" in error


def test_export_names_an_image_folder_that_does_not_exist(checkpoint, tmp_path, capsys):
    (tmp_path / "images").mkdir()
    code, error = run(load_script("export").main, ["--checkpoint", checkpoint, "--out", tmp_path / "out",
                                                   "--images", tmp_path / "image"], capsys)
    assert code == 2
    assert error == (f"error: {tmp_path / 'image'}: no such folder; expected a folder of images (.png, .jpg, "
                     f".jpeg, .bmp) (did you mean {tmp_path / 'images'}?)")


def test_evaluate_without_images_says_which_flags_give_them(checkpoint, capsys):
    code, error = run(evaluate, ["--checkpoint", checkpoint], capsys)
    assert code == 2 and "--dataset NAME --root DIR" in error


def test_predict_names_a_misspelt_model_and_input_folder(tmp_path, capsys):
    model = constant_model(tmp_path / "model", 3)
    photos = tmp_path / "photos"
    photos.mkdir()
    small_image(photos / "a.png")
    predict = load_script("predict").main
    code, error = run(predict, ["--model", model.with_name("model.onx"), photos, "--out", tmp_path / "out"],
                      capsys)
    assert code == 2 and f"(did you mean {model}?)" in error
    code, error = run(predict, ["--model", model, tmp_path / "photoz", "--out", tmp_path / "out"], capsys)
    assert code == 2 and f"(did you mean {photos}?)" in error


def test_predict_skips_a_corrupt_image_and_stops_on_it_with_strict(tmp_path, capsys):
    model = constant_model(tmp_path / "model", 3)
    photos = tmp_path / "photos"
    photos.mkdir()
    small_image(photos / "b_good.png")
    (photos / "a_bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    predict = load_script("predict").main
    code, err = run(predict, ["--model", model, photos, "--out", tmp_path / "out"], capsys)
    assert code == 1 and f"skipped: {photos / 'a_bad.png'}: not a readable image file" in err
    assert (tmp_path / "out" / "b_good_classes.png").is_file()
    code, error = run(predict, ["--model", model, photos, "--out", tmp_path / "strict", "--strict"], capsys)
    assert code == 2 and error.startswith(f"error: {photos / 'a_bad.png'}: not a readable image file")
    assert not (tmp_path / "strict" / "b_good_classes.png").exists()


def test_predict_on_a_full_disk_is_one_message(tmp_path, capsys, monkeypatch):
    import cv2

    model = constant_model(tmp_path / "model", 3)
    image = small_image(tmp_path / "frame.png")

    def no_space(path, image):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(cv2, "imwrite", no_space)
    out = tmp_path / "out"
    code, error = run(load_script("predict").main, ["--model", model, image, "--out", out], capsys)
    assert code == 2
    assert error.startswith(f"error: no space left on the device for {out / 'frame_classes.png'}")


def test_evaluate_on_a_full_disk_is_one_message(checkpoint, tmp_path, capsys, monkeypatch, rng):
    import cpsl_tf.io_utils

    write_cityscapes(tmp_path / "cityscapes", rng)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(cpsl_tf.io_utils.shutil, "disk_usage", lambda path: usage._replace(free=0))
    out = tmp_path / "scores.json"
    code, error = run(evaluate, ["--checkpoint", checkpoint, "--dataset", "cityscapes", "--root",
                                 tmp_path / "cityscapes", "--out", out, "--quiet"], capsys)
    assert code == 2 and error.startswith(f"error: no space left on the device for {out}")


def test_convert_names_a_missing_checkpoint(tmp_path, capsys):
    (tmp_path / "model.pth").touch()
    convert = load_script("convert_checkpoint").main
    code, error = run(convert, [tmp_path / "modl.pth", tmp_path / "x.weights.h5"], capsys)
    assert code == 2 and error.startswith(f"error: {tmp_path / 'modl.pth'}")


def test_train_names_a_misspelt_config(capsys):
    from cpsl_tf.training.cli import main as train
    from tests.conftest import REPO

    code, error = run(train, ["--config", REPO / "configs" / "bench.jsn"], capsys)
    assert code == 2 and f"(did you mean {REPO / 'configs' / 'bench.json'}?)" in error
