"""A missing file or folder typed by the user is named with what was expected and, when a name beside it is
close, the path that probably was meant."""

from __future__ import annotations

import pytest

from cpsl_tf.command import UserError
from cpsl_tf.user_paths import MissingPathError, did_you_mean, require_file, require_folder


def test_a_typo_in_the_file_name_suggests_the_existing_file(tmp_path):
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "model.onnx").touch()
    with pytest.raises(MissingPathError) as caught:
        require_file(tmp_path / "exports" / "model.onx", "an ONNX model")
    assert str(caught.value) == (f"{tmp_path}/exports/model.onx: no such file; expected an ONNX model "
                                 f"(did you mean {tmp_path}/exports/model.onnx?)")
    assert isinstance(caught.value, UserError) and isinstance(caught.value, FileNotFoundError)


def test_a_typo_in_a_folder_of_the_path_is_corrected_there(tmp_path):
    (tmp_path / "exports" / "bench").mkdir(parents=True)
    (tmp_path / "exports" / "bench" / "model.onnx").touch()
    assert did_you_mean(tmp_path / "exprts" / "bench" / "model.onnx") == (
        f" (did you mean {tmp_path}/exports/bench/model.onnx?)")


def test_no_suggestion_when_nothing_is_close(tmp_path):
    (tmp_path / "weights.h5").touch()
    assert did_you_mean(tmp_path / "photos") == ""
    assert did_you_mean(tmp_path / "nowhere" / "deeper" / "x.png") == ""


def test_a_folder_where_a_file_is_expected_and_the_reverse(tmp_path):
    (tmp_path / "file.png").touch()
    with pytest.raises(MissingPathError, match="is a folder; expected a model"):
        require_file(tmp_path, "a model")
    with pytest.raises(MissingPathError, match="is a file, not a folder; expected images"):
        require_folder(tmp_path / "file.png", "images")
    assert require_folder(tmp_path, "images") == tmp_path
