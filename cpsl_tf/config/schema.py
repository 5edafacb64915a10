"""The schema of an experiment config: one dataclass per section, each key with its type, its default (the
paper's setting) and a comment where its meaning is not obvious. The dataclasses are the reference of every
key; :mod:`.validation` holds the values each may take."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cpsl_tf.command import UserError


class ConfigError(UserError, ValueError):
    """A configuration value is unknown, mistyped or impossible."""


@dataclass
class BenchmarkConfig:
    """Generated two-domain benchmark (see ``cpsl_tf.benchmark``)."""

    variant: Literal["A", "B"] = "A"
    seed: int = 0
    # Strength of the target shift in [0, 1] (see cpsl_tf/benchmark/style.py).
    shift: float = 0.5
    height: int = 96
    width: int = 192
    num_source: int = 1000
    num_target_train: int = 1000
    num_target_val: int = 200


@dataclass
class DataConfig:
    """Datasets, sizes and augmentation of the training views."""

    # "cityscapes" as source trains on labelled target-layout data: the oracle of the benchmark.
    source: Literal["gta5", "synthia", "bench", "cityscapes"] = "bench"
    target: Literal["cityscapes", "bench", "folder"] = "bench"
    source_root: str = "data/bench/source"
    target_root: str = "data/bench/target"
    num_classes: int = 19
    # Sizes are (height, width). Source images are resized to source_size before augmentation
    # (GTA5 is stretched to 1024x2048 in the official code), target images to target_size.
    source_size: list[int] = field(default_factory=lambda: [1024, 2048])
    target_size: list[int] = field(default_factory=lambda: [1024, 2048])
    crop_size: list[int] = field(default_factory=lambda: [512, 896])
    scale_range: list[float] = field(default_factory=lambda: [0.5, 1.5])
    hflip: bool = True
    # Photometric augmentation of the source images (the strong baseline of the benchmark study).
    source_photometric: bool = False
    # Bad samples (unreadable, size mismatch): "error" stops, "skip" logs and leaves them out.
    bad_samples: Literal["error", "skip"] = "skip"
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)


@dataclass
class ModelConfig:
    """DeepLab-v2 with a dilated ResNet and the ProDA head."""

    backbone: Literal["resnet18", "resnet34", "resnet50", "resnet101"] = "resnet101"
    # Channels of the stem; 64 is the standard ResNet, smaller values give narrow variants.
    base_width: int = 64
    head_channels: int = 256
    se_reduction: int = 16
    dropout: float = 0.1
    aspp_rates: list[int] = field(default_factory=lambda: [6, 12, 18, 24])
    # Inputs are RGB in [0, 1]; the model subtracts mean and divides by std (official: none).
    input_mean: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    input_std: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    align_corners: bool = True
    imagenet_weights: bool = True
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5


@dataclass
class TrainConfig:
    """Optimisation shared by the stages."""

    batch_size: int = 4
    lr: float = 1e-4
    head_lr: float = 5e-4
    momentum: float = 0.9
    weight_decay: float = 2e-4
    poly_power: float = 0.9
    seed: int = 6523
    strategy: Literal["auto", "one_device", "mirrored", "multi_worker"] = "auto"
    sync_batch_norm: bool = False
    mixed_precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"
    gradient_accumulation_steps: int = 1
    checkpoint_every: int = 1000
    eval_every: int = 1000
    log_every: int = 50
    run_dir: str = "runs"


@dataclass
class WarmupConfig:
    """Stage ``warmup``: source-only or output-space adversarial training."""

    mode: Literal["source_only", "adversarial"] = "adversarial"
    iterations: int = 20000
    lr: float = 2.5e-4
    adversarial_weight: float = 0.01
    discriminator_lr: float = 1e-4


@dataclass
class CPSLConfig:
    """Stage ``cpsl``: the adaptation of paper sections 3.1-3.4."""

    preset: Literal["paper", "official"] = "paper"
    iterations: int = 90000
    lambda_sl: float = 0.1
    lambda_reg: float = 5.0
    tau: float = 0.08
    epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    sinkhorn_log_domain: bool = False
    bank_size: int = 65536
    pixels_per_image: int = 512
    ema_momentum: float = 0.999
    # Eq. 11 momentum of the distribution alignment.
    alignment_momentum: float = 0.999
    # r of Eq. 12: "pseudo" = delta_pseudo (Eq. 10, then Eq. 11); "ground_truth" = the class distribution of
    # the target-train labels, fixed (a diagnostic that needs labelled target data: it tells a biased
    # alignment target from an alignment that does nothing).
    marginal: Literal["pseudo", "ground_truth"] = "pseudo"
    # Learning rate of the self-labeling head's W as a multiple of train.head_lr, poly-decayed like the
    # network's. The official code puts W in the segmentation head's group; the paper's 5e-4 for W equals
    # that head rate (paper section 4.1, docs/official-code.md section 3). So W takes lambda_sl x its rate =
    # a tenth of the head's step in every config, whatever its rates.
    self_labeling_lr_scale: float = 1.0
    rectify_threshold: float = 0.0
    # Ablations of paper Table 3 and the equal-partition variant.
    use_self_labeling: bool = True
    use_self_training: bool = True
    class_balanced: bool = True
    equal_partition: bool = False
    prototype_init: bool = True
    strong_augmentation: bool = True
    use_momentum: bool = True
    target_loss: Literal["ce", "ce+rce"] = "ce"
    cutmix_prob: float = 0.0
    prototype_mode: Literal["paper", "official"] = "paper"


@dataclass
class DistillConfig:
    """Stages ``distill1`` and ``distill2``: self-distillation (paper 4.2)."""

    rounds: int = 2
    iterations: int = 40000
    lr: float = 6e-4
    head_lr: float = 6e-3
    threshold: float = 0.95
    kd_weight: float = 1.0
    flip: bool = True
    # "imagenet" (the model's own initialisation), "teacher" (the previous stage's weights, when the student
    # has the teacher's architecture; otherwise the student's own initialisation) or a checkpoint.
    student_init: str = "imagenet"
    # The student's architecture: "teacher" (the model section's network: the paper's rounds) or the
    # real-time "lraspp_mobilenet_v3_large" (cpsl_tf/models/lraspp.py) at student_width (Keras' alpha;
    # ImageNet weights exist for 0.75 and 1.0) with an LR-ASPP head of student_head_channels.
    student: Literal["teacher", "lraspp_mobilenet_v3_large"] = "teacher"
    student_width: float = 1.0
    student_head_channels: int = 128


@dataclass
class EvalConfig:
    """Evaluation on the target validation split."""

    split: str = "val"
    batch_size: int = 2
    # Extra class subsets reported beside the full protocol (SYNTHIA: [13]).
    report_subsets: list[int] = field(default_factory=list)


@dataclass
class ExportConfig:
    """ONNX / TensorRT export."""

    opset: int = 17
    height: int = 1024
    width: int = 2048
    layout: Literal["nhwc", "nchw"] = "nhwc"
    output: Literal["logits", "argmax"] = "argmax"
    argmax_dtype: Literal["uint8", "int32"] = "uint8"
    # float32 parity: |logit diff| <= max_abs_logit_diff + max_relative_logit_diff * max |Keras logit|
    # (export.parity explains the relative term).
    max_abs_logit_diff: float = 1e-4
    max_relative_logit_diff: float = 1e-4
    min_argmax_agreement: float = 0.9999
    # OpenCV's DNN module against ONNX Runtime on the same float32 graph (checked where OpenCV has it).
    min_second_runtime_agreement: float = 0.999
    calibration_images: int = 200


@dataclass
class Config:
    """A whole experiment."""

    name: str = "experiment"
    description: str = ""
    expected: dict = field(default_factory=dict)
    command: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    cpsl: CPSLConfig = field(default_factory=CPSLConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
