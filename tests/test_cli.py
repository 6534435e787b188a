"""The command line: key listings in --help, `metalm config`, --version, generated evaluation flags,
typed experiment evaluation settings, messages through logging."""

from __future__ import annotations

import logging
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from metalm.cli import main
from metalm.errors import ConfigError
from metalm.evaluation.settings import (
    FewshotSettings,
    NerSettings,
    PerplexitySettings,
    experiment_settings,
)
from metalm.log import logger, setup_logging
from metalm.meta.config import MetaConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def _line(text: str, key: str) -> str:
    return next(line for line in text.splitlines() if line.split() and line.split()[0] == key)


@pytest.mark.parametrize("command", ["train", "experiment", "config"])
def test_help_lists_every_config_key_with_type_default_and_description(capsys, command):
    text = _help(capsys, command)
    assert "float = 0.001" in _line(text, "train.lr") and "learning rate" in _line(text, "train.lr")
    assert "int = 5" in _line(text, "meta.n_way")
    assert "int = 50" in _line(text, "dynamics.every") and "every N optimizer steps" in _line(text, "dynamics.every")
    for key in ("run.device", "model.preset", "data.train", "train.steps", "meta.band_min_count", "dynamics.groups"):
        _line(text, key)


def test_experiment_help_lists_the_evaluation_settings(capsys):
    text = _help(capsys, "experiment")
    assert "int = 100" in _line(text, "evaluations.fewshot.episodes")
    assert "= auto" in _line(text, "evaluations.ner.device")


def test_config_prints_the_resolved_yaml(capsys):
    assert main(["config", str(CONFIGS / "smoke.yaml"), "train.lr=1e-3"]) == 0
    out = capsys.readouterr().out
    assert "lr: 0.001" in out
    resolved = yaml.safe_load(out)
    assert resolved["train"]["lr"] == 0.001 and resolved["run"]["name"] == "smoke"
    assert resolved["meta"]["band_min_count"] == MetaConfig().band_min_count  # defaults filled in


def test_config_of_an_experiment_prints_each_arm(capsys):
    assert main(["config", str(CONFIGS / "quickstart.yaml")]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert set(resolved) == {"vanilla", "meta", "meta-momentum", "meta-skip"}
    assert resolved["meta"]["meta"]["enabled"] is True and resolved["meta"]["meta"]["control"] == "none"
    assert resolved["meta-momentum"]["meta"]["control"] == "momentum"
    assert resolved["meta-skip"]["meta"]["control"] == "skip"


def test_config_errors_exit_2(tmp_path, capsys):
    assert main(["config", str(CONFIGS / "smoke.yaml"), "train.lrr=1"]) == 2
    assert "unknown config key 'train.lrr' (did you mean 'train.lr'?)" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"metalm {version('metalm')}"


@pytest.mark.parametrize("argv", [("eval", "ner"), ("eval", "fewshot"), ("eval", "perplexity"), ("dynamics",)])
def test_device_defaults_to_auto_everywhere(capsys, argv):
    text = " ".join(_help(capsys, *argv).split())
    assert "--device DEVICE" in text and "(default: auto)" in text.split("--device DEVICE", 2)[2]


def test_eval_flags_are_generated_from_the_settings(capsys):
    text = " ".join(_help(capsys, "eval", "fewshot").split())
    for name in FewshotSettings.model_fields:
        assert "--" + name.replace("_", "-") in text
    assert f"--band-min-count BAND_MIN_COUNT {FewshotSettings.model_fields['band_min_count'].description}" in text
    assert "(default: 20)" in text  # MetaConfig's band_min_count
    text = " ".join(_help(capsys, "eval", "ner").split())
    assert "--test-lang" in text and "--mode {finetune,probe}" in text and "--select-best-on-dev" in text


def test_fewshot_defaults_are_meta_configs():
    meta = MetaConfig()
    fewshot = FewshotSettings()
    for name in ("variant", "n_way", "k_shot", "q_query", "inner_steps", "inner_lr", "head_init", "pool", "window_len",
                 "band_min_count", "band_skip_top"):
        meta_name = "smlmt_variant" if name == "variant" else name
        assert getattr(fewshot, name) == getattr(meta, meta_name), name
        # so are the types (declared again by the settings) and the bounds
        ours, theirs = FewshotSettings.model_fields[name], MetaConfig.model_fields[meta_name]
        assert (ours.annotation, ours.metadata) == (theirs.annotation, theirs.metadata), name
    # the bounds are MetaConfig's too
    with pytest.raises(ConfigError, match="fewshot.n_way"):
        FewshotSettings.resolve(n_way=1)


def test_experiment_evaluation_forms():
    settings = experiment_settings({"perplexity": True, "fewshot": {"episodes": 3}, "ner": False})
    assert settings["perplexity"] == PerplexitySettings() and settings["fewshot"].episodes == 3
    assert "ner" not in settings
    assert experiment_settings({"perplexity": ["a.txt"]})["perplexity"].data == ["a.txt"]
    ner = experiment_settings({"ner": {"data": "demo", "train_lang": "en", "test_langs": ["en", "xx"], "lr": 0.001}})
    assert ner["ner"] == NerSettings(test_langs=["en", "xx"], lr=0.001)
    with pytest.raises(ConfigError, match="evaluations: unknown 'nerr'"):
        experiment_settings({"nerr": True})
    with pytest.raises(ConfigError, match=r"evaluations.ner.epochs: Input should be a valid integer"):
        experiment_settings({"ner": {"epochs": "ten"}})


def test_misspelt_evaluation_setting_fails_before_anything_runs(tmp_path, capsys):
    spec = yaml.safe_load((CONFIGS / "quickstart.yaml").read_text())
    spec["run"]["dir"] = str(tmp_path / "exp")
    spec["evaluations"]["fewshot"] = {"episodez": 30}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["experiment", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [("metalm: error: unknown config key 'evaluations.fewshot.episodez' "
                    "(did you mean 'evaluations.fewshot.episodes'?)")]
    assert not (tmp_path / "exp").exists()


def test_messages_go_to_stderr_and_quiet_silences_them(capsys):
    try:
        setup_logging(0)
        logger.info("a note")
        logger.warning("a warning")
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err == "metalm: a note\nmetalm: warning: a warning\n"
        setup_logging(-1)
        logger.info("a note")
        logger.warning("a warning")
        assert capsys.readouterr().err == "metalm: warning: a warning\n"
        setup_logging(1)
        assert logger.isEnabledFor(logging.DEBUG)
    finally:
        setup_logging(0)


@pytest.mark.parametrize("argv, level", [([], 0), (["-q"], -1), (["--verbose"], 1)])
def test_verbosity_flags_before_or_after_the_command(argv, level):
    from metalm.cli import build_parser

    for args in ([*argv, "report", "x"], ["report", "x", *argv]):
        assert getattr(build_parser().parse_args(args), "verbosity", 0) == level
