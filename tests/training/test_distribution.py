"""CPSL steps (tiny network) under tf.distribute equal the one-device steps on the same global batch: the
paper preset under MirroredStrategy over two logical CPU devices and MultiWorkerMirroredStrategy with two
worker processes on loopback ports, and the official preset (two banks, training-mode teacher, CutMix)
under MirroredStrategy.

The strategies must be set up before TensorFlow initialises, so every run happens in a subprocess of this
file (``python tests/training/test_distribution.py <mode>[,<mode>...] <out_dir>``) that writes the resulting
state to ``.npz`` files; the tests compare those. The one-device reference runs in the same process as the
mirrored run (on the first of its two logical devices, through the default strategy), which saves a
process. BatchNorm is synchronised and dropout is off, as the equality needs (per-replica BN statistics are
a different computation by design).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
GLOBAL_BATCH = 4
STEPS = 2  # the second step samples from the bank filled by the first


# --------------------------------------------------------------------------------------------------
# Subprocess side


def _split_cpu() -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


def _setup(mode: str):
    mode, _, preset = mode.partition("-")
    sys.path.insert(0, str(REPO))
    import dataclasses

    from cpsl_tf.config import load_config, shrink
    from cpsl_tf.training.strategy import make_strategy

    base = shrink(load_config(None, [f"cpsl.preset={preset or 'paper'}"]))
    strategy_kind = {"single": "auto", "mirrored": "mirrored", "multi_worker": "multi_worker"}[mode]
    cfg = dataclasses.replace(
        base, model=dataclasses.replace(base.model, dropout=0.0),
        train=dataclasses.replace(base.train, strategy=strategy_kind, sync_batch_norm=True),
        cpsl=dataclasses.replace(base.cpsl, ema_momentum=0.9, alignment_momentum=0.8, cutmix_prob=1.0))
    return cfg, make_strategy(cfg.train)


def _global_batch():
    import tensorflow as tf

    sys.path.insert(0, str(REPO))
    from cpsl_tf.data.strong import strong_view

    rng = np.random.default_rng(0)
    h, w = 32, 48
    weak = rng.random((GLOBAL_BATCH, h, w, 3)).astype(np.float32)
    strong, params = [], []
    for i in range(GLOBAL_BATCH):
        image, p = strong_view(tf.constant(weak[i]), tf.constant([i, 7], tf.int64))
        strong.append(image)
        params.append(p)
    soft = tf.nn.softmax(rng.normal(size=(GLOBAL_BATCH, h // 4, w // 4, 19)).astype(np.float32) * 3).numpy()
    labels = rng.integers(0, 19, (GLOBAL_BATCH, h, w)).astype(np.uint8)
    labels[0, :8] = 255  # replicas hold different numbers of valid source pixels
    return {"source_image": rng.random((GLOBAL_BATCH, h, w, 3)).astype(np.float32), "source_label": labels,
            "target_image": weak, "target_strong": tf.stack(strong).numpy(),
            "strong_params": {k: tf.stack([p[k] for p in params]).numpy() for k in params[0]},
            "target_soft": soft}


def _official_global_batch(cfg):
    """One pipeline batch with the official preset's extra fields (full image, weak geometry, CutMix box)."""
    import dataclasses
    from types import SimpleNamespace

    import tensorflow as tf

    from cpsl_tf.data.pipeline import make_training_dataset

    rng = np.random.default_rng(0)
    h, w = 32, 48
    images, labels, source, target = {}, {}, [], []
    for i in range(GLOBAL_BATCH):
        for prefix, group in (("s", source), ("t", target)):
            name = f"{prefix}{i}"
            images[name] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            labels[name + "_gt"] = rng.integers(0, 19, (h, w), dtype=np.uint8)
            group.append(SimpleNamespace(name=name, image=name, label=name + "_gt", dataset="bench"))
    from cpsl_tf.models.segmenter import build_segmenter

    out = build_segmenter(cfg.model, 19, name="probe")(tf.zeros((1, h, w, 3)))["logits"].shape[1:3]
    soft = {s.name: tf.nn.softmax(rng.normal(size=(*out, 19)).astype(np.float32) * 3).numpy() for s in target}
    data = dataclasses.replace(cfg.data, source_size=[h, w], target_size=[h, w], crop_size=[h, w],
                               scale_range=[0.75, 1.25])
    dataset = make_training_dataset(source, target, dataclasses.replace(cfg, data=data), 0,
                                    pseudo_lookup=soft.__getitem__, load_image=images.__getitem__,
                                    load_label=lambda p, d, n: labels[p], batch_size=GLOBAL_BATCH)
    return tf.nest.map_structure(lambda t: t.numpy(), next(iter(dataset)))


