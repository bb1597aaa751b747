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


@pytest.mark.parametrize(
    "argv",
    [["nope"], ["simulate"], ["simulate", "--out", "x", "--seed", "one"], ["generate", "--bogus"]],
)
def test_usage_errors_are_one_line_and_exit_2(argv, capsys):
    """argparse's mistakes too: one `phenogen [CMD]: error:` line, no usage dump, no SystemExit."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("phenogen") and ": error: " in err


def test_an_os_error_without_a_user_path_stays_a_traceback(monkeypatch):
    """The OSError net is for the user's paths (exc.filename); anything else is a bug and propagates."""
    import phenogen.sim.command as sim_command

    def broken(args):
        raise OSError("no file involved")

    monkeypatch.setattr(sim_command, "run", broken)
    with pytest.raises(OSError, match="no file involved"):
        main(["simulate", "--out", "x"])
