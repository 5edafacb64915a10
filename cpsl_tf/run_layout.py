"""Every path and file name of a run folder (``runs/<name>/``), in one place.

::

    <run>/config.json              the resolved config (cpsl_tf.run_config)
    <run>/results.json             {"stages": {<stage>: {"miou": .., "mpa": .., "pa": .., "iou": [..], ..}}}
    <run>/train.log                what each train.py invocation logged, appended
    <run>/.lock                    the training process's lock (cpsl_tf.training.runlock)
    <run>/<stage>/                 one folder per stage, named as in STAGES:
        model.weights.h5 + model.json    the stage's network and its sidecar (warm-up, CPSL, distillation)
        soft/ + prototypes.npy           the pseudo-label store and the Eq. 7 prototypes (pseudo stage)
        self_labeling.npz                the self-labeling head and delta_pseudo (CPSL stage)
        checkpoints/                     training checkpoints, resumed after an interruption
        eval_history.jsonl               periodic target-val evaluations, one JSON object per line
        train_history.jsonl              training numbers every train.log_every steps
        tensorboard/                     TensorBoard logs (cpsl_tf.training.summaries)
        started.json / done.json         what started the stage's checkpoints / what the finished stage was

Only names live here: no module of the stage machinery is imported, so evaluation, reports and benchmarks
read a run folder through :class:`RunLayout` without pulling in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The stages of a run, in run order; each writes into the folder of its name.
STAGES = ("warmup", "pseudo", "cpsl", "distill1", "distill2")
# The stages that end with a network (and target-val scores, with labels), in run order.
MODEL_STAGES = ("warmup", "cpsl", "distill1", "distill2")

CONFIG = "config.json"
RESULTS = "results.json"
TRAIN_LOG = "train.log"
LOCK = ".lock"
EXPORT = "export"

MODEL = "model.weights.h5"
MODEL_SIDECAR = "model.json"
CHECKPOINTS = "checkpoints"
EVAL_HISTORY = "eval_history.jsonl"
TRAIN_HISTORY = "train_history.jsonl"
TENSORBOARD = "tensorboard"
DONE = "done.json"
STARTED = "started.json"
PSEUDO_STORE = "soft"
PSEUDO_STORE_INDEX = "index.json"  # written last by cpsl_tf.data.pseudo_store: the store is complete
PROTOTYPES = "prototypes.npy"
SELF_LABELING_STATE = "self_labeling.npz"


def configured_stages(cfg) -> list[str]:
    """The stages a run of ``cfg`` has: all of STAGES up to its ``distill.rounds`` distillation rounds."""
    return [s for s in STAGES if not s.startswith("distill") or int(s[-1]) <= cfg.distill.rounds]


@dataclass(frozen=True)
class StageLayout:
    """The folder of one stage and the files in it."""

    folder: Path

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def model(self) -> Path:
        """The stage's final network (``.weights.h5``; its sidecar is :attr:`model_sidecar`)."""
        return self.folder / MODEL

    @property
    def model_sidecar(self) -> Path:
        return self.folder / MODEL_SIDECAR

    @property
    def checkpoints(self) -> Path:
        return self.folder / CHECKPOINTS

    @property
    def history(self) -> Path:
        """The periodic target-val evaluations."""
        return self.folder / EVAL_HISTORY

    @property
    def train_history(self) -> Path:
        return self.folder / TRAIN_HISTORY

    @property
    def tensorboard(self) -> Path:
        return self.folder / TENSORBOARD

    @property
    def done(self) -> Path:
        return self.folder / DONE

    @property
    def started(self) -> Path:
        return self.folder / STARTED

    @property
    def pseudo_store(self) -> Path:
        return self.folder / PSEUDO_STORE

    @property
    def prototypes(self) -> Path:
        return self.folder / PROTOTYPES

    @property
    def self_labeling_state(self) -> Path:
        return self.folder / SELF_LABELING_STATE

    @property
    def outputs(self) -> tuple[Path, ...]:
        """The files a finished stage leaves for the stages after it: the pseudo stage's store and
        prototypes, the others' network and its sidecar."""
        if self.name == "pseudo":
            return self.pseudo_store / PSEUDO_STORE_INDEX, self.prototypes
        return self.model, self.model_sidecar

    def worker_checkpoints(self, task_id: int) -> Path:
        """The scratch checkpoint folder of a multi-worker run's non-chief worker (deleted after training)."""
        return self.folder / f".worker_{task_id}_{CHECKPOINTS}"

    def set_aside(self, suffix: str) -> dict[Path, Path]:
        """Where the training checkpoints, histories and TensorBoard logs go when they are set aside:
        ``checkpoints-<suffix>/``, ``eval_history-<suffix>.jsonl``, ``train_history-<suffix>.jsonl``,
        ``tensorboard-<suffix>/``; by their present place."""
        places = {}
        for path in (self.checkpoints, self.tensorboard, self.history, self.train_history):
            name = Path(path.name)
            places[path] = self.folder / f"{name.stem}-{suffix}{name.suffix}"
        return places


@dataclass(frozen=True)
class RunLayout:
    """The files of the run folder ``run_dir``; ``stage(name)`` those of one stage."""

    run_dir: Path

    def __post_init__(self):
        object.__setattr__(self, "run_dir", Path(self.run_dir))

    @property
    def config(self) -> Path:
        return self.run_dir / CONFIG

    @property
    def results(self) -> Path:
        return self.run_dir / RESULTS

    @property
    def train_log(self) -> Path:
        return self.run_dir / TRAIN_LOG

    @property
    def export(self) -> Path:
        """Where ``train.py`` suggests exporting the run's last network."""
        return self.run_dir / EXPORT

    def lock(self, name: str = LOCK) -> Path:
        return self.run_dir / name

    def stage(self, name: str) -> StageLayout:
        return StageLayout(self.run_dir / name)

    def final_models(self, stages=MODEL_STAGES) -> dict[str, Path]:
        """The networks of ``stages`` that exist, by stage, in run order."""
        return {stage: self.stage(stage).model for stage in stages if self.stage(stage).model.is_file()}
