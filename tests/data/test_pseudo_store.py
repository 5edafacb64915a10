"""Pseudo-label store: round-trip error bound, Eq. 10 counts, atomicity, refusal of foreign stores."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from cpsl_tf.data.pseudo_store import PseudoLabelStore, PseudoLabelWriter, PseudoStoreError
from cpsl_tf.training.stages import known_failure
from tests.conftest import REPO


def stacked(store, names) -> np.ndarray:
    """(B, h, w, C) maps of several images looked up as ``tf.numpy_function`` passes them (str or bytes)."""
    return np.stack([store.lookup(name) for name in names])


def softmax_maps(rng, count, shape=(6, 10), num_classes=5, sharpness=4.0):
    logits = rng.normal(size=(count, *shape, num_classes)) * sharpness
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    return (exp / exp.sum(-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize(("encoding", "bound"), [("uint8", 1 / 510), ("float16", 2.0 ** -12)])
@pytest.mark.parametrize("compression", [0, 1])
def test_round_trip_within_error_bound(tmp_path, rng, encoding, bound, compression):
    maps = softmax_maps(rng, 7)
    names = [f"img_{i}" for i in range(7)]
    with PseudoLabelWriter(tmp_path, 5, (6, 10), {"fingerprint": "abc"}, encoding=encoding,
                           compression=compression, shard_images=3) as writer:
        for name, probs in zip(names, maps):
            writer.add(name, probs)
    assert len(list(tmp_path.glob("shard-*.bin"))) == 3
    store = PseudoLabelStore(tmp_path)
    assert len(store) == 7 and store.names == sorted(names) and "img_3" in store
    worst = max(np.abs(store.get(n) - m).max() for n, m in zip(names, maps))
    assert worst <= bound + 1e-7
    assert worst > bound / 10  # the quantisation is real, so the bound is what is being tested
    assert store.get("img_0").dtype == np.float32
    np.testing.assert_array_equal(stacked(store, [b"img_1", "img_2"]), np.stack([store.get("img_1"),
                                                                                 store.get("img_2")]))


def test_class_distribution_is_eq10_of_the_argmax(tmp_path, rng):
    maps = softmax_maps(rng, 4, num_classes=6)
    with PseudoLabelWriter(tmp_path, 6, (6, 10)) as writer:
        for i, probs in enumerate(maps):
            writer.add(str(i), probs)
    hard = maps.argmax(-1)
    expected = np.array([(hard == c).sum() for c in range(6)]) / hard.size
    np.testing.assert_allclose(PseudoLabelStore(tmp_path).class_distribution(), expected, rtol=0, atol=1e-15)


def test_tf_data_lookup(tmp_path, rng):
    import tensorflow as tf

    maps = softmax_maps(rng, 5)
    with PseudoLabelWriter(tmp_path, 5, (6, 10), shard_images=2) as writer:
        for i, probs in enumerate(maps):
            writer.add(f"n{i}", probs)
    store = PseudoLabelStore(tmp_path)
    names = ["n4", "n0", "n2"]
    data = tf.data.Dataset.from_tensor_slices(names).map(store.tf_lookup, num_parallel_calls=2).batch(3)
    batch = next(iter(data))
    assert batch.shape == (3, 6, 10, 5)
    np.testing.assert_array_equal(batch.numpy(), stacked(store, names))


def test_killed_writer_leaves_a_store_that_refuses_to_open(tmp_path):
    script = textwrap.dedent(f"""
        import os, numpy as np
        from cpsl_tf.data.pseudo_store import PseudoLabelWriter
        writer = PseudoLabelWriter({str(tmp_path)!r}, 3, (4, 4), shard_images=1)
        for i in range(3):
            writer.add(str(i), np.full((4, 4, 3), 1 / 3, np.float32))
        os._exit(9)  # killed before close()
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 9, done.stderr
    assert len(list(tmp_path.glob("shard-*.bin"))) == 3
    with pytest.raises(PseudoStoreError, match="3 shard file.*interrupted before close"):
        PseudoLabelStore(tmp_path)


def test_exception_inside_with_block_writes_no_index(tmp_path, rng):
    with pytest.raises(RuntimeError), PseudoLabelWriter(tmp_path, 5, (6, 10)) as writer:
        writer.add("a", softmax_maps(rng, 1)[0])
        raise RuntimeError("model crashed")
    with pytest.raises(PseudoStoreError, match="no finished pseudo-label store"):
        PseudoLabelStore(tmp_path)


def test_rewriting_invalidates_the_old_store_first_and_drops_its_shards(tmp_path, rng):
    with PseudoLabelWriter(tmp_path, 5, (6, 10), shard_images=1) as writer:
        writer.add("old", softmax_maps(rng, 1)[0])
    old_shards = set(tmp_path.glob("shard-*.bin"))
    writer = PseudoLabelWriter(tmp_path, 5, (6, 10))
    with pytest.raises(PseudoStoreError):
        PseudoLabelStore(tmp_path)
    writer.add("new", softmax_maps(rng, 1)[0])
    writer.close()
    store = PseudoLabelStore(tmp_path)
    assert store.names == ["new"] and not old_shards & set(tmp_path.glob("shard-*.bin"))


