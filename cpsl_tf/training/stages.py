"""The stages of a run and their runner: warm-up -> pseudo labels -> CPSL -> distillation rounds, with skip
and resume.

:func:`registry` lists the stages, each declared in its own module beside the code that reads the config
(:class:`~cpsl_tf.training.stage.Stage`: name, the stages it needs, the config it reads, its run function):
``warmup.WARMUP``, ``pseudo.PSEUDO``, ``adapt.CPSL``, ``distill.DISTILL_ROUNDS``. Their folders and files
are :mod:`cpsl_tf.run_layout`'s.

A stage that finished writes ``<stage>/done.json`` with its config fingerprint (of what it and the stages it
needs read), the identity of the outputs of the stages it needs and a new identity of its own outputs. It is
skipped while that fingerprint and those identities match and its outputs exist, and re-run when the config
changed or a stage it needs ran again. A stage that was interrupted resumes from its last checkpoint when
rerun with the same config; checkpoints of another config are set aside, never resumed. A damaged
``done.json`` or ``results.json`` is moved aside with a warning and the stages it vouched for run again.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from cpsl_tf.config import Config
from cpsl_tf.io_utils import atomic_write_json
from cpsl_tf.run_config import write_run_config
from cpsl_tf.run_layout import (
    STAGES,
    RunLayout,
    StageLayout,
    configured_stages,
)
from cpsl_tf.training.leftovers import remove_leftovers
from cpsl_tf.training.runlock import lock_name, run_folder_lock
from cpsl_tf.training.stage import RunContext, Stage, StageError

log = logging.getLogger(__name__)


@functools.cache
def registry() -> dict[str, Stage]:
    """Every stage by name, in run order (``run_layout.STAGES``). The stage modules are imported on first
    use: they import TensorFlow, which ``train.py`` configures first (:mod:`cpsl_tf.quiet`)."""
    from cpsl_tf.training.adapt import CPSL
    from cpsl_tf.training.distill import DISTILL_ROUNDS
    from cpsl_tf.training.pseudo import PSEUDO
    from cpsl_tf.training.warmup import WARMUP

    return {stage.name: stage for stage in (WARMUP, PSEUDO, CPSL, *DISTILL_ROUNDS)}


def stage_fingerprint(cfg: Config, stage: str) -> str:
    """Hash of the config that ``stage`` and every stage it needs read (:meth:`Stage.fingerprint`)."""
    return registry()[stage].fingerprint(cfg)


def read_marker(path: Path, consequence: str, required: dict[str, type] | None = None) -> dict | None:
    """The JSON object in ``path`` (with the ``required`` keys, of those types), or None when it does not
    exist. A damaged one is moved to ``<name>.damaged`` with a warning saying ``consequence``, and taken as
    absent."""
    if not path.exists():
        return None
    try:
        marker = json.loads(path.read_text())
        if not isinstance(marker, dict):
            raise ValueError(f"a JSON {type(marker).__name__}, not an object")
        for key, kind in (required or {}).items():
            if not isinstance(marker.get(key), kind):
                raise ValueError(f"no {kind.__name__} '{key}'")
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        damaged = path.with_name(path.name + ".damaged")
        path.replace(damaged)
        log.warning("%s is damaged (%s): moved to %s; %s", path, err, damaged, consequence)
        return None
    return marker


def _done_marker(ctx: RunContext, stage: str) -> dict | None:
    return read_marker(ctx.layout.stage(stage).done, f"stage {stage} runs again",
                       required={"fingerprint": str})


def input_identities(ctx: RunContext, stage: str) -> dict:
    """The output identities of the stages ``stage`` needs, as their ``done.json`` records them (None for
    one that has not finished, or finished before identities were recorded)."""
    return {needed.name: (_done_marker(ctx, needed.name) or {}).get("output")
            for needed in registry()[stage].needs}


def is_done(ctx: RunContext, stage: str) -> bool:
    """Whether ``stage`` finished under this config, from the outputs its input stages have now, and its
    own outputs (and scores, if it had some) are still there."""
    marker = _done_marker(ctx, stage)
    if marker is None or marker["fingerprint"] != stage_fingerprint(ctx.cfg, stage):
        return False
    missing = [str(path) for path in ctx.layout.stage(stage).outputs if not path.exists()]
    if missing:
        log.warning("stage %s finished earlier, but %s is missing: it runs again", stage,
                    " and ".join(missing))
        return False
    recorded = marker.get("inputs", {})
    changed = [up for up, identity in input_identities(ctx, stage).items() if recorded.get(up) != identity]
    if changed:
        log.info("stage %s: stage %s ran again since it finished: it runs again", stage, ", ".join(changed))
        return False
    if marker.get("scored") and stage not in read_results(ctx.run_dir)["stages"]:
        log.warning("stage %s finished earlier, but its scores are missing from %s: it runs again", stage,
                    ctx.layout.results)
        return False
    return True


def _started_marker(stage: StageLayout) -> dict | None:
    """What ``started.json`` (or, before it existed, ``done.json``) recorded of the run that wrote the
    stage's checkpoints."""
    consequence = "the stage's checkpoints are checked against their own fingerprint only"
    for path in (stage.started, stage.done):
        marker = read_marker(path, consequence, required={"fingerprint": str})
        if marker is not None:
            return marker
    return None


