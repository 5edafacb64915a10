"""Generated two-domain benchmark: layouts, determinism, label ids, class coverage, domain gap, skipping."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cpsl_tf.benchmark.generate import generate_benchmark, image_rng, render_scene
from cpsl_tf.benchmark.style import domain_styles
from cpsl_tf.labels import CITYSCAPES_IDS_19, CLASS_NAMES_19, IGNORE_INDEX, map_labels

TINY = dict(height=64, width=128, num_source=2, num_target_train=2, num_target_val=2, progress=False)
SAMPLE = 60  # images per domain for the in-memory statistics


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))
            if p.name != "class_histogram.png"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "a"
    generate_benchmark(out, variant="A", seed=3, **TINY)
    return out


@pytest.fixture(scope="module")
def samples() -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    styles = domain_styles("A")
    return {domain: [render_scene(image_rng(0, "A", split, i), styles[domain], 96, 192)
                     for i in range(SAMPLE)]
            for domain, split in (("source", "source"), ("target", "target_train"))}


def test_layouts_are_readable_by_plain_cv2(tiny):
    sources = sorted((tiny / "source" / "images").glob("*.png"))
    assert [p.name for p in sources] == ["00001.png", "00002.png"]
    pairs = [(p, tiny / "source" / "labels" / p.name) for p in sources]
    for subset in ("train", "val"):
        images = sorted((tiny / "target" / "leftImg8bit" / subset).glob("*/*_leftImg8bit.png"))
        assert len(images) == 2
        for image in images:
            city = image.parent.name
            assert image.name.startswith(city + "_")
            stem = image.name[: -len("_leftImg8bit.png")]
            assert len(stem.split("_")) == 3 and all(len(part) == 6 for part in stem.split("_")[1:])
            pairs.append((image, tiny / "target" / "gtFine" / subset / city / f"{stem}_gtFine_labelIds.png"))
    for image_path, label_path in pairs:
        image = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
        label = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
        assert image is not None and label is not None, (image_path, label_path)
        assert image.shape == (64, 128, 3) and image.dtype == np.uint8
        assert label.shape == (64, 128) and label.dtype == np.uint8
    assert (tiny / "class_histogram.png").stat().st_size > 0
    assert not list(tiny.rglob(".*tmp*")), "temporary files were left behind"


def test_label_ids_are_cityscapes_ids_or_void(tiny, samples):
    allowed = {0, *CITYSCAPES_IDS_19}
    labels = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in tiny.rglob("*label*.png")]
    labels += [label for domain in samples.values() for _, label in domain]
    assert len(labels) > 100
    found = set(np.unique(np.concatenate([label.ravel() for label in labels])).tolist())
    assert found <= allowed, f"ids outside Cityscapes train ids and void: {found - allowed}"


def test_same_seed_gives_same_bytes_for_any_worker_count(tiny, tmp_path):
    generate_benchmark(tmp_path / "again", variant="A", seed=3, workers=2, **TINY)
    assert _files(tmp_path / "again") == _files(tiny)


def test_other_seed_or_variant_gives_other_images(tiny, tmp_path):
    reference = _files(tiny)
    for name, variant, seed in (("seed", "A", 4), ("variant", "B", 3)):
        generate_benchmark(tmp_path / name, variant=variant, seed=seed, **TINY)
        other = _files(tmp_path / name)
        assert other.keys() == reference.keys()
        assert all(other[k] != reference[k] for k in reference if "leftImg8bit" in k or "images" in k), name


def test_statistics_match_the_written_labels(tiny):
    stats = json.loads((tiny / "benchmark.json").read_text())
    assert stats["parameters"]["counts"] == {"source": 2, "target_train": 2, "target_val": 2}
    paths = sorted((tiny / "target" / "gtFine" / "val").rglob("*_labelIds.png"))
    train_ids = np.stack([map_labels(cv2.imread(str(p), cv2.IMREAD_UNCHANGED), "cityscapes") for p in paths])
    for c, name in enumerate(CLASS_NAMES_19):
        expected = float((train_ids == c).mean())
        assert stats["splits"]["target_val"]["pixel_fraction"][name] == pytest.approx(expected, abs=1e-12)
    void = float((train_ids == IGNORE_INDEX).mean())
    assert stats["splits"]["target_val"]["void_fraction"] == pytest.approx(void)


def test_all_classes_appear_and_rare_classes_are_not_too_rare(samples):
    for domain, pairs in samples.items():
        train_ids = np.stack([map_labels(label, "cityscapes") for _, label in pairs])
        present = {c for c in range(19) if (train_ids == c).any()}
        missing = [CLASS_NAMES_19[c] for c in set(range(19)) - present]
        assert not missing, f"{domain}: classes never drawn in {SAMPLE} images: {missing}"
        for name in ("light", "sign", "rider", "motorcycle", "bicycle"):
            fraction = (train_ids == CLASS_NAMES_19.index(name)).mean()
            assert fraction >= 0.002, f"{domain}: {name} covers only {100 * fraction:.3f} % of pixels"
        road, building = (train_ids == 0).mean(), (train_ids == 2).mean()
        assert min(road, building) > max((train_ids == c).mean() for c in range(3, 19)), domain


def test_domains_differ_in_colour_statistics_and_class_histogram(samples):
    def saturation(pairs):
        hsv = [cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV) for rgb, _ in pairs]
        return float(np.mean([h[..., 1].mean() for h in hsv]))

    def class_colours(pairs):  # (19, 3) mean RGB of each class over the sample
        rgb = np.concatenate([image.reshape(-1, 3) for image, _ in pairs]).astype(np.float64)
        ids = np.concatenate([map_labels(label, "cityscapes").ravel() for _, label in pairs])
        return np.stack([rgb[ids == c].mean(axis=0) for c in range(19)])

    def fraction(pairs, name):
        return float(np.mean([(map_labels(label, "cityscapes") == CLASS_NAMES_19.index(name)).mean()
                              for _, label in pairs]))

    source, target = samples["source"], samples["target"]
    assert saturation(source) > 1.2 * saturation(target)
    colour_change = np.abs(class_colours(source) - class_colours(target)).mean(axis=1)
    assert np.median(colour_change) > 8.0, colour_change  # grey levels, per class
    assert fraction(target, "car") < fraction(source, "car")
    for name, ratio in (("person", 1.5), ("bicycle", 1.5), ("vegetation", 1.1)):
        assert fraction(target, name) > ratio * fraction(source, name), name


def test_identical_benchmark_json_skips_and_changed_parameters_regenerate(tmp_path):
    out = tmp_path / "bench"
    first = generate_benchmark(out, variant="A", seed=0, **TINY)
    image = out / "source" / "images" / "00001.png"
    stamp = image.stat().st_mtime_ns
    assert generate_benchmark(out, variant="A", seed=0, **TINY) == first
    assert image.stat().st_mtime_ns == stamp, "an identical benchmark.json must skip generation"

    smaller = dict(TINY, num_source=1)
    second = generate_benchmark(out, variant="A", seed=0, **smaller)
    assert second["parameters"]["counts"]["source"] == 1
    assert not (out / "source" / "images" / "00002.png").exists(), "stale files of the old set remain"
    assert json.loads((out / "benchmark.json").read_text()) == second
    stamp = image.stat().st_mtime_ns

    (out / "benchmark.json").unlink()  # an interrupted run leaves no benchmark.json
    generate_benchmark(out, variant="A", seed=0, **smaller)
    assert image.stat().st_mtime_ns != stamp and (out / "benchmark.json").exists()


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="variant.*'C'"):
        generate_benchmark("unused", variant="C")
    with pytest.raises(ValueError, match="target_val"):
        generate_benchmark("unused", num_target_val=0)