def test_expect_refuses_another_setting(tmp_path, rng):
    with PseudoLabelWriter(tmp_path, 5, (6, 10), {"fingerprint": "f1", "checkpoint": "warm.h5"}) as writer:
        writer.add("a", softmax_maps(rng, 1)[0])
    store = PseudoLabelStore(tmp_path)
    assert store.expect(num_classes=5, shape=(6, 10), fingerprint="f1") is store
    with pytest.raises(PseudoStoreError, match=r"num_classes=5 \(expected 19\).*map shape \[6, 10\]"):
        store.expect(num_classes=19, shape=(129, 257))
    with pytest.raises(PseudoStoreError, match="fingerprint 'f1' \\(expected 'f2'\\).*warm.h5"):
        store.expect(fingerprint="f2")


def test_bad_maps_and_damaged_shards_are_named(tmp_path, rng):
    writer = PseudoLabelWriter(tmp_path, 5, (6, 10))
    with pytest.raises(PseudoStoreError, match=r"shape \(6, 10, 4\), expected \(6, 10, 5\)"):
        writer.add("a", softmax_maps(rng, 1, num_classes=4)[0])
    with pytest.raises(PseudoStoreError, match="not logits"):
        writer.add("a", rng.normal(size=(6, 10, 5)) * 5)
    writer.add("a", softmax_maps(rng, 1)[0])
    with pytest.raises(PseudoStoreError, match="already added"):
        writer.add("a", softmax_maps(rng, 1)[0])
    writer.close()
    with pytest.raises(KeyError, match="no map for 'b'"):
        PseudoLabelStore(tmp_path).get("b")
    shard = next(tmp_path.glob("shard-*.bin"))
    shard.write_bytes(shard.read_bytes()[:-5])
    with pytest.raises(PseudoStoreError, match=f"damaged: shard {shard.name}"):
        PseudoLabelStore(tmp_path)


def test_a_byte_flip_in_a_shard_is_named_with_what_to_do(tmp_path, rng):
    with PseudoLabelWriter(tmp_path, 5, (6, 10)) as writer:
        for name, probs in zip("abc", softmax_maps(rng, 3)):
            writer.add(name, probs)
    store = PseudoLabelStore(tmp_path)
    _, offset, size = store._records["b"]
    shard = next(tmp_path.glob("shard-*.bin"))
    data = bytearray(shard.read_bytes())
    data[offset + size // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    store = PseudoLabelStore(tmp_path)
    message = (f"damaged: the map of 'b' in shard {shard.name} cannot be decompressed \\(.+\\); re-run the "
               "'pseudo' stage$")
    with pytest.raises(PseudoStoreError, match=message):
        store.get("b")
    # Read in training, through tf.data: the stage's error is that one line.
    with pytest.raises(tf.errors.OpError) as raised:
        list(tf.data.Dataset.from_tensor_slices(["a", "b"]).map(store.tf_lookup))
    assert re.search(message, known_failure(raised.value))


def test_an_index_whose_shape_disagrees_with_its_maps_is_refused(tmp_path, rng):
    with PseudoLabelWriter(tmp_path, 5, (6, 10)) as writer:
        writer.add("a", softmax_maps(rng, 1)[0])
    index = json.loads((tmp_path / "index.json").read_text())
    (tmp_path / "index.json").write_text(json.dumps(dict(index, shape=[5, 10])))
    with pytest.raises(PseudoStoreError, match=r"holds 300 bytes, but index.json describes 5x10x5 uint8"):
        PseudoLabelStore(tmp_path)
    # The same number of values in another shape reads, so the reader names the shape it needs.
    (tmp_path / "index.json").write_text(json.dumps(dict(index, shape=[10, 6])))
    with pytest.raises(PseudoStoreError, match=r"map shape \[10, 6\] \(expected \[6, 10\]\)"):
        PseudoLabelStore(tmp_path).expect(shape=(6, 10))


def test_bytes_per_cityscapes_map(tmp_path, rng):
    """A smooth 129x257x19 softmax map takes well under the official float32 2.4 MiB."""
    import cv2

    low = rng.normal(size=(17, 33, 19)).astype(np.float32) * 6
    logits = np.stack([cv2.resize(low[..., c], (257, 129)) for c in range(19)], -1)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    with PseudoLabelWriter(tmp_path, 19, (129, 257)) as writer:
        writer.add("a", probs)
    size = sum(p.stat().st_size for p in tmp_path.glob("shard-*.bin"))
    assert size < 129 * 257 * 19 * 4 / 4  # at most a quarter of float32
    assert np.abs(PseudoLabelStore(tmp_path).get("a") - probs).max() <= 1 / 510 + 1e-7
