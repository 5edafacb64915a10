"""One way for every script to end: a mistake in the inputs is one line and exit code 2, a bug its traceback
and exit code 1, Ctrl-C one line and exit code 130."""

from __future__ import annotations

import pytest

from cpsl_tf.command import EXIT_BUG, EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError, run_command
from cpsl_tf.io_utils import DiskFullError


def _raising(err: BaseException):
    def body() -> int:
        raise err

    return body


@pytest.mark.parametrize("err", [UserError("model.onnx: not found"), DiskFullError("no space left"),
                                 FileNotFoundError(2, "No such file or directory", "photos")])
def test_a_mistake_in_the_inputs_is_one_line_and_exit_code_2(err, capsys):
    assert run_command(_raising(err)) == EXIT_USER_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")


def test_an_os_error_names_its_file(capsys):
    run_command(_raising(PermissionError(13, "Permission denied", "out/x.png")))
    assert capsys.readouterr().err == "error: out/x.png: Permission denied\n"


def test_the_error_classes_of_the_inputs_are_user_errors():
    from cpsl_tf.config import ConfigError
    from cpsl_tf.data.datasets import DatasetError
    from cpsl_tf.models.checkpoint import CheckpointError
    from cpsl_tf.training.stages import StageError

    for cls in (ConfigError, DatasetError, CheckpointError, StageError):
        assert issubclass(cls, UserError), cls


def test_a_bug_prints_its_traceback_and_exits_with_1(capsys):
    assert run_command(_raising(KeyError("surprise"))) == EXIT_BUG
    assert "Traceback" in capsys.readouterr().err


def test_ctrl_c_prints_the_given_line_and_exits_with_130(capsys):
    assert run_command(_raising(KeyboardInterrupt()), interrupted="interrupted; rerun") == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "interrupted; rerun\n"


def test_the_body_exit_code_is_returned():
    assert run_command(lambda: 0) == 0