def _move_aside(stage: StageLayout, suffix: str) -> Path:
    """Move the training checkpoints, the evaluation and training histories and the TensorBoard logs of a
    stage to their set-aside places (:meth:`StageLayout.set_aside`, replacing older copies); returns the
    checkpoints' new place."""
    places = stage.set_aside(suffix)
    for place, aside in places.items():
        if place in (stage.checkpoints, stage.tensorboard):
            shutil.rmtree(aside, ignore_errors=True)
        # Another worker of a multi-worker run may have moved them first.
        with contextlib.suppress(FileNotFoundError):
            place.replace(aside)
    return places[stage.checkpoints]


def set_aside_checkpoints(ctx: RunContext, stage: str, suffix: str) -> None:
    """Move a stage's training checkpoints to ``checkpoints-<suffix>/`` (replacing an older copy), and its
    evaluation history beside them, so the stage trains afresh without deleting them (``--from`` and
    ``--force``)."""
    if ctx.layout.stage(stage).checkpoints.exists():
        aside = _move_aside(ctx.layout.stage(stage), suffix)
        log.info("stage %s: earlier checkpoints moved to %s; training afresh", stage, aside)


def set_aside_foreign_checkpoints(ctx: RunContext, stage: str) -> None:
    """Keep a stage from resuming checkpoints that another config, or other outputs of the stages it reads,
    trained.

    The stage's training checkpoints are resumed only under the config fingerprint and input identities
    that started them; other checkpoints are moved to ``checkpoints-<their fingerprint>/`` (or
    ``checkpoints-previous/`` when only the inputs changed: kept, not mixed in) and the stage starts afresh.
    ``started.json`` records this start. The checkpoints also carry the fingerprint themselves
    (:func:`cpsl_tf.training.loop.fit_resumable` checks it).
    """
    ctx.stage_dir(stage)
    layout = ctx.layout.stage(stage)
    fingerprint = stage_fingerprint(ctx.cfg, stage)
    inputs = input_identities(ctx, stage)
    checkpoints = layout.checkpoints
    recorded = _started_marker(layout) if checkpoints.exists() else None
    if recorded is not None:
        recorded_fingerprint = recorded["fingerprint"]
        if recorded_fingerprint != fingerprint:
            aside = _move_aside(layout, recorded_fingerprint)
            log.warning("stage %s: the checkpoints in %s were written by another config (fingerprint %s, "
                        "this config %s); moved to %s, the stage starts afresh", stage, checkpoints,
                        recorded_fingerprint, fingerprint, aside)
        elif recorded.get("inputs", inputs) != inputs:
            aside = _move_aside(layout, "previous")
            log.warning("stage %s: the checkpoints in %s were trained on outputs of stage %s from before it "
                        "ran again; moved to %s, the stage starts afresh", stage, checkpoints,
                        ", ".join(inputs), aside)
    atomic_write_json(layout.started, {"fingerprint": fingerprint, "inputs": inputs})


def read_results(run_dir: Path) -> dict:
    """``results.json``; a damaged one is moved aside (the stages whose scores it held run again)."""
    results = read_marker(RunLayout(run_dir).results, "the stages whose scores it held run again",
                          required={"stages": dict})
    return results if results is not None else {"stages": {}}


