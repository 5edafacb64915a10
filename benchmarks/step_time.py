"""Training-step time at the benchmark config: warm-up, CPSL (paper, official), CPSL w/o SL, and the
input pipeline's delivery rate against what a CPSL step consumes.

    python benchmarks/step_time.py [--config configs/bench.json] [--steps 30]

Targets: the self-labeling overhead, step(CPSL) / step(w/o SL) on the same model and
batch, at most 1.15; the pipeline delivers at least twice the batches per second a CPSL step consumes.
All steps run on one fixed in-memory batch (so the pipeline is not in the step time), after a compile
step that is not timed. Writes benchmarks/results/step_time.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _fixed_batch_rate(model, batch, steps: int, warmup_steps: int) -> float:
    import tensorflow as tf

    data = tf.data.Dataset.from_tensors(batch).repeat()
    # Compile, and fill the memory bank so that the timed steps run Sinkhorn over bank + samples.
    model.fit(data, epochs=1, steps_per_epoch=warmup_steps, verbose=0)
    begin = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
    return (time.perf_counter() - begin) / steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "bench.json")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup-steps", type=int, default=40,
                        help="untimed steps first (the bench bank fills after 32 steps)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "step_time.json")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from cpsl_tf.config import load_config
    from cpsl_tf.cpsl.model import CPSLModel
    from cpsl_tf.data.pipeline import make_training_dataset
    from cpsl_tf.io_utils import atomic_write_json
    from cpsl_tf.models.segmenter import build_segmenter, output_size
    from cpsl_tf.training.builders import build_segmentation_optimizer
    from cpsl_tf.training.inputs import stage_samples
    from cpsl_tf.training.warmup import SupervisedSegmentation

    cfg = load_config(args.config)
    samples = stage_samples(cfg, need_val_labels=False)
    num_classes = cfg.data.num_classes
    rng = np.random.default_rng(0)
    probe = build_segmenter(cfg.model, num_classes)
    out_hw = output_size(probe, cfg.data.target_size)  # from the traced graph: no eager full-size pass
    soft = tf.nn.softmax(rng.normal(size=(*out_hw, num_classes)).astype(np.float32) * 3).numpy()

    def lookup(name):
        return soft

    official_cfg = load_config(args.config, ["cpsl.preset=official"])
    datasets = {preset: make_training_dataset(samples.source, samples.target_train, c, 0,
                                              pseudo_lookup=lookup)
                for preset, c in (("paper", cfg), ("official", official_cfg))}
    batches = {preset: next(iter(d)) for preset, d in datasets.items()}

    def cpsl_model(config):
        student = build_segmenter(config.model, num_classes)
        teacher = build_segmenter(config.model, num_classes, name="teacher")
        teacher.set_weights(student.get_weights())
        prototypes = rng.normal(size=(num_classes, config.model.head_channels)).astype(np.float32)
        model = CPSLModel(student, teacher, prototypes, np.full(num_classes, 1 / num_classes, np.float32),
                          config.cpsl)
        model.use_optimizer(build_segmentation_optimizer(config, 1e-3, 1e-2, 10**6, model.trainable_for_step,
                                                         1e-2))
        model.compile(optimizer=model.grouped.optimizer)
        return model

    without_sl = dataclasses.replace(cfg, cpsl=dataclasses.replace(cfg.cpsl, use_self_labeling=False))
    results = {}
    segmenter = build_segmenter(cfg.model, num_classes)
    warm = SupervisedSegmentation(segmenter, build_segmentation_optimizer(cfg, 1e-3, 1e-2, 10**6,
                                                                            segmenter.trainable_variables))
    warm.compile(optimizer=warm.grouped.optimizer)
    results["warmup_source_only"] = _fixed_batch_rate(warm, {k: batches["paper"][k] for k in
                                                             ("source_image", "source_label")}, args.steps,
                                                   args.warmup_steps)
    results["cpsl_paper"] = _fixed_batch_rate(cpsl_model(cfg), batches["paper"], args.steps,
                                             args.warmup_steps)
    results["cpsl_without_sl"] = _fixed_batch_rate(cpsl_model(without_sl), batches["paper"],
                                                   args.steps, args.warmup_steps)
    results["cpsl_official"] = _fixed_batch_rate(cpsl_model(official_cfg),
                                                 batches["official"], args.steps, args.warmup_steps)

    iterator = iter(datasets["paper"])
    next(iterator)
    begin = time.perf_counter()
    for _ in range(args.steps):
        next(iterator)
    pipeline_seconds = (time.perf_counter() - begin) / args.steps

    report = {
        "command": "python benchmarks/step_time.py " + " ".join(argv or sys.argv[1:]),
        "config": str(args.config.relative_to(REPO) if args.config.is_relative_to(REPO) else args.config),
        "batch_size": cfg.train.batch_size, "crop": cfg.data.crop_size, "steps": args.steps,
        "seconds_per_step": results,
        "self_labeling_overhead": results["cpsl_paper"] / results["cpsl_without_sl"],
        "pipeline_seconds_per_batch": pipeline_seconds,
        "pipeline_headroom": results["cpsl_paper"] / pipeline_seconds,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_1min": os.getloadavg()[0]},
        "targets": {"self_labeling_overhead_max": 1.15, "pipeline_headroom_min": 2.0},
    }
    atomic_write_json(args.out, report)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
