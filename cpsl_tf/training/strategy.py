"""The ``tf.distribute`` strategy of a run (``train.strategy``) and what depends on it.

* ``auto``: MultiWorkerMirroredStrategy when ``TF_CONFIG`` names more than one worker, MirroredStrategy
  over all GPUs when there are several, else the default (no-op) strategy.
* ``one_device``: OneDeviceStrategy on the first GPU, or the CPU.
* ``mirrored``: MirroredStrategy over every GPU, or over every logical CPU device when there is no GPU
  (tests split the CPU into logical devices).
* ``multi_worker``: MultiWorkerMirroredStrategy from ``TF_CONFIG`` (``scripts/launch_workers.py`` starts
  local workers). Keras 3.15's ``fit`` fails under it (keras-team/keras#20585), so
  :func:`cpsl_tf.training.loop.fit_resumable` runs its own loop of ``strategy.run(model.train_step)``.

Models, optimizers and the trainer must be built inside ``strategy.scope()`` so that their variables are
mirrored. One strategy object serves the whole process (MultiWorkerMirroredStrategy can be created
once only, before any other TensorFlow work), so :func:`make_strategy` caches it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator

import keras
import tensorflow as tf

from cpsl_tf.config import TrainConfig

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
_made: dict[str, tf.distribute.Strategy] = {}


def tf_config_workers() -> int:
    """Number of workers in ``TF_CONFIG`` (0 when it is unset)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        cluster = json.loads(raw)["cluster"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"TF_CONFIG is not a JSON object with a 'cluster' entry: {raw!r}") from err
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def _local_devices() -> list[str]:
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def _create(kind: str) -> tf.distribute.Strategy:
    if kind == "auto":
        if tf_config_workers() > 1:
            return _create("multi_worker")
        if len(tf.config.list_logical_devices("GPU")) > 1:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.get_strategy()
    if kind == "one_device":
        return tf.distribute.OneDeviceStrategy(_local_devices()[0])
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(_local_devices())
    if kind == "multi_worker":
        if tf_config_workers() < 1:
            raise ValueError("train.strategy=multi_worker needs the TF_CONFIG environment variable (cluster "
                             "and task of this worker); start the workers with scripts/launch_workers.py")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"train.strategy={kind!r}; expected one of {', '.join(STRATEGIES)}")


def make_strategy(train_cfg: TrainConfig) -> tf.distribute.Strategy:
    """The strategy for ``train_cfg.strategy``, created once per process."""
    kind = train_cfg.strategy
    if kind not in _made:
        _made[kind] = _create(kind)
    return _made[kind]


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes checkpoints, logs and results (always true in one process)."""
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    return resolver.task_type in (None, "chief") or (resolver.task_type == "worker" and resolver.task_id == 0
                                                     and "chief" not in resolver.cluster_spec().as_dict())


@contextlib.contextmanager
def training_scope(train_cfg: TrainConfig) -> Iterator[tf.distribute.Strategy]:
    """Build a stage's networks, optimizers and trainer inside this: the strategy's scope (mirrored
    variables) and the ``train.mixed_precision`` dtype policy, which layers capture when they are created.
    The previous global policy is restored on exit."""
    strategy = make_strategy(train_cfg)
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_global_policy(train_cfg.mixed_precision)
    try:
        with strategy.scope():
            yield strategy
    finally:
        keras.mixed_precision.set_global_policy(previous)


def synchronize_batch_norm(model: keras.Model, synchronized: bool = True) -> keras.Model:
    """Make every BatchNormalization layer of ``model`` compute its batch statistics over the global batch
    (all-reduced across replicas; official code: SyncBatchNorm) instead of each replica's part.

    Keras reads ``synchronized`` when the layer is called, so this works on a built model; outside a
    strategy the statistics are the ordinary ones.
    """
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = synchronized
    return model
