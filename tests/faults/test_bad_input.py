"""Bad input gives a clear error naming the file or key (or, with data.bad_samples="skip", a warning and
the sample left out), never a traceback from inside TensorFlow. Everything runs through scripts/train.py's
main() on tiny trees."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from cpsl_tf.config import load_config
from cpsl_tf.training.cli import main
from cpsl_tf.training.inputs import stage_samples
from tests.faults.conftest import copy_bench, copy_run, tiny_config, write_config


def train(tmp_path, raw: dict, capsys, *args) -> tuple[int, str]:
    config = write_config(tmp_path / "tiny.json", raw)
    code = main(["--config", str(config), "--run-dir", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def corrupt(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def shrink_label(path: Path) -> None:
    """Rewrite a palette label at half width: its image no longer matches."""
    with Image.open(path) as label:
        label.resize((label.width // 2, label.height), Image.NEAREST).save(path)


def first(folder: Path, pattern: str) -> Path:
    return sorted(folder.glob(pattern))[0]


@pytest.mark.parametrize("change, key, expected", [
    ({"train": {"batch_sise": 2}}, "'train.batch_sise'", "unknown key"),
    ({"warmup": {"iterations": "many"}}, "'warmup.iterations'", "must be an integer"),
    ({"data": {"bad_samples": "ignore"}}, "'data.bad_samples'", "must be one of 'error', 'skip'"),
])
def test_config_with_unknown_key_or_wrong_type_is_named(tiny_bench, tmp_path, capsys, change, key, expected):
    code, err = train(tmp_path, tiny_config(tiny_bench, change), capsys)
    assert code == 2
    assert key in err and expected in err and str(tmp_path / "tiny.json") in err


def test_empty_source_folder_is_named(tiny_bench, tmp_path, capsys):
    empty = tmp_path / "gta5"
    empty.mkdir()
    raw = tiny_config(tiny_bench, {"data": {"source": "gta5", "source_root": str(empty),
                                            "target": "cityscapes"}})
    code, err = train(tmp_path, raw, capsys, "--stage", "warmup")
    assert code == 2
    assert f"found {empty} is empty" in err


@pytest.mark.parametrize("damage, what", [(corrupt, "not a readable image header"),
                                          (shrink_label, "size mismatch")])
def test_bad_pair_stops_before_training_when_bad_samples_is_error(tiny_bench, tmp_path, capsys, damage, what):
    bench = copy_bench(tiny_bench, tmp_path / "bench")
    image = first(bench / "source" / "images", "*.png")
    damage(image if damage is corrupt else bench / "source" / "labels" / image.name)
    raw = tiny_config(bench, {"data": {"bad_samples": "error"}})
    code, err = train(tmp_path, raw, capsys, "--stage", "warmup")
    assert code == 2
    assert what in err and image.stem in err and "data.bad_samples='skip'" in err
    # Refused by the check before any training, not by tf.data in the middle of it.
    assert not (tmp_path / "run" / "warmup" / "checkpoints").exists()


def test_bad_pairs_are_left_out_with_a_warning_when_bad_samples_is_skip(tiny_bench, tmp_path, caplog):
    bench = copy_bench(tiny_bench, tmp_path / "bench")
    corrupt_image = first(bench / "source" / "images", "*.png")
    corrupt(corrupt_image)
    mismatched = sorted((bench / "source" / "labels").glob("*.png"))[1]
    shrink_label(mismatched)
    unreadable_val = first(bench / "target" / "gtFine" / "val", "*/*_labelIds.png")
    corrupt(unreadable_val)
    cfg = load_config(write_config(tmp_path / "tiny.json", tiny_config(bench)))
    assert cfg.data.bad_samples == "skip"
    with caplog.at_level(logging.WARNING):
        samples = stage_samples(cfg)
    names = {s.name for s in samples.source}
    assert len(names) == 4 and corrupt_image.stem not in names and mismatched.stem not in names
    val_name = unreadable_val.name[: -len("_gtFine_labelIds.png")]
    assert len(samples.target_val) == 3 and val_name not in {s.name for s in samples.target_val}
    assert len(samples.target_train) == 6
    text = caplog.text
    assert str(corrupt_image) in text and mismatched.name in text and str(unreadable_val) in text


def test_truncated_image_found_while_decoding_is_named(tiny_bench, tmp_path, capsys):
    """The header is intact, so only decoding (inside tf.data) finds it: the stage ends with its name."""
    bench = copy_bench(tiny_bench, tmp_path / "bench")
    # The warm-up of this very data (a model trained on other data roots is refused by the next stage).
    code, err = train(tmp_path, tiny_config(bench), capsys, "--stage", "warmup")
    assert code == 0, err
    image = first(bench / "target" / "leftImg8bit" / "train", "*/*.png")
    truncate(image)
    code, err = train(tmp_path, tiny_config(bench), capsys, "--stage", "pseudo")
    assert code == 2
    assert f"{image}: not a readable image" in err


def test_label_ids_outside_the_table_are_named(tiny_bench, tmp_path, capsys):
    bench = copy_bench(tiny_bench, tmp_path / "bench")
    for path in (bench / "source" / "labels").glob("*.png"):
        with Image.open(path) as label:
            label.load()
            label.putpixel((0, 0), 200)  # a palette index = a raw id; GTA5 ids end at 34
            label.save(path)
    code, err = train(tmp_path, tiny_config(bench), capsys, "--stage", "warmup")
    assert code == 2
    assert "label ids [200] are outside the gta5 id table (0-34)" in err
    assert str(bench / "source" / "labels") in err


def _store_index(run: Path) -> Path:
    return run / "pseudo" / "soft" / "index.json"


def test_store_lacking_an_image_is_named(trained_run, tmp_path, capsys):
    config, run = trained_run
    copy_run(run, tmp_path / "run")
    index = json.loads(_store_index(tmp_path / "run").read_text())
    dropped = sorted(index["records"])[0]
    del index["records"][dropped]
    _store_index(tmp_path / "run").write_text(json.dumps(index))
    code = main(["--config", str(config), "--run-dir", str(tmp_path / "run"), "--stage", "cpsl"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "no map for 1 target images" in err and dropped in err


def test_store_missing_a_shard_file_is_named(trained_run, tmp_path, capsys):
    config, run = trained_run
    copy_run(run, tmp_path / "run")
    shard = first(tmp_path / "run" / "pseudo" / "soft", "shard-*.bin")
    shard.unlink()
    code = main(["--config", str(config), "--run-dir", str(tmp_path / "run"), "--stage", "cpsl"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"shard {shard.name} should hold" in err and "missing" in err
