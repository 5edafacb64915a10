"""tf.data pipelines: the zipped source/target training stream and the evaluation stream.

Training (``make_training_dataset``): the source and target streams are each an endless, per-epoch
reshuffled sequence of sample indices, mapped in parallel (decode + views) with ``deterministic=True``,
zipped element by element (CutMix needs both), batched with ``drop_remainder`` and prefetched. Every
element's randomness comes from a stateless seed (run seed, stream, position in the stream), so two runs
with the same seed yield the same
batches. Batches are dicts (sizes: crop = data.crop_size, full = data.target_size):

=================  =======================================  ==========================================
key                shape / dtype                            content
=================  =======================================  ==========================================
source_image       (B, crop, 3) float32 in [0, 1]           source weak view (+ photometric aug if
                                                            data.source_photometric)
source_label       (B, crop) uint8, 255 ignore              source labels in the same geometry
target_image       (B, crop, 3) float32                     target weak view (CutMix'ed if it fired)
target_strong      (B, crop, 3) float32                     strong view of the un-mixed weak crop
strong_params      dict of (B, k) float32                   ``cpsl_tf.data.strong`` parameters
weak_params        dict scaled_size (B, 2), crop_box (B, 4),  ``cpsl_tf.data.views`` parameters
                   flip (B,) int32
target_full        (B, full, 3) float32                     un-augmented target, align-corners resize
target_soft        (B, crop / soft_stride, C) float32       P_ST in the crop frame (pseudo_lookup only)
cutmix_box         (B, 4) int32 [y1, x1, y2, x2]            empty box when CutMix did not fire
cutmix             (B,) bool
=================  =======================================  ==========================================

Evaluation (``make_eval_dataset``): (image, label) batches in sample order, the image resized (bilinear)
to the model's input size and the label kept at its own resolution, as the official protocol (predictions
are brought to the label). It is the one stream of evaluation images: the Keras evaluation, the export
parity gate and the ONNX Runtime / TensorRT runners read it through ``cpsl_tf.evaluation.evaluate``, and the
pseudo-label stage reads its images. A batch holds labels of one size (a split whose label sizes differ is
batched size by size); samples without a label file yield the image only.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from cpsl_tf.config import Config
from cpsl_tf.data.cutmix import cutmix
from cpsl_tf.data.strong import StrongAugment, color_jitter, gaussian_blur, strong_view
from cpsl_tf.data.views import weak_view
from cpsl_tf.resize import resize_bilinear

SOURCE_STREAM, TARGET_STREAM, PAIR_STREAM = 1, 2, 3


def _default_loaders(load_image, load_label):
    """The dataset readers, unless given; labels with ids outside the dataset's table are refused."""
    if load_image is None or load_label is None:
        from cpsl_tf.data import datasets

        load_image = load_image or datasets.load_image
        load_label = load_label or functools.partial(datasets.load_label, strict=True)
    return load_image, load_label


def _image_reader(samples, load_image):
    paths = [str(s.image) for s in samples]

    def read(index):
        image = np.asarray(load_image(paths[int(index)]))
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(f"{paths[int(index)]}: load_image must give (H, W, 3) uint8, got "
                             f"{image.shape} {image.dtype}")
        return image

    def op(index):
        image = tf.numpy_function(read, [index], tf.uint8, stateful=False)
        image.set_shape([None, None, 3])
        return image

    return op


def _label_reader(samples, load_label, num_classes):
    missing = [s.name for s in samples if s.label is None]
    if missing:
        raise ValueError(f"labels are required but {len(missing)} sample(s) have none, e.g. {missing[0]!r}")

    def read(index):
        sample = samples[int(index)]
        return np.asarray(load_label(str(sample.label), sample.dataset, num_classes), np.uint8)

    def op(index):
        label = tf.numpy_function(read, [index], tf.uint8, stateful=False)
        label.set_shape([None, None])
        return label

    return op


def _soft_reader(samples, pseudo_lookup, num_classes):
    names = [s.name for s in samples]

    def read(index):
        soft = np.asarray(pseudo_lookup(names[int(index)]), np.float32)
        if soft.ndim != 3 or soft.shape[-1] != num_classes:
            raise ValueError(f"pseudo-label map of {names[int(index)]!r}: expected (h, w, {num_classes}), "
                             f"got {soft.shape}")
        return soft

    def op(index):
        soft = tf.numpy_function(read, [index], tf.float32, stateful=False)
        soft.set_shape([None, None, num_classes])
        return soft

    return op


