"""The options of every command: hyperparameters checked as options (exit status 2, naming the
flag), the estimator's choices offered, and the README's list of options equal to ``--help``'s."""

import argparse
import re
from pathlib import Path

import numpy as np
import pytest

import bp_gpu
from bp_gpu.cli import COMMANDS, build_parser, main

README = Path(__file__).resolve().parents[1] / "README.md"


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("option, value, message", [
    ("--learning-rate", "nan", "argument --learning-rate: expected a finite number > 0; got 'nan'"),
    ("--learning-rate", "0", "argument --learning-rate: expected a finite number > 0; got '0'"),
    ("--learning-rate", "inf", "argument --learning-rate: expected a finite number > 0; got 'inf'"),
    ("--momentum", "-1", "argument --momentum: expected a number in [0, 1); got '-1'"),
    ("--momentum", "1", "argument --momentum: expected a number in [0, 1); got '1'"),
    ("--weight-decay", "-1", "argument --weight-decay: expected a finite number >= 0; got '-1'"),
    ("--validation-fraction", "1.5", "argument --validation-fraction: expected a number in (0, 1); got '1.5'"),
    ("--warmup-epochs", "x", "argument --warmup-epochs: expected a finite number >= 0; got 'x'"),
    ("--final-learning-rate", "-0.1", "argument --final-learning-rate: expected a finite number >= 0; got '-0.1'"),
])
def test_hyperparameters_are_usage_errors_naming_the_flag(capsys, tmp_path, option, value, message):
    # DATA does not even exist: the options are checked before anything is opened.
    with pytest.raises(SystemExit) as e:
        main(["train", str(tmp_path / "nosuch.csv"), "--target", "label", option, value])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.strip().splitlines()[-1] == f"bp-gpu train: error: {message}"


def test_demo_checks_its_fractions_as_options_too(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--test-fraction", "1"])
    assert e.value.code == 2 and "argument --test-fraction: expected a number in (0, 1); got '1'" in \
        capsys.readouterr().err


def test_train_offers_the_estimators_optimizers_and_schedules():
    from bp_gpu.cli import _options, train
    from bp_gpu.hyperparams import LR_SCHEDULES, OPTIMIZERS

    assert train.OPTIMIZERS == OPTIMIZERS and train.LR_SCHEDULES == LR_SCHEDULES
    args = _subparsers()["train"].parse_args(["d.csv", "--target", "y", "--optimizer", "lamb", "--lr-schedule",
                                              "warmup_linear", "--warmup-epochs", "0.5", "--final-learning-rate",
                                              "1e-5", "--learning-rate", "0.02"])
    params = _options.estimator_params(args)
    assert (params["optimizer"], params["lr_schedule"], params["warmup_epochs"], params["final_learning_rate"],
            params["learning_rate"]) == ("lamb", "warmup_linear", 0.5, 1e-5, 0.02)
    # Every estimator parameter that train sets exists, and the defaults are the estimator's own.
    defaults = bp_gpu.MLPClassifier().get_params()
    plain = _options.estimator_params(_subparsers()["train"].parse_args(["d.csv", "--target", "y"]))
    for name in ("optimizer", "learning_rate", "lr_schedule", "warmup_epochs", "final_learning_rate", "momentum",
                 "batch_size", "epochs", "weight_decay", "dtype", "backend"):
        assert plain[name] == defaults[name], name


def test_a_scheduled_adamw_run_is_the_estimators(capsys, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3))
    y = (X[:, 0] > 0).astype(int)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    hyper = dict(optimizer="adamw", learning_rate=0.05, lr_schedule="warmup_cosine", warmup_epochs=1.0,
                 final_learning_rate=0.001, weight_decay=0.01)
    assert main(["train", str(tmp_path / "d.npz"), "--target", "y", "--hidden", "4", "--epochs", "3", "--batch-size",
                 "16", "--backend", "cpu", "--quiet", "--out", str(tmp_path / "m.npz")]
                + [f"--{k.replace('_', '-')}={v}" for k, v in hyper.items()]) == 0
    capsys.readouterr()
    saved = bp_gpu.load(tmp_path / "m.npz")
    assert {k: saved.get_params()[k] for k in hyper} == hyper
    import bp_gpu.data as bd

    direct = bp_gpu.MLPClassifier((4,), epochs=3, batch_size=16, backend="cpu", random_state=0, **hyper)
    direct.fit(bd.open(tmp_path / "d.npz", target="y"))  # the same data set, read in the same order
    for (W1, b1), (W2, b2) in zip(saved.net_.get_weights(), direct.net_.get_weights()):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)


def test_help_states_the_defaults():
    sub = _subparsers()
    for command, parser in sub.items():
        for action in parser._actions:
            takes_value = action.nargs != 0 and action.option_strings and action.dest != "help"
            if takes_value and action.default not in (None, argparse.SUPPRESS) and action.dest != "features":
                assert "default" in (action.help or ""), f"bp-gpu {command} {action.option_strings[0]}: {action.help}"
    assert "Parquet" in sub["train"].description and "Parquet, Arrow" in build_parser().format_help()


def _readme_options() -> dict[str, set[str]]:
    """The options the README's command table lists for each command."""
    text = README.read_text()
    body = text[text.index("<!-- section:cli -->"):text.index("<!-- /section:cli -->")]
    table = {}
    for line in body.splitlines():
        m = re.match(r"\| `(\w+)[^`]*` \|[^|]*\|(.*)\|\s*$", line)
        if m:
            table[m.group(1)] = set(re.findall(r"`(--[a-z][a-z-]*)", m.group(2)))
    return table


def test_the_readme_lists_every_option_of_every_command_and_no_other():
    readme = _readme_options()
    assert list(readme) == COMMANDS
    for command, parser in _subparsers().items():
        flags = {s for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"}
        assert readme[command] == flags, (command, sorted(flags - readme[command]), sorted(readme[command] - flags))