def record_result(run_dir: Path, stage: str, result: dict) -> None:
    results = read_results(run_dir)
    results["stages"][stage] = result
    atomic_write_json(RunLayout(run_dir).results, results)


def _run_stage(ctx: RunContext, stage: str) -> dict | None:
    return registry()[stage].run(ctx)


def known_failure(err: Exception) -> str | None:
    """The message of a failure with a known cause (bad data, foreign store or checkpoint, a non-finite
    loss), or ``None`` for anything else (a bug: its traceback is wanted).

    A file that cannot be read inside ``tf.data`` (``tf.numpy_function``) arrives as a TensorFlow error
    whose long message embeds the Python exception; :func:`cpsl_tf.data.pipeline.reader_failure` keeps its
    last line, which names the file.
    """
    from cpsl_tf.data.datasets import DatasetError
    from cpsl_tf.data.pipeline import reader_failure
    from cpsl_tf.data.pseudo_store import PseudoStoreError
    from cpsl_tf.models.checkpoint import CheckpointError
    from cpsl_tf.training.callbacks import NonFiniteLossError

    if isinstance(err, (DatasetError, PseudoStoreError, CheckpointError, NonFiniteLossError)):
        return str(err)
    return reader_failure(err)


def selected_stages(cfg: Config, only: str | None = None, start: str | None = None) -> list[str]:
    for name in (only, start):
        if name is not None and name not in STAGES:
            raise StageError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
    stages = configured_stages(cfg)
    if only is not None:
        return [only]
    if start is not None:
        return stages[stages.index(start):]
    return stages


def run_stages(cfg: Config, run_dir: Path, only: str | None = None, start: str | None = None,
               force: bool = False, on_locked: Callable[[], None] | None = None) -> dict:
    """Run the selected stages in order; finished stages with a matching fingerprint are skipped. The run
    folder is locked for the whole call: a second process on it gets ``RunFolderBusy`` (``runlock``).
    ``on_locked`` is called once the lock is taken, before anything else in the folder is touched."""
    ctx = RunContext(cfg=cfg, run_dir=Path(run_dir))
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    with run_folder_lock(ctx.run_dir, lock_name(cfg.train.strategy)):
        locked_at = time.time()
        if on_locked is not None:
            on_locked()
        return _run_selected(ctx, only, start, force, locked_at=locked_at)


def _run_selected(ctx: RunContext, only: str | None, start: str | None, force: bool,
                  locked_at: float) -> dict:
    cfg = ctx.cfg
    remove_leftovers(ctx.run_dir, locked_at, recursive=False)
    write_run_config(cfg, ctx.run_dir)
    forced = set(selected_stages(cfg, only, start)) if (force or only or start) else set()
    for stage in selected_stages(cfg, only, start):
        if stage not in forced and is_done(ctx, stage):
            log.info("stage %s: finished earlier with the same config, skipped", stage)
            continue
        log.info("stage %s: starting", stage)
        remove_leftovers(ctx.stage_dir(stage), locked_at)
        if force or start is not None:
            set_aside_checkpoints(ctx, stage, "previous")
        set_aside_foreign_checkpoints(ctx, stage)
        inputs = input_identities(ctx, stage)
        begin = time.time()
        try:
            result = _run_stage(ctx, stage)
        except Exception as err:
            reason = known_failure(err)
            if reason is None:
                raise
            raise StageError(f"stage {stage} stopped: {reason}") from err
        seconds = time.time() - begin
        if result is not None:
            record_result(ctx.run_dir, stage, dict(result, seconds=seconds))
        atomic_write_json(ctx.layout.stage(stage).done, {
            "fingerprint": stage_fingerprint(cfg, stage), "inputs": inputs, "output": secrets.token_hex(8),
            "scored": result is not None, "seconds": seconds})
        log.info("stage %s: done in %.0f s", stage, seconds)
    return read_results(ctx.run_dir)


def stage_table(results: dict) -> str:
    """A plain-text table of every stage's mIoU / MPA / PA / wall time."""
    lines = [f"{'stage':<10} {'mIoU':>6} {'MPA':>6} {'PA':>6} {'time':>8}"]
    for stage, r in results.get("stages", {}).items():
        lines.append(f"{stage:<10} {100 * r['miou']:6.1f} {100 * r['mpa']:6.1f} {100 * r['pa']:6.1f} "
                     f"{r['seconds']:7.0f}s")
    return "\n".join(lines)

