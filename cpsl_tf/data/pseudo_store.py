"""Compact on-disk store of the soft pseudo labels P_ST (Algorithm 1 line 1) and their class distribution.

P_ST is the warm-up model's softmax at the network's output resolution, one (h, w, C) map per target
training image. The official code keeps float32 .npy files (2.4 MiB per Cityscapes image, 7 GiB in all);
here each map is quantised and compressed:

* ``encoding="uint8"`` (default): ``q = round(255 * p)``, read back as ``q / 255``; the absolute error
  of every probability is at most ``1 / 510`` (about 0.002). Measured on synthetic 129x257x19 maps
  (``benchmarks/pseudo_store.py``): 0.25 MB per image with zlib level 1 (0.75 GB for 2975 images),
  about 160 maps/s read on one CPU core; only near-ties (top two probabilities within 1/255) can change
  their argmax (0.09 % of pixels).
* ``encoding="float16"``: absolute error <= 2**-12 (2.4e-4), about 1 MB per image compressed (2.9 GB).

Layout of a store folder::

    shard-<writer>-00000.bin ...   concatenated (compressed) records, ``shard_images`` maps per shard
    class_distribution.json        Eq. 10 (counts and normalised distribution of the argmax)
    index.json                     written last: names -> (shard, offset, bytes), shape, encoding, meta

Every file is written atomically and the index last, so an interrupted writer leaves no index and the
store refuses to open; opening a writer on an existing store removes its index first.
"""

from __future__ import annotations

import json
import logging
import mmap
import secrets
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cpsl_tf.command import UserError
from cpsl_tf.io_utils import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"
DISTRIBUTION_NAME = "class_distribution.json"
FORMAT = "cpsl-pseudo-store"
VERSION = 1
ENCODINGS = {"uint8": np.uint8, "float16": np.float16}
UINT8_SCALE = 255.0
# Largest absolute difference between a stored probability and the one given to add().
ERROR_BOUND = {"uint8": 0.5 / UINT8_SCALE, "float16": 2.0 ** -12}
# Accepted slack of the probabilities given to add() outside [0, 1] (float rounding of a softmax).
_RANGE_SLACK = 1e-3


class PseudoStoreError(UserError, ValueError):
    """A pseudo-label store that is missing, unfinished, corrupt, or written for another setting."""


