"""Stage ``pseudo``: the inputs of adaptation (Algorithm 1 lines 1-2) from the warmed-up model.

For every target training image, at the network's output resolution and with the model in inference
mode (official ``generate_pseudo_label.py --soft``): the soft pseudo labels P_ST (softmax) into a
compact store, their class distribution (Eq. 10) beside it, and the class prototypes of Eq. 7 (features
averaged under the hard pseudo labels) for initialising the self-labeling head. The stage is
:data:`PSEUDO`; :func:`load_adaptation_inputs` reads its outputs back for the CPSL stage.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from cpsl_tf.cpsl.prototypes import PrototypeEstimator
from cpsl_tf.data.pipeline import make_eval_dataset
from cpsl_tf.data.pseudo_store import PseudoLabelStore, PseudoLabelWriter
from cpsl_tf.io_utils import atomic_path
from cpsl_tf.models.segmenter import inference_function
from cpsl_tf.training.builders import load_stage_model, output_shape
from cpsl_tf.training.inputs import stage_samples
from cpsl_tf.training.stage import RunContext, Stage, StageError
from cpsl_tf.training.warmup import WARMUP

log = logging.getLogger(__name__)


def run_pseudo_stage(ctx: RunContext) -> None:
    cfg = ctx.cfg
    model = load_stage_model(ctx, WARMUP)
    samples = [dataclasses.replace(s, label=None) for s in stage_samples(cfg).target_train]
    outputs = ctx.layout.stage(PSEUDO.name)
    outputs.folder.mkdir(parents=True, exist_ok=True)
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
    meta = {"checkpoint": str(ctx.layout.stage(WARMUP.name).model), "fingerprint": PSEUDO.fingerprint(cfg)}
    with PseudoLabelWriter(outputs.pseudo_store, num_classes, shape, meta) as writer, \
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
    with atomic_path(outputs.prototypes) as tmp:
        np.save(tmp, prototypes.astype(np.float32))
    log.info("pseudo labels of %d images (%dx%d) in %s", len(samples), *shape, outputs.pseudo_store)


# The prototypes of Eq. 7 (paper) or the official running means.
PSEUDO = Stage("pseudo", needs=(WARMUP,), reads=("cpsl.prototype_mode",), run=run_pseudo_stage)


def load_adaptation_inputs(ctx: RunContext) -> tuple[PseudoLabelStore, np.ndarray, np.ndarray]:
    """The P_ST store (checked against this config), its class distribution (Eq. 10) and the prototypes."""
    outputs = ctx.layout.stage(PSEUDO.name)
    if not all(path.exists() for path in outputs.outputs):
        raise StageError(f"no complete pseudo-label stage output in {outputs.folder}; run --stage pseudo "
                         "first")
    store = PseudoLabelStore(outputs.pseudo_store).expect(num_classes=ctx.cfg.data.num_classes,
                                                          fingerprint=PSEUDO.fingerprint(ctx.cfg))
    prototypes = np.load(outputs.prototypes)
    return store, store.class_distribution().astype(np.float32), prototypes
