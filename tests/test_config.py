"""Config loading: YAML + overrides, and every rejection names the key."""

from __future__ import annotations

import pytest

from metalm.config import default_config, load_config, parse_overrides, save_config
from metalm.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_and_overrides(tmp_path):
    cfg = load_config(write(tmp_path, "train:\n  steps: 10\n"), ["train.lr=0.01", "model.preset=nano", "run.name=x"])
    assert cfg.train.steps == 10 and cfg.train.lr == 0.01 and cfg.model.preset == "nano" and cfg.run.name == "x"
    assert load_config(None).to_dict() == default_config().to_dict()


def test_override_values_are_yaml_typed():
    assert parse_overrides(["a.b=3", "a.c=0.5", "a.d=true", "a.e=hello", "a.f=[1, 2]", "a.g=null"]) == [
        ("a.b", 3), ("a.c", 0.5), ("a.d", True), ("a.e", "hello"), ("a.f", [1, 2]), ("a.g", None)]


@pytest.mark.parametrize("override, expected", [
    ("train.lrr=0.1", "unknown config key 'train.lrr' (did you mean 'train.lr'?)"),
    ("trian.steps=3", "unknown config key 'trian'"),
    ("train.steps=abc", "train.steps: Input should be a valid integer"),
    ("train.steps=0", "train.steps: Input should be greater than or equal to 1"),
    ("train.lr=-1", "train.lr: Input should be greater than 0"),
    ("train.schedule=exp", "train.schedule: Input should be 'cosine', 'linear' or 'constant'"),
    ("train.steps=2.5", "train.steps: Input should be a valid integer"),
    ("run.progress=3", "run.progress: Input should be a valid boolean"),
    ("model.preset=huge", "model: Value error, preset: unknown preset 'huge'"),
    ("train.grad_accum=3", "batch_size 16 is not divisible by grad_accum 3"),
    ("train.seq_len=100000", "train.seq_len 100000 exceeds the model's context"),
    ("data.val_fraction=1.5", "data.val_fraction: Input should be less than 1"),
])
def test_rejections_name_the_key(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert expected.replace("Value error, ", "") in str(err.value)


def test_malformed_inputs(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "train: [unclosed\n"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(None, ["train.steps"])


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["train.steps=7", "data.train=[a.txt, b.txt]"])
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml").to_dict() == cfg.to_dict()