def reader_failure(error: Exception) -> str | None:
    """The message of a file that a ``tf.numpy_function`` reader could not read, else ``None``.

    Such a failure reaches the consumer of a dataset as a TensorFlow error whose long message embeds the
    Python exception; its last line names the file.
    """
    if not isinstance(error, tf.errors.OpError) or "PyFunc" not in str(error):
        return None
    raised = re.findall(r"^[\w.]*(?:DatasetError|PseudoStoreError|FileNotFoundError|ValueError|KeyError): (.+)$",
                        str(error), re.MULTILINE)
    return raised[-1] if raised else None


def _index_stream(count: int, seed: int, stream: int, start: int = 0):
    """(position, sample index) pairs: endless, reshuffled every epoch, deterministic for ``seed``.

    ``start`` skips the first positions cheaply (before any decoding), so a resumed run continues the
    exact stream of an uninterrupted one.
    """
    if count == 0:
        raise ValueError(f"the {'source' if stream == SOURCE_STREAM else 'target'} sample list is empty")
    indices = tf.data.Dataset.range(count).shuffle(count, seed=seed * 4 + stream,
                                                   reshuffle_each_iteration=True).repeat()
    return tf.data.Dataset.zip(tf.data.Dataset.counter(), indices).skip(start)


def _element_seed(seed: int, stream: int, position):
    return tf.stack([tf.constant(seed, tf.int64), position * 4 + stream])


def source_photometric(image, seed):
    """Photometric augmentation of the source weak view: blur and colour jitter, each with p 0.5."""
    blur_seed, jitter_seed, apply_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    x = image * 255.0
    x = tf.cond(tf.random.stateless_uniform([], blur_seed) < 0.5, lambda: gaussian_blur(x, 1.0), lambda: x)
    x = tf.cond(tf.random.stateless_uniform([], apply_seed) < 0.5, lambda: color_jitter(x, jitter_seed, 0.4),
                lambda: x)
    return x / 255.0


