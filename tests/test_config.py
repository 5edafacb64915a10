import json

import pytest

from cpsl_tf.config import ConfigError, load_config, shrink
from tests.conftest import REPO

CONFIGS = sorted((REPO / "configs").glob("*.json"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_shrink(path):
    cfg = load_config(path)
    assert cfg.command.startswith("python scripts/train.py") and str(path.name) in cfg.command
    assert cfg.expected, "a config states its expected result"
    small = shrink(cfg)
    assert small.cpsl.iterations <= 2 and small.model.backbone == "resnet18"


def test_gta_config_carries_the_paper_hyperparameters():
    cfg = load_config(REPO / "configs/gta.json")
    assert cfg.data.crop_size == [512, 896] and cfg.train.batch_size == 4
    assert (cfg.train.lr, cfg.train.head_lr, cfg.train.poly_power) == (1e-4, 5e-4, 0.9)
    assert (cfg.train.momentum, cfg.train.weight_decay) == (0.9, 2e-4)
    c = cfg.cpsl
    assert (c.lambda_sl, c.lambda_reg, c.tau, c.epsilon) == (0.1, 5.0, 0.08, 0.05)
    assert (c.bank_size, c.pixels_per_image, c.ema_momentum) == (65536, 512, 0.999)
    # W's rate is the head's (official code; the paper's 5e-4), in every config: a multiple of train.head_lr.
    assert c.self_labeling_lr_scale * cfg.train.head_lr == pytest.approx(5e-4)
    assert load_config(REPO / "configs/bench.json").cpsl.self_labeling_lr_scale == 1.0
    synthia = load_config(REPO / "configs/synthia.json")
    assert synthia.data.num_classes == 16 and synthia.eval.report_subsets == [13]


def test_overrides_are_typed():
    cfg = load_config(REPO / "configs/gta.json", ["train.batch_size=2", "cpsl.preset=official",
                                                   "data.crop_size=[64, 96]", "model.dropout=0"])
    assert cfg.train.batch_size == 2 and cfg.cpsl.preset == "official"
    assert cfg.data.crop_size == [64, 96] and cfg.model.dropout == 0.0


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.batch_sise=2", "unknown key 'train.batch_sise'"),
        ("train.batch_size=two", "'train.batch_size' must be an integer"),
        ("train.batch_size=2.5", "'train.batch_size' must be an integer"),
        ("cpsl.preset=mine", "'cpsl.preset' must be one of 'paper', 'official'"),
        ("cpsl.tau=0", "'cpsl.tau' must be positive"),
        ("data.num_classes=20", "'data.num_classes' must be one of"),
        ("cpsl.bank_size=1000", "multiple of cpsl.pixels_per_image"),
        ("data.crop_size=[512]", "'data.crop_size' must be [height, width]"),
        ("nonsense", "must look like section.key=value"),
        ("cpsl.self_labeling_lr_scale=-1", "'cpsl.self_labeling_lr_scale' must be non-negative"),
        ("cpsl.marginal=truth", "'cpsl.marginal' must be one of 'pseudo', 'ground_truth'"),
    ],
)
def test_bad_values_name_file_and_key(override, message):
    with pytest.raises(ConfigError, match="gta.json") as err:
        load_config(REPO / "configs/gta.json", [override])
    assert message in str(err.value)


def test_bad_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": {"lr": "fast"}}))
    with pytest.raises(ConfigError, match=r"bad.json: key 'train.lr' must be a number"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.json")
    bad.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(bad)


def test_official_preset_sets_its_choices_unless_overridden():
    cfg = load_config(REPO / "configs/gta.json", ["cpsl.preset=official"])
    assert (cfg.cpsl.pixels_per_image, cfg.cpsl.target_loss, cfg.cpsl.cutmix_prob) == (256, "ce+rce", 0.5)
    assert cfg.cpsl.prototype_mode == "official"
    cfg = load_config(REPO / "configs/gta.json", ["cpsl.preset=official", "cpsl.pixels_per_image=128"])
    assert cfg.cpsl.pixels_per_image == 128
    assert load_config(REPO / "configs/gta.json").cpsl.pixels_per_image == 512


def test_smoke_runs_never_overwrite_the_full_benchmark():
    full = load_config(REPO / "configs/bench.json")
    small = shrink(full)
    assert small.data.source_root == "data/bench-smoke/source"
    assert small.data.target_root == "data/bench-smoke/target"
    assert shrink(load_config(REPO / "configs/gta.json")).data.source_root == "data/gta5"


@pytest.mark.parametrize("switch", ["use_self_labeling=false", "use_self_training=false",
                                    "class_balanced=false", "equal_partition=true",
                                    "strong_augmentation=false"])
def test_official_preset_refuses_the_ablations_it_does_not_implement(switch):
    key = switch.split("=")[0]
    with pytest.raises(ConfigError, match=f"'cpsl.{key}' must be .* under cpsl.preset=official"):
        load_config(REPO / "configs/bench.json", ["cpsl.preset=official", f"cpsl.{switch}"])
    assert getattr(load_config(REPO / "configs/bench.json", [f"cpsl.{switch}"]).cpsl, key) is not None


def test_ground_truth_marginal_needs_a_class_balanced_partition():
    cfg = load_config(REPO / "configs/bench.json", ["cpsl.marginal=ground_truth"])
    assert cfg.cpsl.marginal == "ground_truth"
    with pytest.raises(ConfigError, match="'cpsl.marginal' must be 'pseudo' with cpsl.equal_partition"):
        load_config(REPO / "configs/bench.json", ["cpsl.marginal=ground_truth", "cpsl.equal_partition=true"])
