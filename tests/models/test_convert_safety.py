"""A checkpoint is data, not code: the converter reads it with torch's safe loader and refuses a pickle that
would call anything (issue 15). The official files' NumPy scalars and arrays still load."""

from __future__ import annotations

import os
import shlex
import sys

import numpy as np
import pytest

from tests.conftest import REPO

torch = pytest.importorskip("torch", reason="checkpoint conversion needs PyTorch "
                            "(pip install 'cpsl-tf[convert]')")

from cpsl_tf.models.convert import (  # noqa: E402
    ConversionError,
    UnsafeCheckpointError,
    read_official_checkpoint,
)


class Payload:
    """Unpickling this runs a shell command (the attack of issue 15)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def convert_script():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import convert_checkpoint
    finally:
        sys.path.pop(0)
    return convert_checkpoint


def official_like(prototypes=None) -> dict:
    """The official wrapper's shape with its NumPy members: float64 best_iou, a NumPy int iteration."""
    state = {"conv1.weight": torch.randn(8, 3, 7, 7), "bn1.running_var": torch.rand(8),
             "bn1.num_batches_tracked": torch.tensor(3)}
    inner = {"model_state": state}
    if prototypes is not None:
        inner["prototypes_ema"] = prototypes
    return {"ResNet101": inner, "iter": np.int64(1234), "best_iou": np.float64(0.5)}


def malicious(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil_best_model.pkl"
    checkpoint = official_like()
    checkpoint["ResNet101"]["extra"] = Payload(f"touch {shlex.quote(str(marker))}")
    torch.save(checkpoint, path)
    return path, marker


def test_a_checkpoint_that_would_run_code_is_refused_before_it_runs(tmp_path, capsys):
    path, marker = malicious(tmp_path)
    with pytest.raises(UnsafeCheckpointError, match="could run code"):
        read_official_checkpoint(path)
    assert not marker.exists()

    destination = tmp_path / "out.weights.h5"
    assert convert_script().main([str(path), str(destination)]) == 2
    err = capsys.readouterr().err
    assert not marker.exists(), "the pickle's command ran"
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(path) in err and "refused" in err and "system" in err and "--trust-checkpoint-code" in err
    assert not destination.exists()


def test_trust_flag_is_the_loud_opt_out(tmp_path, capsys):
    path, marker = malicious(tmp_path)
    # The file vouched for runs its code (that is what the flag means), then fails to convert, cleanly.
    destination = tmp_path / "out.weights.h5"
    assert convert_script().main([str(path), str(destination), "--trust-checkpoint-code"]) == 2
    err = capsys.readouterr().err
    assert marker.exists()
    assert "WARNING" in err and "any code in it runs" in err and "Traceback" not in err


def test_official_numpy_members_load_with_the_safe_loader(tmp_path):
    path = tmp_path / "stage1_best_model.pkl"
    prototypes = np.random.default_rng(0).random((19, 32)).astype(np.float32)  # a NumPy array member
    torch.save(official_like(prototypes), path)
    state, read_prototypes, info = read_official_checkpoint(path)
    assert info == {"iter": 1234, "best_iou": 0.5}
    assert list(state) == ["conv1.weight", "bn1.running_var"]
    np.testing.assert_array_equal(read_prototypes, prototypes)


def test_files_written_under_numpy_1_names_load(tmp_path):
    """NumPy 1 pickles name numpy.core.multiarray.scalar (NumPy 2: numpy._core); the official files are
    old."""
    path = tmp_path / "legacy.pkl"
    torch.save(official_like(), path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    assert b"numpy._core.multiarray" in data
    path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    _, _, info = read_official_checkpoint(path)
    assert info == {"iter": 1234, "best_iou": 0.5}


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "objects.pkl"
    checkpoint = official_like()
    checkpoint["best_iou"] = np.array([0.5, "x"], dtype=object)
    torch.save(checkpoint, path)
    with pytest.raises(UnsafeCheckpointError, match=str(path)):
        read_official_checkpoint(path)


@pytest.mark.parametrize("content", [np.random.default_rng(0).bytes(512), b"", b"PK\x03\x04truncated"],
                         ids=["random", "empty", "truncated"])
def test_unreadable_files_are_named_without_a_traceback(tmp_path, capsys, content):
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(ConversionError, match="not a"):
        read_official_checkpoint(path)
    assert convert_script().main([str(path), str(tmp_path / "out.weights.h5")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err
