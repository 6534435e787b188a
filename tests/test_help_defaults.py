"""Every command-line flag has a help text, and a default the help text states is the code's default
(help that misleads is a bug)."""

from __future__ import annotations

import argparse
import re

import pytest

from metalm.cli import build_parser
from metalm.config_base import show_value


def _actions(parser: argparse.ArgumentParser, prefix: str = "metalm"):
    parser.format_help()  # the lazily added flags (config keys, evaluation settings)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{prefix} {name}")
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield prefix, action


ACTIONS = list(_actions(build_parser()))


def test_every_flag_and_argument_has_help():
    missing = [f"{cmd} {a.option_strings or a.dest}" for cmd, a in ACTIONS if not a.help]
    assert not missing


def test_documented_defaults_are_the_codes():
    wrong = []
    for cmd, action in ACTIONS:
        stated = re.search(r"\(default: ([^),]+)\)", action.help or "")
        default = action.default
        if stated is None or default in (None, argparse.SUPPRESS) or isinstance(default, bool) or " " in stated.group(1):
            continue  # no default, or one described in words ("a free one")
        text = stated.group(1)
        if isinstance(default, (int, float)) and re.fullmatch(r"[-+0-9.e_,]+", text):
            if float(text.replace(",", "").replace("_", "")) != default:
                wrong.append(f"{cmd} {action.option_strings}: help says {text}, code {default!r}")
        elif text != show_value(default):
            wrong.append(f"{cmd} {action.option_strings}: help says {stated.group(1)}, code {default!r}")
    assert not wrong
    checked = sum(1 for _, a in ACTIONS if a.default not in (None, argparse.SUPPRESS) and "(default: " in (a.help or ""))
    assert checked >= 20  # the comparison ran over the evaluation settings and the command flags


@pytest.mark.parametrize("mode", ["finetune", "probe"])
def test_computed_defaults_are_described_as_computed(mode):
    from metalm.evaluation.ner import DEFAULT_LR
    from metalm.evaluation.settings import NerSettings

    stated = re.search(rf"([0-9.e-]+) {mode}", NerSettings.model_fields["lr"].description)
    assert stated and float(stated.group(1)) == DEFAULT_LR[mode]
    report = next(a for cmd, a in ACTIONS if cmd == "metalm report" and a.dest == "target_loss")
    assert "highest final validation loss over the baseline arm's seeds" in report.help
    from metalm.config import DataConfig

    assert "exactly" in DataConfig.model_fields["max_tokens"].description