def make_training_dataset(source_samples: Sequence, target_samples: Sequence | None, cfg: Config, seed: int,
                          pseudo_lookup: Callable[[str], np.ndarray] | None = None, *,
                          load_image: Callable | None = None, load_label: Callable | None = None,
                          strong: StrongAugment | None = None, soft_stride: int = 4,
                          batch_size: int | None = None, start_batch: int = 0,
                          cutmix_prob: float | None = None) -> tf.data.Dataset:
    """The zipped source/target training stream for ``model.fit`` (see the module docstring).

    ``target_samples=None`` gives the source stream alone (supervised training). ``start_batch`` resumes
    the stream at that batch. ``cutmix_prob`` defaults to ``cfg.cpsl.cutmix_prob`` (0 turns CutMix off, as
    for the adversarial warm-up).
    """
    load_image, load_label = _default_loaders(load_image, load_label)
    strong = strong or StrongAugment()
    d = cfg.data
    crop = list(d.crop_size)
    batch_size = batch_size or cfg.train.batch_size
    geometry = {"crop_size": crop, "scale_range": list(d.scale_range), "hflip": d.hflip}
    read_source = _image_reader(source_samples, load_image)
    read_source_label = _label_reader(source_samples, load_label, d.num_classes)
    read_target = _image_reader(target_samples or [], load_image)
    read_soft = _soft_reader(target_samples, pseudo_lookup, d.num_classes) if pseudo_lookup else None

    def source_element(position, index):
        element_seed = _element_seed(seed, SOURCE_STREAM, position)
        view_seed, photo_seed = tf.unstack(tf.random.experimental.stateless_split(element_seed, 2))
        view = weak_view(view_seed, read_source(index), read_source_label(index),
                         base_size=d.source_size, **geometry)
        image = source_photometric(view["image"], photo_seed) if d.source_photometric else view["image"]
        return {"source_image": image, "source_label": view["label"]}

    def target_element(position, index):
        element_seed = _element_seed(seed, TARGET_STREAM, position)
        view_seed, strong_seed = tf.unstack(tf.random.experimental.stateless_split(element_seed, 2))
        image = read_target(index)
        soft = read_soft(index) if read_soft else None
        view = weak_view(view_seed, image, None, soft, base_size=d.target_size, soft_stride=soft_stride,
                         **geometry)
        strong_image, strong_params = strong_view(view["image"], strong_seed, strong)
        full = resize_bilinear(tf.cast(image, tf.float32), d.target_size) / 255.0
        full.set_shape([d.target_size[0], d.target_size[1], 3])
        out = {"target_image": view["image"], "target_strong": strong_image, "strong_params": strong_params,
               "weak_params": view["params"], "target_full": full}
        if soft is not None:
            out["target_soft"] = view["soft"]
        return out

    mix_probability = cfg.cpsl.cutmix_prob if cutmix_prob is None else cutmix_prob

    def mix(position, pair):
        source, target = pair
        mixed, box, applied = cutmix(_element_seed(seed, PAIR_STREAM, position), target["target_image"],
                                     source["source_image"], mix_probability)
        # int32, not bool: under a tf.distribute strategy, model.fit builds the model by averaging one
        # batch over the replicas, which fails on a boolean tensor.
        return {**source, **target, "target_image": mixed, "cutmix_box": box,
                "cutmix": tf.cast(applied, tf.int32)}

    autotune = tf.data.AUTOTUNE
    start = start_batch * batch_size
    sources = _index_stream(len(source_samples), seed, SOURCE_STREAM, start).map(
        source_element, num_parallel_calls=autotune, deterministic=True)
    if target_samples is None:
        return sources.batch(batch_size, drop_remainder=True).prefetch(autotune)
    targets = _index_stream(len(target_samples), seed, TARGET_STREAM, start).map(
        target_element, num_parallel_calls=autotune, deterministic=True)
    pairs = tf.data.Dataset.zip(tf.data.Dataset.counter(start), tf.data.Dataset.zip(sources, targets))
    return (pairs.map(mix, num_parallel_calls=autotune, deterministic=True)
            .batch(batch_size, drop_remainder=True)
            .prefetch(autotune))


def make_eval_dataset(samples: Sequence, size: Sequence[int] | None, batch_size: int,
                      num_classes: int = 19, *, load_image: Callable | None = None,
                      load_label: Callable | None = None,
                      scale_first: bool = False) -> tf.data.Dataset:
    """(image (B, size, 3) float32 in [0, 1], label (B, H, W) uint8 at its own resolution) batches.

    ``size`` None keeps each image's own size (the images of a batch must then agree). The image is resized
    with the align-corners ``cpsl_tf.resize.resize_bilinear`` of the training views; ``scale_first`` scales it to [0, 1] before the
    resize (the evaluation and export preprocessing, ``cpsl_tf.export.preprocess.to_model_input``) instead
    of after it (the training stream's ``target_full``, which the pseudo-label stage reproduces). The two
    orders differ in the last bits of a resized image, so each consumer keeps its own.
    """
    load_image, load_label = _default_loaders(load_image, load_label)
    if not samples:
        raise ValueError("make_eval_dataset: the sample list is empty")
    read_image = _image_reader(samples, load_image)
    with_labels = all(s.label is not None for s in samples)
    read_label = _label_reader(samples, load_label, num_classes) if with_labels else None

    def model_input(image):
        image = tf.cast(image, tf.float32)
        if size is None:
            return image / 255.0
        if scale_first:
            image = resize_bilinear(image / 255.0, list(size))
        else:
            image = resize_bilinear(image, list(size)) / 255.0
        image.set_shape([size[0], size[1], 3])
        return image

    def element(index):
        image = model_input(read_image(index))
        return (image, read_label(index)) if read_label else image

    def label_size(image, label):
        shape = tf.shape(label, out_type=tf.int64)
        return shape[0] * (1 << 32) + shape[1]

    elements = tf.data.Dataset.range(len(samples)).map(element, num_parallel_calls=tf.data.AUTOTUNE,
                                                        deterministic=True)
    if read_label:
        batches = elements.group_by_window(label_size, lambda _, window: window.batch(batch_size),
                                           window_size=batch_size)
    else:
        batches = elements.batch(batch_size)
    return batches.prefetch(tf.data.AUTOTUNE)
