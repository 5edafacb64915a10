"""Stage ``pseudo``: the inputs of adaptation (Algorithm 1 lines 1-2) from the warmed-up model.

For every target training image, at the network's output resolution and with the model in inference
mode (official ``generate_pseudo_label.py --soft``): the soft pseudo labels P_ST (softmax) into a
compact store, their class distribution (Eq. 10) beside it, and the class prototypes of Eq. 7 (features
averaged under the hard pseudo labels) for initialising the self-labeling head.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from cpsl_tf.config import Config
from cpsl_tf.cpsl.prototypes import PrototypeEstimator
from cpsl_tf.data.pipeline import make_eval_dataset
from cpsl_tf.data.pseudo_store import PseudoLabelStore, PseudoLabelWriter
from cpsl_tf.io_utils import atomic_path
from cpsl_tf.models.checkpoint import CheckpointError, load_segmenter, sidecar_path
from cpsl_tf.models.segmenter import inference_function, output_size
from cpsl_tf.training.inputs import stage_samples
from cpsl_tf.training.stages import RunContext, StageError, stage_fingerprint

log = logging.getLogger(__name__)

STORE = "soft"
PROTOTYPES = "prototypes.npy"


def load_stage_model(ctx: RunContext, stage: str) -> keras.Model:
    """The network that ``stage`` left, refused when it is damaged or was trained under another config
    (its sidecar's fingerprint; sidecars from before fingerprints were recorded are taken with a warning)."""
    path = ctx.model_checkpoint(stage)
    rerun = f"python scripts/train.py --config <config> --stage {stage}"
    if not path.exists():
        raise StageError(f"stage '{stage}' has no model at {path}; run it first ({rerun})")
    try:
        model, meta = load_segmenter(path)
    except CheckpointError as err:
        raise StageError(f"{err}; re-run stage {stage} to write it again ({rerun}: it resumes from its last "
                         "checkpoint)") from err
    if meta["num_classes"] != ctx.cfg.data.num_classes:
        raise StageError(f"{path} predicts {meta['num_classes']} classes but the config has "
                         f"data.num_classes={ctx.cfg.data.num_classes}")
    recorded, expected = meta.get("fingerprint"), stage_fingerprint(ctx.cfg, stage)
    if recorded is None:
        log.warning("%s records no config fingerprint (written before they were recorded): it cannot be "
                    "checked to belong to this config", sidecar_path(path))
    elif recorded != expected:
        raise StageError(f"{path} was trained under another config (fingerprint {recorded} in "
                         f"{sidecar_path(path).name}; this config's stage {stage} has {expected}); re-run "
                         f"stage {stage} with this config ({rerun})")
    return model


def output_shape(model: keras.Model, cfg: Config) -> tuple[int, int]:
    """(h, w) of the network's output for a target image of ``data.target_size``, read from the traced
    graph of the compiled forward pass: never an eager full-resolution pass (R101 at 1024x2048 is killed
    above 23 GB that way)."""
    return output_size(model, cfg.data.target_size)


def pseudo_fingerprint(cfg: Config) -> str:
    return stage_fingerprint(cfg, "pseudo")


def run_pseudo_stage(ctx: RunContext) -> None:
    cfg = ctx.cfg
    model = load_stage_model(ctx, "warmup")
    samples = [dataclasses.replace(s, label=None) for s in stage_samples(cfg).target_train]
    out_dir = ctx.stage_dir("pseudo")
    shape = output_shape(model, cfg)
    num_classes = cfg.data.num_classes
    estimator = PrototypeEstimator(num_classes, cfg.model.head_channels, mode=cfg.cpsl.prototype_mode)

    forward = inference_function(model, cfg.data.target_size)

    @tf.function(input_signature=forward.input_signature)
    def predict(images):
        out = forward(images)
        return tf.nn.softmax(out["logits"], axis=-1), out["features"]

    batch_size = cfg.eval.batch_size
    dataset = make_eval_dataset(samples, cfg.data.target_size, batch_size)
    meta = {"checkpoint": str(ctx.model_checkpoint("warmup")), "fingerprint": pseudo_fingerprint(cfg)}
    with PseudoLabelWriter(out_dir / STORE, num_classes, shape, meta) as writer, \
            tqdm(total=len(samples), desc="soft pseudo labels", unit="img") as bar:
        for start, images in zip(range(0, len(samples), batch_size), dataset):
            probs, features = predict(images)
            estimator.update(features, tf.argmax(probs, axis=-1, output_type=tf.int32))
            probs = probs.numpy()
            for sample, p in zip(samples[start:start + batch_size], probs):
                writer.add(sample.name, p)
            bar.update(len(probs))
    prototypes = estimator.result().numpy()
    unseen = [i for i, count in enumerate(estimator.counts.numpy()) if count == 0]
    if unseen:
        log.warning("no pixel of classes %s among the pseudo labels: their prototypes are zero", unseen)
    with atomic_path(out_dir / PROTOTYPES) as tmp:
        np.save(tmp, prototypes.astype(np.float32))
    log.info("pseudo labels of %d images (%dx%d) in %s", len(samples), *shape, out_dir / STORE)


def load_adaptation_inputs(ctx: RunContext) -> tuple[PseudoLabelStore, np.ndarray, np.ndarray]:
    """The P_ST store (checked against this config), its class distribution (Eq. 10) and the prototypes."""
    root = ctx.run_dir / "pseudo"
    if not (root / STORE / "index.json").exists() or not (root / PROTOTYPES).exists():
        raise StageError(f"no complete pseudo-label stage output in {root}; run --stage pseudo first")
    store = PseudoLabelStore(root / STORE).expect(num_classes=ctx.cfg.data.num_classes,
                                                  fingerprint=pseudo_fingerprint(ctx.cfg))
    prototypes = np.load(Path(root / PROTOTYPES))
    return store, store.class_distribution().astype(np.float32), prototypes
