"""Training and evaluation tf.data pipelines on in-memory samples (no files)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from cpsl_tf.config import load_config
from cpsl_tf.data.pipeline import make_eval_dataset, make_training_dataset


@dataclasses.dataclass
class FakeSample:
    name: str
    image: Path
    label: Path | None
    dataset: str


def _memory(count, prefix, rng, size=(16, 32)):
    images = {f"{prefix}{i}.png": rng.integers(0, 256, size=(*size, 3), dtype=np.uint8) for i in range(count)}
    labels = {f"{prefix}{i}_gt.png": rng.integers(0, 19, size=size, dtype=np.uint8) for i in range(count)}
    samples = [FakeSample(f"{prefix}{i}", Path(f"{prefix}{i}.png"), Path(f"{prefix}{i}_gt.png"), "bench")
               for i in range(count)]
    return samples, images, labels


@pytest.fixture
def setup(rng):
    src, src_images, src_labels = _memory(5, "s", rng)
    tgt, tgt_images, _ = _memory(4, "t", rng)
    images = {**src_images, **tgt_images}
    cfg = load_config(None, ["data.source_size=[16,32]", "data.target_size=[16,32]", "data.crop_size=[8,16]",
                             "train.batch_size=2", "cpsl.cutmix_prob=0.5"])
    soft = {s.name: rng.random((4, 8, 19)).astype(np.float16) for s in tgt}
    loaders = {"load_image": lambda p: images[p], "load_label": lambda p, ds, n: src_labels[p]}
    return src, tgt, cfg, soft, loaders, images


def _first(dataset, count=1):
    return [batch for batch, _ in zip(dataset, range(count))]


def test_batches_have_the_documented_structure(setup):
    src, tgt, cfg, soft, loaders, images = setup
    batch = _first(make_training_dataset(src, tgt, cfg, seed=3, pseudo_lookup=soft.__getitem__, **loaders))[0]
    assert batch["source_image"].shape == (2, 8, 16, 3) and batch["source_label"].dtype == "uint8"
    assert batch["target_strong"].shape == (2, 8, 16, 3) and batch["target_full"].shape == (2, 16, 32, 3)
    assert batch["target_soft"].shape == (2, 2, 4, 19)
    assert batch["strong_params"]["matrix"].shape == (2, 6)
    assert batch["weak_params"]["crop_box"].shape == (2, 4) and batch["cutmix_box"].shape == (2, 4)
    for key in ("source_image", "target_image", "target_strong", "target_full"):
        values = batch[key].numpy()
        assert values.dtype == np.float32 and values.min() >= 0.0 and values.max() <= 1.0
    # The full target image is the un-augmented image of one of the target samples.
    full = np.round(batch["target_full"].numpy()[0] * 255)
    assert any(np.array_equal(full, images[f"t{i}.png"]) for i in range(4))


def test_same_seed_same_batches_other_seed_other_batches(setup):
    src, tgt, cfg, soft, loaders, _ = setup
    a = _first(make_training_dataset(src, tgt, cfg, seed=7, pseudo_lookup=soft.__getitem__, **loaders), 3)
    b = _first(make_training_dataset(src, tgt, cfg, seed=7, pseudo_lookup=soft.__getitem__, **loaders), 3)
    c = _first(make_training_dataset(src, tgt, cfg, seed=8, pseudo_lookup=soft.__getitem__, **loaders), 3)
    for x, y in zip(a, b):
        for key in ("source_image", "source_label", "target_image", "target_strong", "target_soft"):
            np.testing.assert_array_equal(x[key].numpy(), y[key].numpy())
        np.testing.assert_array_equal(x["strong_params"]["official"], y["strong_params"]["official"])
    assert not np.array_equal(a[0]["target_strong"].numpy(), c[0]["target_strong"].numpy())


def test_eval_dataset_keeps_label_resolution(setup, rng):
    src, _, _, _, loaders, images = setup
    batches = list(make_eval_dataset(src, (8, 16), batch_size=2, **loaders))
    assert [b[0].shape[0] for b in batches] == [2, 2, 1]
    image, label = batches[0]
    assert image.shape == (2, 8, 16, 3) and label.shape == (2, 16, 32)
    np.testing.assert_allclose(image.numpy()[0, 0, 0] * 255, images["s0.png"][0, 0], atol=1e-3)


def test_eval_dataset_batches_labels_of_other_sizes_apart(setup, rng):
    src, _, _, _, loaders, _ = setup
    small = {"s1_gt.png": rng.integers(0, 19, size=(8, 16), dtype=np.uint8)}
    labels = {**{s.label.name: loaders["load_label"](str(s.label), "bench", 19) for s in src}, **small}
    batches = list(make_eval_dataset(src, (8, 16), batch_size=2, load_image=loaders["load_image"],
                                     load_label=lambda path, dataset, n: labels[path]))
    assert [(b[0].shape[0], tuple(b[1].shape[1:])) for b in batches] == [(2, (16, 32)), (2, (16, 32)),
                                                                         (1, (8, 16))]
    np.testing.assert_array_equal(batches[2][1][0], small["s1_gt.png"])


def test_resumed_stream_continues_the_uninterrupted_one(setup):
    src, tgt, cfg, soft, loaders, _ = setup
    whole = _first(make_training_dataset(src, tgt, cfg, seed=5, pseudo_lookup=soft.__getitem__, **loaders), 4)
    resumed = _first(make_training_dataset(src, tgt, cfg, seed=5, pseudo_lookup=soft.__getitem__,
                                           start_batch=3, **loaders))[0]
    for key in ("source_image", "source_label", "target_image", "target_strong", "target_soft", "cutmix_box"):
        np.testing.assert_array_equal(whole[3][key].numpy(), resumed[key].numpy())
    assert not np.array_equal(whole[2]["source_image"].numpy(), resumed["source_image"].numpy())


def test_source_only_stream(setup):
    src, _, cfg, _, loaders, _ = setup
    batch = _first(make_training_dataset(src, None, cfg, seed=5, **loaders))[0]
    assert set(batch) == {"source_image", "source_label"}


def test_cutmix_can_be_turned_off_whatever_the_config(setup):
    """The adversarial warm-up passes cutmix_prob=0: no box is mixed although cpsl.cutmix_prob is 0.5."""
    src, tgt, cfg, soft, loaders, _ = setup
    mixed = _first(make_training_dataset(src, tgt, cfg, seed=3, **loaders), 4)
    plain = _first(make_training_dataset(src, tgt, cfg, seed=3, cutmix_prob=0.0, **loaders), 4)
    assert any(batch["cutmix"].numpy().any() for batch in mixed)
    for batch in plain:
        assert not batch["cutmix"].numpy().any() and not batch["cutmix_box"].numpy().any()