def _initial_weights(cfg):
    """Deterministic initial weights from NumPy (the same in every process)."""
    from cpsl_tf.models.segmenter import build_segmenter

    model = build_segmenter(cfg.model, 19, name="init")
    rng = np.random.default_rng(3)
    weights = []
    for v in model.weights:
        if "moving_variance" in v.path:
            weights.append(np.ones(v.shape, np.float32))
        elif "moving_mean" in v.path:
            weights.append(np.zeros(v.shape, np.float32))
        elif "gamma" in v.path:
            weights.append(np.ones(v.shape, np.float32))
        else:
            fan_in = int(np.prod(v.shape[:-1])) if len(v.shape) > 1 else 1
            weights.append((rng.normal(size=v.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32))
    return weights


_GLOBAL_BATCHES: dict[bool, dict] = {}


def _run(mode: str, out_dir: Path) -> None:
    cfg, strategy = _setup(mode)
    import tensorflow as tf

    from cpsl_tf.cpsl.model import CPSLModel
    from cpsl_tf.models.segmenter import build_segmenter
    from cpsl_tf.training.loop import run_steps
    from cpsl_tf.training.strategy import is_chief, synchronize_batch_norm
    from cpsl_tf.training.warmup import build_segmentation_optimizer

    rng = np.random.default_rng(1)
    prototypes = rng.normal(size=(19, cfg.model.head_channels)).astype(np.float32)
    distribution = rng.dirichlet(np.ones(19)).astype(np.float32)
    init = _initial_weights(cfg)
    with strategy.scope():
        student = synchronize_batch_norm(build_segmenter(cfg.model, 19), cfg.train.sync_batch_norm)
        teacher = synchronize_batch_norm(build_segmenter(cfg.model, 19, name="teacher"),
                                         cfg.train.sync_batch_norm)
        student.set_weights(init)
        teacher.set_weights([w + 0.01 for w in init])
        official = cfg.cpsl.preset == "official"
        model = CPSLModel(student, teacher, prototypes, distribution, cfg.cpsl)
        model.use_optimizer(build_segmentation_optimizer(cfg, 1e-3, 1e-2, 100, model.trainable_for_step,
                                                         1e-2))
        model.compile(optimizer=model.grouped.optimizer)
    if official not in _GLOBAL_BATCHES:  # the pipeline's batch costs a dataset trace: once per process
        _GLOBAL_BATCHES[official] = _official_global_batch(cfg) if official else _global_batch()
    batch = _GLOBAL_BATCHES[official]
    data = tf.data.Dataset.from_tensors(batch).repeat()
    if mode == "multi_worker":
        logs = run_steps(model, data, STEPS, [], verbose=0)
        name = "chief" if is_chief(strategy) else f"worker{strategy.cluster_resolver.task_id}"
    else:
        history = model.fit(data, epochs=1, steps_per_epoch=STEPS, verbose=0).history
        logs = {k: v[-1] for k, v in history.items()}
        name = mode.partition("-")[0]

    def replicas(variable):
        return [np.asarray(x) for x in strategy.experimental_local_results(variable.value)]

    state = {"logs_" + k: np.float32(v) for k, v in logs.items()}
    for prefix, variables in (("student", student.weights), ("teacher", teacher.weights),
                              ("head", [model.head.prototypes, model.head.momentum_prototypes]),
                              ("bank", [model.bank.features, model.bank.pointer, model.bank.filled]),
                              ("logit_bank", [model.logit_bank.features, model.logit_bank.filled]
                               if official else []),
                              ("delta", [model.delta_pseudo])):
        for i, v in enumerate(variables):
            copies = replicas(v)
            state[f"{prefix}/{i}"] = copies[0]
            for r, copy in enumerate(copies[1:], start=1):
                state[f"replica{r}:{prefix}/{i}"] = copy
    np.savez(out_dir / f"{name}.npz", **state)


# --------------------------------------------------------------------------------------------------
# Test side


def _subprocess(mode: str, out_dir: Path, timeout: float = 400) -> None:
    result = subprocess.run([sys.executable, __file__, mode, str(out_dir)], cwd=REPO, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


@pytest.fixture(scope="module")
def paper_runs(tmp_path_factory) -> Path:
    """The paper preset's one-device and mirrored runs (``single.npz``, ``mirrored.npz``)."""
    out = tmp_path_factory.mktemp("paper")
    _subprocess("single,mirrored", out)
    return out


@pytest.fixture(scope="module")
def single(paper_runs):
    return dict(np.load(paper_runs / "single.npz"))


def _assert_same_state(got: dict, want: dict, label: str) -> None:
    checked = 0
    for key, expected in want.items():
        if key.startswith("replica"):
            continue
        tolerance = 2e-4 if key.startswith("logs_") else 1e-4
        np.testing.assert_allclose(got[key], expected, rtol=tolerance, atol=tolerance,
                                   err_msg=f"{label} {key}")
        checked += 1
    assert checked > 50


def _assert_replicas_identical(state: dict) -> None:
    copies = [k for k in state if k.startswith("replica")]
    assert copies, "no per-replica copies were recorded"
    for key in copies:
        np.testing.assert_array_equal(state[key], state[key.split(":", 1)[1]], err_msg=key)


def test_mirrored_step_equals_one_device_and_replicas_agree(single, paper_runs):
    mirrored = dict(np.load(paper_runs / "mirrored.npz"))
    _assert_replicas_identical(mirrored)
    _assert_same_state(mirrored, single, "mirrored vs one device")
    # The step did something to every kind of state the comparison covers.
    assert int(single["bank/2"]) == 64  # the shrunk bank (64 rows) is full after the first step's 4 x 16 rows
    assert single["logs_loss_sl"] > 0 and single["logs_loss_reg"] > 0


def test_two_workers_match_one_process(single, tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    from launch_workers import launch

    codes = launch([sys.executable, __file__, "multi_worker", str(tmp_path)], workers=2, timeout=400,
                   log_dir=tmp_path / "logs")
    logs = "".join(p.read_text()[-3000:] for p in sorted((tmp_path / "logs").glob("*.log")))
    assert codes == [0, 0], logs
    chief = dict(np.load(tmp_path / "chief.npz"))
    other = dict(np.load(tmp_path / "worker1.npz"))
    for key, value in chief.items():
        np.testing.assert_array_equal(other[key], value, err_msg=f"worker 1 vs chief: {key}")
    _assert_same_state(chief, single, "two workers vs one process")


def test_coupled_weight_decay_enters_once_whatever_the_replica_count(tmp_path):
    # Gradients are summed across replicas: a decay added by every replica would act twice on two.
    _subprocess("decay", tmp_path)
    result = dict(np.load(tmp_path / "decay.npz"))
    np.testing.assert_allclose(result["single"], [0.9], rtol=1e-6)  # w - lr * wd * w
    np.testing.assert_allclose(result["mirrored"], [0.9], rtol=1e-6)


def test_official_preset_mirrored_equals_one_device(tmp_path):
    _subprocess("single-official,mirrored-official", tmp_path)
    single = dict(np.load(tmp_path / "single.npz"))
    mirrored = dict(np.load(tmp_path / "mirrored.npz"))
    _assert_replicas_identical(mirrored)
    _assert_same_state(mirrored, single, "official preset, mirrored vs one device")
    # Both banks hold the global batch's samples (2 steps x 4 images x 16 pixels = the 64-row shrunk bank).
    assert int(single["bank/2"]) == 64 and int(single["logit_bank/1"]) == 64
    assert single["logs_loss_sl"] > 0 and single["logs_loss_reg"] > 0


def _weight_decay_step(out_dir: Path) -> None:
    """One GroupedSGD step with a zero loss (only the coupled decay acts) on one device and mirrored over
    two: w = 1, lr 1, weight_decay 0.1, no momentum."""
    sys.path.insert(0, str(REPO))
    import keras
    import tensorflow as tf

    from cpsl_tf.training.optim import GroupedSGD

    def one_step(strategy) -> np.ndarray:
        with strategy.scope():
            w = keras.Variable([1.0], name="w")
            sgd = GroupedSGD({"all": 1.0}, lambda v: "all", weight_decay=0.1, total_steps=10, momentum=0.0,
                             power=0.0)
            sgd.build([w])

        def replica():
            with tf.GradientTape() as tape:
                loss = 0.0 * tf.reduce_sum(w) / strategy.num_replicas_in_sync
            sgd.apply(tape.gradient(loss, [w]), [w])

        tf.function(lambda: strategy.run(replica))()
        return np.asarray(w.numpy())

    np.savez(out_dir / "decay.npz", single=one_step(tf.distribute.get_strategy()),
             mirrored=one_step(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])))


if __name__ == "__main__":
    modes = sys.argv[1].split(",")
    if any(m.startswith("mirrored") or m == "decay" for m in modes):
        _split_cpu()
    for each in modes:
        if each == "decay":
            _weight_decay_step(Path(sys.argv[2]))
        else:
            _run(each, Path(sys.argv[2]))

