"""What a stage is: its declaration (:class:`Stage`), what it is given (:class:`RunContext`), how it fails
(:class:`StageError`), and its config fingerprint.

A stage declares its name, the stages whose outputs it reads (``needs``, the declarations themselves), the
config it reads (``reads``: whole sections, and single ``"section.key"`` keys outside them) and its run
function. The stage modules (``warmup``, ``pseudo``, ``adapt``, ``distill``) each declare theirs beside the
code that reads the config; :mod:`cpsl_tf.training.stages` lists them and runs them.

A stage's fingerprint hashes the config it and every stage it needs (transitively) read, less
``NOT_FINGERPRINTED``: a finished stage is skipped while its fingerprint is unchanged, and its checkpoints are
resumed only under the fingerprint that started them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cpsl_tf.command import UserError
from cpsl_tf.config import Config, to_dict
from cpsl_tf.run_layout import RunLayout

# Keys the stages read that leave their outputs as they are: how often to checkpoint, evaluate and log,
# where runs go, the batch of inference-mode passes (each image on its own), the name in checkpoint metadata.
# They are left out of the fingerprints, so changing them neither re-runs a stage nor sets checkpoints aside.
NOT_FINGERPRINTED = ("train.checkpoint_every", "train.eval_every", "train.log_every", "train.run_dir",
                     "eval.batch_size", "name")


class StageError(UserError, RuntimeError):
    """A stage cannot run (missing inputs, bad data); the message says what to do."""


@dataclass
class RunContext:
    """What the runner gives a stage: the config and the run folder."""

    cfg: Config
    run_dir: Path
    layout: RunLayout = field(init=False)

    def __post_init__(self):
        self.run_dir = Path(self.run_dir)
        self.layout = RunLayout(self.run_dir)

    def stage_dir(self, stage: str) -> Path:
        """The folder of ``stage``, made if missing."""
        path = self.layout.stage(stage).folder
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass(frozen=True, eq=False)
class Stage:
    """One stage of a run. ``run(ctx)`` trains or computes its outputs into its folder and returns its
    target-val scores (None when it has none)."""

    name: str
    needs: tuple[Stage, ...]
    reads: tuple[str, ...]
    run: Callable[[RunContext], dict | None]

    def upstream(self) -> list[Stage]:
        """The stages this one reads the outputs of, directly or through others, and itself; each once,
        the needed before the needing."""
        ordered: list[Stage] = []
        for needed in self.needs:
            ordered += [s for s in needed.upstream() if s not in ordered]
        return [*ordered, self]

    def dependencies(self) -> tuple[str, ...]:
        """The config sections and single dotted keys this stage and every stage it needs read (a key inside
        a listed section is not listed again)."""
        reads = [entry for stage in self.upstream() for entry in stage.reads]
        sections = [entry for entry in reads if "." not in entry]
        keys = [entry for entry in reads if "." in entry and entry.split(".")[0] not in sections]
        return tuple(dict.fromkeys(sections + keys))

    def fingerprint(self, cfg: Config) -> str:
        """Hash of the config this stage and every stage it needs read."""
        raw = to_dict(cfg)
        covered = {entry: _value(raw, entry) for entry in self.dependencies()}
        for volatile in NOT_FINGERPRINTED:
            section, _, key = volatile.rpartition(".")
            covered.get(section, {}).pop(key, None)
        if "bench" in (cfg.data.source, cfg.data.target):
            from cpsl_tf.benchmark.generate import GENERATOR_VERSION

            # A new generator draws other images from the same settings: earlier outputs are stale.
            covered["benchmark_generator"] = GENERATOR_VERSION
        return hashlib.sha256(json.dumps(covered, sort_keys=True).encode()).hexdigest()[:16]


def _value(raw: dict, key: str):
    for part in key.split("."):
        raw = raw[part]
    return raw
