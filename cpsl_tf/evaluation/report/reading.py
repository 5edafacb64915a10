"""What the report reads: a run folder (config, results, histories, models, stage status, the pseudo-label
store and the self-labeling state) and the target images its config names.

Every path and file name of the run folder that the report uses is spelled in this module, and nowhere else
in the report; the sections only name files in their text (the constants below).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cpsl_tf.command import UserError
from cpsl_tf.config import Config, ConfigError
from cpsl_tf.data import datasets
from cpsl_tf.labels import class_names
from cpsl_tf.run_config import read_run_config
from cpsl_tf.run_layout import MODEL_STAGES, RunLayout, configured_stages

log = logging.getLogger(__name__)

REPORT_DIR = "report"
# File names as the report's text shows them, relative to the run folder (cpsl_tf.run_layout owns them).
_RELATIVE = RunLayout(Path("."))
RESULTS_NAME = _RELATIVE.results.name
SELF_LABELING_STATE = _RELATIVE.stage("cpsl").self_labeling_state
RESULT_KEYS = ("miou", "mpa", "pa", "iou", "acc", "seconds")


class ReportError(UserError, ValueError):
    """A run folder that cannot be reported on (no config, malformed results); names the file."""


@dataclass
class RunFolder:
    """What a run folder holds, read once; the larger state files are read when a section asks."""

    run_dir: Path
    cfg: Config
    results: dict[str, dict]
    histories: dict[str, list[dict]]
    models: dict[str, Path]
    # Each stage's training numbers every train.log_every steps (train_history.jsonl).
    losses: dict[str, list[dict]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    # Share of each class in the target-train ground truth, else in the self-training pseudo labels
    # (class_share_of says which).
    class_share: np.ndarray | None = None
    class_share_of: str = ""

    @property
    def num_classes(self) -> int:
        return self.cfg.data.num_classes

    @property
    def names(self) -> tuple[str, ...]:
        return class_names(self.num_classes)

    @property
    def selected_stages(self) -> list[str]:
        """The stages the run's config trains, in run order."""
        return configured_stages(self.cfg)

    @property
    def report_dir(self) -> Path:
        return self.run_dir / REPORT_DIR

    @property
    def self_labeling_file(self) -> Path:
        return RunLayout(self.run_dir).stage("cpsl").self_labeling_state

    def stage_status(self, stage: str) -> str:
        files = RunLayout(self.run_dir).stage(stage)
        if files.done.is_file():
            return "finished"
        if files.checkpoints.is_dir():
            return "interrupted (resumable)"
        return "not run"

    def self_labeling_state(self) -> dict[str, np.ndarray] | None:
        """The arrays of the CPSL stage's self-labeling state as float64; None without the file."""
        if not self.self_labeling_file.is_file():
            return None
        with np.load(self.self_labeling_file) as npz:
            return {key: np.asarray(npz[key], dtype=np.float64) for key in npz.files}

    def pseudo_label_distribution(self) -> np.ndarray:
        """Eq. 10 class distribution written beside the self-training pseudo-label store; raises
        :class:`~cpsl_tf.data.pseudo_store.PseudoStoreError` when the store is absent or unreadable."""
        from cpsl_tf.data.pseudo_store import PseudoLabelStore

        return PseudoLabelStore(RunLayout(self.run_dir).stage("pseudo").pseudo_store).class_distribution()


def read_steps(path: Path, required: Sequence[str] = ()) -> list[dict]:
    """The numbers of a JSON-lines log of one entry per step, with the ``required`` keys (kept when null),
    sorted by step. A resumed stage may have logged a step twice: the later entry wins. A line cut short by
    a crash is skipped with a warning."""
    by_step: dict[int, dict] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            numbers = {key: value for key, value in entry.items()
                       if isinstance(value, (int, float)) and not isinstance(value, bool)}
            by_step[int(entry["step"])] = {**numbers, **{key: entry[key] for key in required},
                                           "step": int(entry["step"])}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            log.warning("%s:%d: skipping an unreadable entry (%s)", path, number, error)
    return [by_step[step] for step in sorted(by_step)]


def read_history(path: Path) -> list[dict]:
    """Periodic evaluations of a stage: the scores every stage logs (``pa`` None when absent) and any
    diagnostics a stage adds."""
    return [{"pa": None, **entry} for entry in read_steps(path, ("miou", "mpa"))]


def _check_result(stage: str, result, num_classes: int, path: Path) -> dict:
    if not isinstance(result, dict):
        raise ReportError(f"{path}: stages.{stage} must be an object, got {result!r}")
    missing = [key for key in RESULT_KEYS if key not in result]
    if missing:
        raise ReportError(f"{path}: stages.{stage} lacks {', '.join(missing)} (expected keys "
                          f"{', '.join(RESULT_KEYS)})")
    for key in ("iou", "acc"):
        if len(result[key]) != num_classes:
            raise ReportError(f"{path}: stages.{stage}.{key} has {len(result[key])} values but the run's "
                              f"config has data.num_classes={num_classes}")
    return result


def read_run(run_dir: str | Path) -> RunFolder:
    """Config, results, evaluation histories and final models of a run folder."""
    run_dir = Path(run_dir)
    layout = RunLayout(run_dir)
    config_path = layout.config
    if not config_path.is_file():
        raise ReportError(f"{config_path} does not exist: {run_dir} is not a run folder (scripts/train.py "
                          "writes the resolved config there when a run starts)")
    try:
        cfg = read_run_config(run_dir)
    except ConfigError as error:
        raise ReportError(str(error)) from error
    missing = []
    results_path = layout.results
    results: dict[str, dict] = {}
    if results_path.is_file():
        try:
            raw = json.loads(results_path.read_text())
        except json.JSONDecodeError as error:
            raise ReportError(f"{results_path}: not valid JSON ({error})") from error
        if not isinstance(raw, dict) or not isinstance(raw.get("stages"), dict):
            raise ReportError(f"{results_path}: expected {{\"stages\": {{<stage>: {{...}}}}}}")
        results = {stage: _check_result(stage, r, cfg.data.num_classes, results_path)
                   for stage, r in raw["stages"].items()}
    else:
        missing.append(f"`{RESULTS_NAME}` does not exist: no stage has finished with target-val scores")
    order = [s for s in MODEL_STAGES if s in configured_stages(cfg) or s in results]
    results = {s: results[s] for s in order if s in results} | {
        s: r for s, r in results.items() if s not in order}
    stages = {s: layout.stage(s) for s in order}
    histories = {s: read_history(files.history) for s, files in stages.items() if files.history.is_file()}
    models = layout.final_models(order)
    losses = {s: read_steps(files.train_history) for s, files in stages.items()
              if files.train_history.is_file()}
    return RunFolder(run_dir, cfg, results, histories, models, losses, missing)


def target_samples(cfg: Config, split: str) -> list[datasets.Sample]:
    """The samples of a split of the run's target dataset."""
    reader = datasets.reader_for(cfg.data.target, "target")
    return datasets.list_samples(reader, cfg.data.target_root, split, cfg.data.num_classes)