def class_counts(probs: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels per class of the hard pseudo labels ``argmax_c P_ST`` of one map (input of Eq. 10)."""
    hard = np.asarray(probs).argmax(axis=-1).ravel()
    return np.bincount(hard, minlength=num_classes).astype(np.int64)


def class_distribution(counts: np.ndarray) -> np.ndarray:
    """Eq. 10: delta_pseudo, the class frequencies of the hard pseudo labels over all target images."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        raise PseudoStoreError("cannot form a class distribution from zero pixels")
    return counts / total


def _encode(probs: np.ndarray, encoding: str) -> np.ndarray:
    clipped = np.clip(probs, 0.0, 1.0)
    if encoding == "uint8":
        return np.rint(clipped * UINT8_SCALE).astype(np.uint8)
    return clipped.astype(np.float16)


def _decode(stored: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == "uint8":
        return stored.astype(np.float32) * np.float32(1.0 / UINT8_SCALE)
    return stored.astype(np.float32)


class PseudoLabelWriter:
    """Writes a store: ``add(name, probs)`` for every image, then ``close()`` (or use ``with``).

    ``shape`` = (h, w) of the maps, ``meta`` is kept in the index (e.g. ``{"checkpoint": ..,
    "fingerprint": ..}``; see :meth:`PseudoLabelStore.expect`). Leaving a ``with`` block by an exception
    writes no index, so the half-written store cannot be opened.
    """

    def __init__(self, root: str | Path, num_classes: int, shape: Sequence[int], meta: dict | None = None,
                 encoding: str = "uint8", compression: int = 1, shard_images: int = 64):
        if encoding not in ENCODINGS:
            raise PseudoStoreError(f"encoding must be one of {sorted(ENCODINGS)}, got {encoding!r}")
        if not 0 <= compression <= 9:
            raise PseudoStoreError(f"compression must be a zlib level in [0, 9], got {compression}")
        if shard_images < 1:
            raise PseudoStoreError(f"shard_images must be at least 1, got {shard_images}")
        self.root = Path(root)
        self.num_classes = int(num_classes)
        self.shape = (int(shape[0]), int(shape[1]))
        self.meta = dict(meta or {})
        self.encoding = encoding
        self.compression = compression
        self.shard_images = shard_images
        self.root.mkdir(parents=True, exist_ok=True)
        index = self.root / INDEX_NAME
        if index.exists():
            log.warning("overwriting the pseudo-label store in %s (its index is removed first)", self.root)
            index.unlink()
        self._writer_id = secrets.token_hex(4)
        self._shards: list[str] = []
        self._records: dict[str, list[int]] = {}
        self._buffer = bytearray()
        self._buffered = 0
        self._counts = np.zeros(self.num_classes, dtype=np.int64)
        self._closed = False

    def add(self, name: str, probs: np.ndarray) -> None:
        """Store the (h, w, C) softmax map of image ``name``."""
        if self._closed:
            raise PseudoStoreError(f"writer for {self.root} is closed")
        if name in self._records:
            raise PseudoStoreError(f"{self.root}: a map named {name!r} was already added")
        probs = np.asarray(probs)
        expected = (*self.shape, self.num_classes)
        if probs.shape != expected:
            raise PseudoStoreError(f"{self.root}: map {name!r} has shape {probs.shape}, expected {expected} "
                                   "(h, w, num_classes)")
        if not np.issubdtype(probs.dtype, np.floating):
            raise PseudoStoreError(f"{self.root}: map {name!r} has dtype {probs.dtype}, expected softmax "
                                   "probabilities (float)")
        low, high = float(probs.min()), float(probs.max())
        if not (np.isfinite(low) and np.isfinite(high) and low >= -_RANGE_SLACK and high <= 1 + _RANGE_SLACK):
            raise PseudoStoreError(f"{self.root}: map {name!r} holds values in [{low}, {high}]; expected "
                                   "probabilities in [0, 1] (softmax, not logits)")
        self._counts += class_counts(probs, self.num_classes)
        raw = _encode(probs, self.encoding).tobytes()
        data = zlib.compress(raw, self.compression) if self.compression else raw
        self._records[name] = [len(self._shards), len(self._buffer), len(data)]
        self._buffer += data
        self._buffered += 1
        if self._buffered == self.shard_images:
            self._flush()

    def _flush(self) -> None:
        if not self._buffered:
            return
        shard = f"shard-{self._writer_id}-{len(self._shards):05d}.bin"
        atomic_write_bytes(self.root / shard, bytes(self._buffer))
        self._shards.append(shard)
        self._buffer = bytearray()
        self._buffered = 0

    def close(self) -> None:
        """Write the last shard, the class distribution (Eq. 10) and, last, the index."""
        if self._closed:
            return
        if not self._records:
            raise PseudoStoreError(f"{self.root}: no maps were added; nothing to store")
        self._flush()
        atomic_write_json(self.root / DISTRIBUTION_NAME, {
            "num_classes": self.num_classes,
            "counts": self._counts.tolist(),
            "distribution": class_distribution(self._counts).tolist(),
            "resolution": list(self.shape),
            "images": len(self._records),
        })
        atomic_write_json(self.root / INDEX_NAME, {
            "format": FORMAT,
            "version": VERSION,
            "num_classes": self.num_classes,
            "shape": list(self.shape),
            "encoding": self.encoding,
            "compression": self.compression,
            "error_bound": ERROR_BOUND[self.encoding],
            "meta": self.meta,
            "shards": self._shards,
            "records": self._records,
        })
        for stale in self.root.glob("shard-*.bin"):
            if stale.name not in self._shards:
                stale.unlink()
        self._closed = True

    def __enter__(self) -> PseudoLabelWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._closed = True
            log.error("pseudo-label writer for %s stopped by %s; no index written", self.root,
                      exc_type.__name__)


class PseudoLabelStore:
    """Read access to a finished store: ``get(name)`` -> float32 (h, w, C) probabilities."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        index_path = self.root / INDEX_NAME
        if not index_path.is_file():
            shards = sorted(self.root.glob("shard-*.bin")) if self.root.is_dir() else []
            reason = (f"it holds {len(shards)} shard file(s) but no {INDEX_NAME}: the writer was interrupted "
                      "before close()" if shards else f"{INDEX_NAME} does not exist")
            raise PseudoStoreError(f"no finished pseudo-label store in {self.root}: {reason}; run the "
                                   "'pseudo' stage (scripts/train.py --stage pseudo) to write it")
        try:
            index = json.loads(index_path.read_text())
        except json.JSONDecodeError as error:
            raise PseudoStoreError(f"{index_path}: not valid JSON ({error})") from error
        if index.get("format") != FORMAT or index.get("version") != VERSION:
            raise PseudoStoreError(f"{index_path}: not a {FORMAT} index of version {VERSION}")
        self.num_classes = int(index["num_classes"])
        self.shape = tuple(index["shape"])
        self.encoding = index["encoding"]
        self.compression = int(index["compression"])
        self.error_bound = float(index["error_bound"])
        self.meta = index["meta"]
        self._shards = index["shards"]
        self._records = {name: tuple(r) for name, r in index["records"].items()}
        self._dtype = ENCODINGS[self.encoding]
        self._map_bytes = int(np.prod(self.shape)) * self.num_classes * np.dtype(self._dtype).itemsize
        self._maps: dict[int, mmap.mmap] = {}
        self._lock = threading.Lock()  # tf.data calls lookup() from several threads
        self._check_shards()
        # One map read now: an index whose shape disagrees with its maps stops here, not in training.
        first = next(iter(self._records), None)
        if first is not None:
            self.get(first)

    def _check_shards(self) -> None:
        ends = [0] * len(self._shards)
        for shard, offset, size in self._records.values():
            ends[shard] = max(ends[shard], offset + size)
        for name, end in zip(self._shards, ends):
            path = self.root / name
            if not path.is_file() or path.stat().st_size < end:
                found = f"{path.stat().st_size} bytes" if path.is_file() else "missing"
                raise PseudoStoreError(f"pseudo-label store {self.root} is damaged: shard {name} should hold "
                                       f"{end} bytes, found {found}; re-run the 'pseudo' stage")

    def expect(self, num_classes: int | None = None, shape: Sequence[int] | None = None,
               fingerprint: str | None = None) -> PseudoLabelStore:
        """Refuse a store written for another class protocol, output resolution or config."""
        problems = []
        if num_classes is not None and num_classes != self.num_classes:
            problems.append(f"num_classes={self.num_classes} (expected {num_classes})")
        if shape is not None and tuple(shape) != self.shape:
            problems.append(f"map shape {list(self.shape)} (expected {list(shape)})")
        stored = self.meta.get("fingerprint")
        if fingerprint is not None and fingerprint != stored:
            problems.append(f"config fingerprint {stored!r} (expected {fingerprint!r})")
        if problems:
            raise PseudoStoreError(
                f"pseudo-label store {self.root} was written by another setting: {'; '.join(problems)} "
                f"(source: {self.meta.get('checkpoint', 'unknown checkpoint')}). Re-run the 'pseudo' stage "
                "or point to the matching store")
        return self

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, name: str) -> bool:
        return name in self._records

    @property
    def names(self) -> list[str]:
        return sorted(self._records)

    def _shard_map(self, shard: int) -> mmap.mmap:
        with self._lock:
            if shard in self._maps:
                return self._maps[shard]
            with open(self.root / self._shards[shard], "rb") as handle:
                self._maps[shard] = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            return self._maps[shard]

    def get(self, name: str) -> np.ndarray:
        """float32 (h, w, C) probabilities of image ``name``, within ``error_bound`` of what was added."""
        record = self._records.get(name)
        if record is None:
            raise KeyError(f"pseudo-label store {self.root} has no map for {name!r} ({len(self)} maps, "
                           f"e.g. {self.names[:3]})")
        shard, offset, size = record
        data = self._shard_map(shard)[offset:offset + size]
        damaged = (f"pseudo-label store {self.root} is damaged: the map of {name!r} in shard "
                   f"{self._shards[shard]}")
        try:
            raw = zlib.decompress(data) if self.compression else data
        except zlib.error as error:
            raise PseudoStoreError(f"{damaged} cannot be decompressed ({error}); re-run the 'pseudo' "
                                   "stage") from error
        if len(raw) != self._map_bytes:
            raise PseudoStoreError(f"{damaged} holds {len(raw)} bytes, but {INDEX_NAME} describes "
                                   f"{self.shape[0]}x{self.shape[1]}x{self.num_classes} {self.encoding} maps "
                                   f"({self._map_bytes} bytes); re-run the 'pseudo' stage")
        stored = np.frombuffer(raw, dtype=self._dtype).reshape(*self.shape, self.num_classes)
        return _decode(stored, self.encoding)

    def lookup(self, name) -> np.ndarray:
        """:meth:`get` for ``tf.numpy_function``, which passes names as bytes."""
        if isinstance(name, np.ndarray):
            name = name.item()
        return self.get(name.decode("utf-8") if isinstance(name, bytes) else str(name))

    def tf_lookup(self, name):
        """Graph op for ``tf.data``: a scalar string tensor -> (h, w, C) float32 map."""
        import tensorflow as tf

        probs = tf.numpy_function(self.lookup, [name], tf.float32, stateful=False)
        probs.set_shape((*self.shape, self.num_classes))
        return probs

    def class_distribution(self) -> np.ndarray:
        """Eq. 10 as written beside the store, float64 (num_classes,)."""
        path = self.root / DISTRIBUTION_NAME
        if not path.is_file():
            raise PseudoStoreError(f"{path} is missing; re-run the 'pseudo' stage")
        values = np.asarray(json.loads(path.read_text())["distribution"], dtype=np.float64)
        if values.shape != (self.num_classes,):
            raise PseudoStoreError(f"{path}: {values.size} values for {self.num_classes} classes")
        return values

    def close(self) -> None:
        for handle in self._maps.values():
            handle.close()
        self._maps.clear()
