"""Stage fingerprints cover every config key a stage reads (issue 13).

Each stage's declaration (``Stage.reads``: sections and single keys, beside the stage's code) is tested both
ways:
changing any key a stage is declared to read re-runs that stage and the later ones, and nothing earlier;
and running each stage's setup on a config that records attribute reads finds no read left undeclared.
"""

from __future__ import annotations

import dataclasses
import typing

import pytest

from cpsl_tf.config import Config, load_config, shrink
from cpsl_tf.run_layout import STAGES
from cpsl_tf.training import stage as stage_module
from cpsl_tf.training import stages
from cpsl_tf.training.stage import NOT_FINGERPRINTED, RunContext
from cpsl_tf.training.stages import is_done, registry, run_stages, stage_fingerprint
from tests.conftest import REPO

BENCH = REPO / "configs" / "bench.json"


# --------------------------------------------------------------------------------------------------
# Helpers: the keys of a section, a changed copy of a config


def _leaf_keys(cls: type, prefix: str) -> list[str]:
    """Dotted names of every leaf key of a config dataclass (nested sections flattened)."""
    hints = typing.get_type_hints(cls)
    keys = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += _leaf_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _get(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _annotation(key: str):
    cls = Config
    *parents, leaf = key.split(".")
    for part in parents:
        cls = typing.get_type_hints(cls)[part]
    return typing.get_type_hints(cls)[leaf]


def _other_value(key: str, value):
    """A different value of the same kind (another option of a Literal)."""
    annotation = _annotation(key)
    if typing.get_origin(annotation) is typing.Literal:
        return next(o for o in typing.get_args(annotation) if o != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "-changed"
    if isinstance(value, list):
        return [*value, value[-1]] if value else [13]
    raise TypeError(f"no changed value for {key}={value!r}")


def _with(cfg, key: str, value):
    """``cfg`` with the dotted ``key`` set to ``value`` (no validation: fingerprints only hash)."""
    head, _, rest = key.partition(".")
    if not rest:
        return dataclasses.replace(cfg, **{head: value})
    return dataclasses.replace(cfg, **{head: _with(getattr(cfg, head), rest, value)})


def _sections(stage: str) -> list[str]:
    return [entry for entry in registry()[stage].reads if "." not in entry]


def _single_keys(stage: str) -> list[str]:
    return [entry for entry in registry()[stage].reads if "." in entry]


def _declared() -> list[tuple[str, str]]:
    """(stage, key) for every key each stage is declared to read: each leaf of its sections (but the
    volatile ones) and each of its single keys."""
    pairs = []
    for stage in STAGES:
        for section in _sections(stage):
            cls = typing.get_type_hints(Config)[section]
            pairs += [(stage, k) for k in _leaf_keys(cls, f"{section}.") if k not in NOT_FINGERPRINTED]
        pairs += [(stage, k) for k in _single_keys(stage)]
    return pairs


def _first_reader(key: str) -> int:
    """Index of the first stage declared to read ``key`` (in one of its sections, or as a single key)."""
    for index, stage in enumerate(STAGES):
        if key.split(".")[0] in _sections(stage) or key in _single_keys(stage):
            return index
    raise AssertionError(f"no stage reads {key}")


@pytest.fixture(scope="module")
def bench_cfg():
    return load_config(BENCH)


def _run_all(cfg, run_dir, monkeypatch, **selection) -> list[str]:
    """The stages ``run_stages`` runs, in order; each only writes empty files in place of its outputs."""
    ran = []

    def stand_in(ctx, stage):
        for path in ctx.layout.stage(stage).outputs:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        ran.append(stage)

    monkeypatch.setattr(stages, "_run_stage", stand_in)
    run_stages(cfg, run_dir, **selection)
    return ran


# --------------------------------------------------------------------------------------------------
# The declaration: each declared key re-runs its stage and the later ones, nothing earlier


@pytest.mark.parametrize(("stage", "key"), _declared(), ids=[f"{s}:{k}" for s, k in _declared()])
def test_changing_a_key_a_stage_reads_reruns_it_and_the_later_stages(bench_cfg, stage, key, tmp_path,
                                                                     monkeypatch):
    """The fingerprints of the first stage that reads ``key`` and of every later stage change, those of
    the stages before it (which read other sections only) do not; ``run_stages`` re-runs exactly those."""
    cfg = bench_cfg
    changed = _with(cfg, key, _other_value(key, _get(cfg, key)))
    first = _first_reader(key)
    assert first <= STAGES.index(stage)
    for index, each in enumerate(STAGES):
        same = stage_fingerprint(changed, each) == stage_fingerprint(cfg, each)
        assert same == (index < first), (each, key)
    assert _run_all(cfg, tmp_path, monkeypatch) == list(STAGES)
    assert _run_all(changed, tmp_path, monkeypatch) == list(STAGES[first:])


def test_cutmix_never_reruns_the_warmup(bench_cfg):
    """The adversarial warm-up trains on the target stream without CutMix, whatever cpsl.cutmix_prob."""
    for mode in ("source_only", "adversarial"):
        cfg = _with(bench_cfg, "warmup.mode", mode)
        changed = _with(cfg, "cpsl.cutmix_prob", 0.5)
        assert [stage_fingerprint(changed, s) != stage_fingerprint(cfg, s) for s in STAGES] == [
            i >= STAGES.index("cpsl") for i in range(len(STAGES))], mode


@pytest.mark.parametrize("key", NOT_FINGERPRINTED)
def test_keys_that_leave_outputs_alone_rerun_nothing(bench_cfg, key, tmp_path, monkeypatch):
    changed = _with(bench_cfg, key, _other_value(key, _get(bench_cfg, key)))
    for stage in STAGES:
        assert stage_fingerprint(changed, stage) == stage_fingerprint(bench_cfg, stage), stage
    assert _run_all(bench_cfg, tmp_path, monkeypatch) == list(STAGES)
    assert _run_all(changed, tmp_path, monkeypatch) == []


def test_prototype_mode_reruns_the_pseudo_stage(tmp_path, monkeypatch):
    paper = load_config(BENCH)
    assert _run_all(paper, tmp_path, monkeypatch) == list(STAGES)
    official = load_config(BENCH, ["cpsl.prototype_mode=official"])
    assert is_done(RunContext(official, tmp_path), "warmup")
    assert not is_done(RunContext(official, tmp_path), "pseudo")
    assert _run_all(official, tmp_path, monkeypatch) == ["pseudo", "cpsl", "distill1", "distill2"]
    # The official preset sets prototype_mode=official: its pseudo labels are not the paper run's.
    preset = load_config(BENCH, ["cpsl.preset=official"])
    assert preset.cpsl.prototype_mode == "official"
    assert stage_fingerprint(preset, "pseudo") != stage_fingerprint(paper, "pseudo")
    _run_all(paper, tmp_path / "preset", monkeypatch)
    assert not is_done(RunContext(preset, tmp_path / "preset"), "pseudo")
    assert "pseudo" in _run_all(preset, tmp_path / "preset", monkeypatch)


# --------------------------------------------------------------------------------------------------
# Outputs of the stages a stage reads: re-running one re-runs those after it


@pytest.mark.parametrize("stage", STAGES[:-1])
def test_rerunning_one_stage_reruns_the_stages_that_read_its_outputs(bench_cfg, stage, tmp_path, monkeypatch):
    """``--stage <stage> --force`` writes new outputs under the same config: the later stages were computed
    from the old ones, so they are not done any more and run again; the earlier ones stay done."""
    assert _run_all(bench_cfg, tmp_path, monkeypatch) == list(STAGES)
    assert _run_all(bench_cfg, tmp_path, monkeypatch, only=stage, force=True) == [stage]
    later = list(STAGES[STAGES.index(stage) + 1:])
    # Each stage reading its outputs is stale at once; the stages after those, once those have run again.
    readers = [s for s in later if stage in [needed.name for needed in registry()[s].needs]]
    assert [s for s in STAGES if not is_done(RunContext(bench_cfg, tmp_path), s)] == readers
    assert _run_all(bench_cfg, tmp_path, monkeypatch) == later
    assert _run_all(bench_cfg, tmp_path, monkeypatch) == []


def test_a_stage_whose_outputs_are_missing_is_not_done(bench_cfg, tmp_path, monkeypatch):
    _run_all(bench_cfg, tmp_path, monkeypatch)
    (tmp_path / "cpsl" / "model.weights.h5").unlink()
    (tmp_path / "pseudo" / "prototypes.npy").unlink()
    assert not is_done(RunContext(bench_cfg, tmp_path), "pseudo")
    assert is_done(RunContext(bench_cfg, tmp_path), "warmup")
    assert _run_all(bench_cfg, tmp_path, monkeypatch) == list(STAGES[1:])


# --------------------------------------------------------------------------------------------------
# Completeness: what the stages really read, recorded while their setup runs


class _Reads:
    def __init__(self):
        self.keys: set[str] = set()
        self.paused = False


def _recording(obj, prefix: str, reads: _Reads):
    """A copy of config dataclass ``obj`` (a subclass instance, so isinstance, asdict and replace work) that
    adds the dotted name of every leaf key read to ``reads.keys``."""
    cls = type(obj)
    names = {f.name for f in dataclasses.fields(cls)}

    def __getattribute__(self, name):
        value = object.__getattribute__(self, name)
        if name in names and not reads.paused and not dataclasses.is_dataclass(value):
            reads.keys.add(prefix + name)
        return value

    recording_cls = type(f"Recording{cls.__name__}", (cls,), {"__getattribute__": __getattribute__})
    values = {}
    for f in dataclasses.fields(cls):
        value = getattr(obj, f.name)
        values[f.name] = _recording(value, f"{prefix}{f.name}.", reads) if dataclasses.is_dataclass(value) \
            else value
    return recording_cls(**values)


@pytest.fixture(scope="module")
def tiny_adversarial(tmp_path_factory):
    """The smoke config with the adversarial warm-up, whose stream has the target images too."""
    root = tmp_path_factory.mktemp("bench")
    cfg = load_config(BENCH, [f"data.source_root={root}/source", f"data.target_root={root}/target",
                              "warmup.mode=adversarial"])
    return shrink(cfg)


def test_every_key_a_stage_reads_is_in_its_fingerprint(tiny_adversarial, tmp_path, monkeypatch):
    """Each stage runs with its training loop replaced by building its input stream (which traces the
    tf.data functions, where the pipeline reads the config): models, optimizers, trainers, pseudo labels and
    checkpoints are the real ones; the evaluation is given its settings but not run. Every config key a
    stage reads must be covered by its fingerprint or be one of ``NOT_FINGERPRINTED``. Reads inside
    ``train_step`` are not seen: the trainers get plain values or, for CPSL, the ``cpsl`` section, which its
    fingerprint covers whole."""
    from cpsl_tf.training import builders
    from cpsl_tf.training import trainer as stage_trainer

    reads = _Reads()
    cfg = _recording(tiny_adversarial, "", reads)

    def without_recording(function):
        def call(*args, **kwargs):
            reads.paused = True
            try:
                return function(*args, **kwargs)
            finally:
                reads.paused = False
        return call

    def build_stream(trainer, make_dataset, total_steps, stage_dir, state, *args, **kwargs):
        make_dataset(0)
        return 0

    # The fingerprint hashes the whole config; its reads are not the stage's.
    monkeypatch.setattr(stage_module, "to_dict", without_recording(stage_module.to_dict))
    monkeypatch.setattr(stage_trainer, "fit_resumable", build_stream)
    # Scores are not checked here: the evaluation is given its settings (read from the config as in a run)
    # but does not run the network.
    monkeypatch.setattr(builders, "evaluate_model", lambda *args, **kwargs: {
        "miou": 0.0, "mpa": 0.0, "pa": 0.0, "classes": []})
    ctx = RunContext(cfg, tmp_path / "run")
    read, uncovered = {}, {}
    for stage in STAGES:
        reads.keys.clear()
        stages._run_stage(ctx, stage)
        read[stage] = set(reads.keys)
        covered = registry()[stage].dependencies()
        missing = sorted(k for k in read[stage] if k not in NOT_FINGERPRINTED
                         and not any(k == d or k.startswith(d + ".") for d in covered))
        if missing:
            uncovered[stage] = missing
    # The recording sees reads outside a stage's own sections, in the runner and in what it calls.
    assert {"eval.split", "train.seed"} <= read["warmup"] and "cpsl.cutmix_prob" not in read["warmup"]
    assert {"cpsl.prototype_mode", "model.head_channels", "eval.batch_size"} <= read["pseudo"]
    assert {"cpsl.iterations", "data.crop_size"} <= read["cpsl"]
    assert {"distill.kd_weight", "cpsl.cutmix_prob"} <= read["distill2"]
    assert not uncovered, f"config keys read by stages but not in their fingerprints: {uncovered}"
