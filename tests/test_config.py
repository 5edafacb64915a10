import dataclasses
import json
import typing

import pytest

from cpsl_tf.config import BOUNDS, Config, ConfigError, CPSLConfig, load_config, shrink
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
        ("cpsl.tau=0", "'cpsl.tau' must be positive and finite"),
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


@pytest.mark.parametrize("override, message", [
    ("train.lr=-1e-4", "'train.lr' must be positive and finite, got -0.0001"),
    ("train.lr=NaN", "'train.lr' must be positive and finite, got nan"),
    ("train.lr=Infinity", "'train.lr' must be positive and finite, got inf"),
    ("warmup.lr=-Infinity", "'warmup.lr' must be positive and finite, got -inf"),
    ("train.lr=nan", "'train.lr' must be a number, got 'nan'"),
    ("cpsl.lambda_sl=-0.1", "'cpsl.lambda_sl' must be non-negative and finite, got -0.1"),
    ("cpsl.lambda_reg=-5", "'cpsl.lambda_reg' must be non-negative and finite, got -5.0"),
    ("distill.kd_weight=-1", "'distill.kd_weight' must be non-negative and finite, got -1.0"),
    ("cpsl.ema_momentum=1.5", "'cpsl.ema_momentum' must be a number in [0, 1], got 1.5"),
    ("model.bn_momentum=-0.1", "'model.bn_momentum' must be a number in [0, 1], got -0.1"),
    ("cpsl.cutmix_prob=2", "'cpsl.cutmix_prob' must be a number in [0, 1], got 2.0"),
    ("distill.rounds=3", "'distill.rounds' must be an integer in [0, 2], got 3"),
    ("data.benchmark.num_source=0", "'data.benchmark.num_source' must be an integer of at least 1, got 0"),
    ("model.aspp_rates=[6, 0]", "'model.aspp_rates[1]' must be an integer of at least 1, got 0"),
])
def test_impossible_values_are_refused_naming_key_value_and_bound(override, message):
    with pytest.raises(ConfigError, match="bench.json") as err:
        load_config(REPO / "configs/bench.json", [override])
    assert f"key {message}" in str(err.value)


def test_a_crop_larger_than_the_images_is_refused_for_training():
    bench = REPO / "configs/bench.json"
    with pytest.raises(ConfigError, match=r"bench.json \(with --set overrides\): key 'data.crop_size' must "
                       r"be no larger than data.source_size \[96, 192\] and data.target_size \[96, 192\] in "
                       r"each dimension \(training cuts it from those images\), got \[200, 400\]"):
        load_config(bench, ["data.crop_size=[200, 400]"], training=True)
    with pytest.raises(ConfigError, match=r"'data.crop_size' must be no larger .*target_size \[48, 96\]"):
        load_config(bench, ["data.target_size=[48, 96]"], training=True)
    # Evaluation reads the images at data.target_size and never crops.
    assert load_config(bench, ["data.target_size=[48, 96]"]).data.target_size == [48, 96]


def test_nan_and_infinity_literals_in_a_file_are_refused(tmp_path):
    raw = json.loads((REPO / "configs/bench.json").read_text())
    raw["train"]["lr"] = float("nan")
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(raw))  # json writes the literal NaN, which json.loads accepts
    assert "NaN" in path.read_text()
    with pytest.raises(ConfigError, match=r"nan.json: key 'train.lr' must be positive and finite, got nan"):
        load_config(path)
    raw["train"]["lr"], raw["warmup"]["discriminator_lr"] = 1e-3, float("inf")
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=r"'warmup.discriminator_lr' must be positive and finite, got inf"):
        load_config(path)


def _numeric_keys(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            yield from _numeric_keys(tp, key + ".")
        elif tp in (int, float) or typing.get_args(tp) in ((int,), (float,)):
            yield key


def test_every_numeric_key_has_a_bound():
    assert sorted(set(_numeric_keys(Config)) - set(BOUNDS)) == []
    assert sorted(set(BOUNDS) - set(_numeric_keys(Config))) == []


def test_a_config_file_must_name_its_data(tmp_path):
    raw = json.loads((REPO / "configs/bench.json").read_text())
    del raw["data"]
    path = tmp_path / "nodata.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=r"nodata.json: no 'data' section; a config file must set data"):
        load_config(path)
    raw["data"] = {"source": "bench", "target": "bench"}
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=r"no key 'data.source_size', 'data.target_size', 'data.crop_size'"):
        load_config(path)
    # Every other section may be left out: it takes the paper's settings.
    path.write_text(json.dumps({"data": json.loads((REPO / "configs/bench.json").read_text())["data"]}))
    assert load_config(path).cpsl.lambda_sl == CPSLConfig().lambda_sl


@pytest.mark.parametrize("content", ["[1, 2]", '"bench"', "3", "null"])
def test_a_config_that_is_not_an_object_gives_one_error_line(tmp_path, capsys, content):
    from cpsl_tf.training.cli import main

    path = tmp_path / "list.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=r"list.json: the top level must be a JSON object"):
        load_config(path)
    assert main(["--config", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "the top level must be a JSON object" in err and "Traceback" not in err


def test_quick_keeps_explicit_set_values(tmp_path, monkeypatch):
    """scripts/train.py --quick --set ...: the stages get the --set values, the rest shrunk."""
    from cpsl_tf.training import cli

    given = []
    monkeypatch.setattr(cli, "run_stages", lambda cfg, run_dir, **kwargs: given.append(cfg) or {})
    sets = ["warmup.iterations=7", "train.batch_size=3", "train.checkpoint_every=5",
            "cpsl.pixels_per_image=32", "data.source_root=elsewhere/b/source",
            "data.target_root=elsewhere/b/target"]
    assert cli.main(["--config", str(REPO / "configs/bench.json"), "--quick", "--run-dir", str(tmp_path),
                     *(arg for s in sets for arg in ("--set", s))]) == 0
    (cfg,) = given
    assert (cfg.warmup.iterations, cfg.train.batch_size, cfg.train.checkpoint_every) == (7, 3, 5)
    assert cfg.cpsl.pixels_per_image == 32
    # What was not set explicitly is shrunk; a generated benchmark still goes to a -smoke folder.
    assert cfg.cpsl.iterations == 2 and cfg.model.backbone == "resnet18" and cfg.train.eval_every == 2
    assert cfg.data.source_root == "elsewhere/b-smoke/source"
    assert cfg.data.target_root == "elsewhere/b-smoke/target"


def test_quick_help_says_that_set_wins():
    from cpsl_tf.training.cli import build_parser

    assert "--set still wins" in " ".join(build_parser().format_help().split())
