"""The command line: its help, the table of commands, how it dispatches, `--show-config`, and how
user errors and interrupts end a command (one line on stderr, an exit code, no traceback)."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from sentiment import cli
from sentiment.cli import COMMANDS, COMMANDS_HELP, OWN_SETTINGS, main
from sentiment.config import load_config
from sentiment.errors import TrackingError, UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
RESUME = "interrupted: finished trials are kept; re-run the same command to resume"


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def wide_help(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # argparse wraps help at the terminal width


@pytest.fixture
def calls(monkeypatch):
    """Every configured command replaced by a recorder, and TensorFlow's import by a no-op that
    records that it was asked for: nothing trains, nothing loads TensorFlow."""
    record = {"tensorflow": 0, "commands": []}

    def tensorflow():
        record["tensorflow"] += 1

    def command(name):
        def run(args, cfg):
            record["commands"].append((name, args, cfg))
            return 0
        return run

    monkeypatch.setattr(cli, "import_tensorflow_quietly", tensorflow)
    for name in COMMANDS:
        monkeypatch.setitem(COMMANDS, name, command(name))
    return record


# --- help and the table of commands ----------------------------------------------------------


def test_help_lists_every_command(capsys, wide_help):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = words(capsys.readouterr().out)
    assert out.startswith("usage: sentiment")
    for name, text in COMMANDS_HELP.items():
        assert f"{name} {words(text)}" in out


def test_every_command_has_help_and_every_help_a_command():
    assert set(COMMANDS) == set(COMMANDS_HELP) - set(OWN_SETTINGS)
    assert set(OWN_SETTINGS) <= set(COMMANDS_HELP) and not set(OWN_SETTINGS) & set(COMMANDS)
    assert all(callable(command) for command in COMMANDS.values())


@pytest.mark.parametrize("name", list(COMMANDS_HELP))
def test_each_command_has_its_own_help(name, capsys, wide_help):
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0
    out = words(capsys.readouterr().out)
    assert out.startswith(f"usage: sentiment {name}") and words(COMMANDS_HELP[name]) in out
    configured = name not in OWN_SETTINGS
    assert ("--show-config" in out) == configured and ("--experiment" in out) == configured
    assert ("overrides" in out) == configured


def test_no_command_or_an_unknown_one_is_a_usage_error(capsys):
    for argv in ([], ["nosuchcommand"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 2
        assert capsys.readouterr().err.startswith("usage: sentiment")


# --- dispatch ---------------------------------------------------------------------------------


def test_a_command_gets_its_options_and_the_composed_config(calls):
    assert main(["sweep", "--workers", "3", "-e", "quick", "sweep.n_trials=3"]) == 0
    [(name, args, cfg)] = calls["commands"]
    assert name == "sweep" and args.workers == 3 and args.experiment == "quick"
    assert cfg == load_config(["sweep.n_trials=3"], experiment="quick") and cfg.sweep.n_trials == 3
    assert calls["tensorflow"] == 1  # loaded once the config is known to be good


def test_the_command_exit_code_is_the_process_exit_code(calls, monkeypatch):
    monkeypatch.setitem(COMMANDS, "rollback", lambda args, cfg: 5)
    assert main(["rollback"]) == 5


def test_bench_and_server_compose_no_config(monkeypatch, calls):
    seen = []
    monkeypatch.setattr(cli, "cmd_bench", lambda args: seen.append(("bench", args)) or 0)
    monkeypatch.setattr(cli, "cmd_server", lambda args: seen.append(("server", args)) or 0)
    monkeypatch.setattr(cli, "_config", lambda args: pytest.fail("bench and server compose no config"))
    assert main(["bench", "--no-race", "--contestants", "default"]) == 0
    assert main(["server", "--backend-store-uri", "sqlite:///x.db", "--artifacts-destination", "art"]) == 0
    (_, bench), (_, server) = seen
    assert [name for name, _ in seen] == ["bench", "server"]
    assert bench.no_race and bench.contestants == ["default"] and bench.preset == "small"
    assert (server.backend_store_uri, server.port, server.host) == ("sqlite:///x.db", 5005, "127.0.0.1")
    assert calls["tensorflow"] == 1  # bench trains; the server only serves
    assert not calls["commands"]


def test_bench_and_server_take_no_overrides(capsys):
    for argv in (["bench", "sweep.n_trials=3"], ["server", "--backend-store-uri", "x", "--artifacts-destination", "y",
                                                  "sweep.n_trials=3"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 2 and "unrecognized arguments: sweep.n_trials=3" in capsys.readouterr().err


# --- --show-config ----------------------------------------------------------------------------


def test_show_config_prints_the_composed_yaml_and_runs_nothing(calls, capsys):
    assert main(["train", "--show-config", "-e", "quick", "model.units=7"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = load_config(["model.units=7"], experiment="quick")
    assert printed["model"]["units"] == 7 and printed["sweep"]["study_name"] == expected.sweep.study_name
    assert set(printed) == set(expected)
    assert not calls["commands"] and calls["tensorflow"] == 0


def test_show_config_in_a_fresh_process_never_imports_tensorflow(tmp_path):
    script = textwrap.dedent("""
        import sys
        from sentiment.cli import main
        code = main(["train", "--show-config", "model.units=7"])
        print("tensorflow imported:", "tensorflow" in sys.modules)
        sys.exit(code)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(REPO_ROOT),
                               "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "model:" in done.stdout and "units: 7" in done.stdout
    assert done.stdout.rstrip().endswith("tensorflow imported: False")


# --- errors and interrupts --------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["sweep", "bogus.key=1"], "bogus.key"),
    (["train", "--experiment", "nope"], "unknown experiment 'nope'"),
])
def test_a_config_error_is_one_line_and_exit_code_2(argv, message, calls, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in captured.err
    assert not calls["commands"] and calls["tensorflow"] == 0  # refused before anything loads


def test_a_user_error_inside_a_command_is_one_line_and_exit_code_2(calls, monkeypatch, capsys):
    def fail(args, cfg):
        raise TrackingError("cannot use MLflow tracking store sqlite:///x.db; start the server")

    monkeypatch.setitem(COMMANDS, "promote", fail)
    assert main(["promote"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: cannot use MLflow tracking store sqlite:///x.db; start the server\n"
    assert captured.out == ""


def test_any_user_error_subclass_counts(calls, monkeypatch, capsys):
    class Custom(UserError):
        pass

    monkeypatch.setattr(cli, "cmd_server", lambda args: (_ for _ in ()).throw(Custom("port 5005 is taken")))
    assert main(["server", "--backend-store-uri", "x", "--artifacts-destination", "y"]) == 2
    assert capsys.readouterr().err == "error: port 5005 is taken\n"


def test_an_interrupt_exits_130_and_says_how_to_resume(calls, monkeypatch, capsys):
    def interrupted(args, cfg):
        raise KeyboardInterrupt

    monkeypatch.setitem(COMMANDS, "sweep", interrupted)
    assert main(["sweep"]) == 130
    captured = capsys.readouterr()
    assert captured.err.strip() == RESUME and "Traceback" not in captured.err


def test_other_errors_are_not_swallowed(calls, monkeypatch):
    def broken(args, cfg):
        raise RuntimeError("a bug, with its traceback")

    monkeypatch.setitem(COMMANDS, "levers", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["levers"])
