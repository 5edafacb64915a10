"""MemoryBank: ring order, newest-first view, checkpointing and MirroredStrategy consistency."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from cpsl_tf.cpsl.memory_bank import MemoryBank
from tests.conftest import REPO


def official_queue(blocks, size, dim):
    """The official shift-down queue: newest block at the top."""
    queue = np.zeros((size, dim), np.float32)
    for block in blocks:
        queue = np.concatenate([block, queue[: size - len(block)]])
    return queue


def newest_first(bank: MemoryBank, block_size: int) -> np.ndarray:
    """The bank's rows in the order of the official shift-down queue, for enqueues of ``block_size`` rows.

    Row r is row r % block_size of the (r // block_size)-th most recent block; unwritten rows are zero.
    """
    rank = np.arange(bank.size)
    block, offset = rank // block_size, rank % block_size
    indices = (int(bank.pointer.numpy()) - block_size * (block + 1) + offset) % bank.size
    return bank.features.numpy()[indices]


def test_ring_buffer_matches_official_queue(rng):
    bank = MemoryBank(12, 3)
    enqueue = tf.function(bank.enqueue)
    blocks = [rng.normal(size=(4, 3)).astype(np.float32) for _ in range(5)]
    for count, block in enumerate(blocks, start=1):
        assert bool(bank.is_full()) == (count > 3)
        enqueue(block)
        np.testing.assert_array_equal(newest_first(bank, 4), official_queue(blocks[:count], 12, 3))
        assert int(bank.filled.numpy()) == min(4 * count, 12)
    # ring order holds the last 12 rows: blocks 2, 3, 4 (block 3 overwrote the oldest rows first)
    np.testing.assert_array_equal(np.sort(bank.valid_rows().numpy(), axis=0),
                                  np.sort(np.concatenate(blocks[2:]), axis=0))


def test_partially_filled_bank_exposes_written_rows_only(rng):
    bank = MemoryBank(10, 2)
    rows = rng.normal(size=(3, 2)).astype(np.float32)
    bank.enqueue(rows)
    np.testing.assert_array_equal(bank.valid_rows().numpy(), rows)
    assert not bool(bank.is_full())


def test_bad_rows_are_rejected():
    bank = MemoryBank(4, 2)
    with pytest.raises(ValueError, match=r"\(M, 2\)"):
        bank.enqueue(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="do not fit"):
        bank.enqueue(np.zeros((5, 2), np.float32))


def test_checkpoint_round_trip(tmp_path, rng):
    bank = MemoryBank(6, 2)
    bank.enqueue(rng.normal(size=(4, 2)).astype(np.float32))
    path = tf.train.Checkpoint(bank=bank).write(str(tmp_path / "ckpt"))
    restored = MemoryBank(6, 2)
    tf.train.Checkpoint(bank=restored).read(path).assert_consumed()
    np.testing.assert_array_equal(restored.features.numpy(), bank.features.numpy())
    assert int(restored.pointer.numpy()) == 4 and int(restored.filled.numpy()) == 4
    assert len(bank.weights) == 3 and not bank.trainable_weights


MIRRORED_SCRIPT = """
import numpy as np, tensorflow as tf
physical = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(physical, [tf.config.LogicalDeviceConfiguration()] * 2)
from cpsl_tf.cpsl.memory_bank import MemoryBank
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    bank = MemoryBank(8, 3)

@tf.function
def step(values):
    def replica_fn(local):
        bank.enqueue(tf.distribute.get_replica_context().all_gather(local, axis=0))
    strategy.run(replica_fn, args=(values,))

for value in (1.0, 5.0):
    step(strategy.experimental_distribute_values_from_function(
        lambda ctx, value=value: tf.fill((2, 3), value + ctx.replica_id_in_sync_group)))
copies = [v.numpy() for v in bank.features.value.values]
np.testing.assert_array_equal(copies[0], copies[1])
expected = np.repeat([[1.0], [1.0], [2.0], [2.0], [5.0], [5.0], [6.0], [6.0]], 3, axis=1)
np.testing.assert_array_equal(copies[0], expected)
assert [int(v.numpy()) for v in bank.pointer.value.values] == [0, 0]
print("OK")
"""


def test_mirrored_strategy_keeps_copies_identical():
    # Two logical CPU devices must be configured before TensorFlow initialises: use a fresh interpreter.
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True, text=True,
                            env=env, cwd=REPO, timeout=120)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
