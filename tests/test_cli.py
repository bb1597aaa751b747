"""The `phenogen` entry point: help lists the subcommands; user mistakes give one line and exit 2."""

import subprocess
import sys

import pytest

from phenogen.cli import COMMANDS, main


def test_help_lists_every_subcommand():
    out = subprocess.run(
        [sys.executable, "-m", "phenogen.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in COMMANDS:
        assert command.name in out, command.name


def test_every_listed_command_module_exists():
    """No command in the table points at a module that is not there (they would vanish from --help)."""
    import importlib.util

    missing = [c.module for c in COMMANDS if importlib.util.find_spec(c.module) is None]
    assert missing == []


@pytest.mark.parametrize("command", [c.name for c in COMMANDS])
def test_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and "--set" in out


def test_user_error_is_one_line_without_traceback(tmp_path, capsys):
    code = main(["validate", str(tmp_path / "missing.fasta")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "missing.fasta" in err


def test_bad_override_is_a_clear_error(tmp_path, capsys):
    code = main(["simulate", "--out", str(tmp_path / "x"), "--set", "sim.no_such_key=1"])
    err = capsys.readouterr().err
    assert code == 2 and "no_such_key" in err and "Traceback" not in err
