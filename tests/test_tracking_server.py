"""A shared tracking server with logins: a real `sentiment server --auth` process on PostgreSQL,
users added through the CLI, and what each of them can and cannot do."""

import contextlib
import io
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mlflow
import psycopg
import pytest
from mlflow import MlflowClient

from sentiment import cli, tracking
from sentiment.bench.local_servers import ServerNotReady, free_port, stop_process_group, wait_until_answers
from sentiment.config import load_config
from sentiment.errors import ConfigError, TrackingError
from sentiment.registry import versions
from sentiment.sweep import run_sweep
from sentiment.tracking_server import run_server, server_launch
from tests.conftest import tiny_overrides

POSTGRES = "postgresql://postgres@127.0.0.1:5432"
CREDENTIAL_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


# --- unit: how the server is launched --------------------------------------------------------


def test_a_server_beyond_loopback_refuses_to_start_without_an_admin_password(monkeypatch):
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="MLFLOW_AUTH_ADMIN_PASSWORD"):
        server_launch("0.0.0.0", 5005, "sqlite:///store.db", "art", auth=False, workers=1)


def test_beyond_loopback_auth_and_the_host_checks_are_on(monkeypatch, tmp_path):
    password_file = tmp_path / "admin-password"
    password_file.write_text("file-held-secret\n")
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD_FILE", str(password_file))
    launch = server_launch("10.1.2.3", 5005, f"sqlite:///{tmp_path / 'store.db'}", "art", auth=False, workers=1)
    argv = " ".join(launch.argv)
    assert "--app-name basic-auth" in argv
    assert "--allowed-hosts 10.1.2.3,10.1.2.3:5005" in argv and "--cors-allowed-origins http://10.1.2.3:5005" in argv
    # A password from a file reaches the server through its private settings, not its environment.
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" not in launch.env
    config_path = Path(launch.env["MLFLOW_AUTH_CONFIG_PATH"])
    config = config_path.read_text()
    assert "admin_password = file-held-secret" in config and f"{tmp_path / 'store_users.db'}" in config
    assert oct(config_path.stat().st_mode & 0o777) == "0o600" and config_path.parent == launch.private_dir
    assert oct(launch.private_dir.stat().st_mode & 0o777) == "0o700"
    launch.argv = [sys.executable, "-c", "import os, sys; sys.exit(7 if 'file-held-secret' in str(os.environ) else 3)"]
    assert run_server(launch) == 3  # what the server ran with held no password
    assert not launch.private_dir.exists()  # removed once the server exited


def test_a_password_from_the_environment_stays_there_and_the_settings_hold_none(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "env-held-secret")
    launch = server_launch("10.1.2.3", 5005, f"sqlite:///{tmp_path / 'store.db'}", "art", auth=False, workers=1)
    assert launch.env["MLFLOW_AUTH_ADMIN_PASSWORD"] == "env-held-secret"
    assert "env-held-secret" not in Path(launch.env["MLFLOW_AUTH_CONFIG_PATH"]).read_text()
    launch.argv = [sys.executable, "-c", "import os, signal, time; os.kill(os.getppid(), signal.SIGTERM); time.sleep(60)"]
    assert run_server(launch) == -signal.SIGTERM  # the SIGTERM the launcher got was passed on
    assert not launch.private_dir.exists()


@pytest.mark.parametrize("uri, allowed, refused", [
    ("http://mlflow.example:5005", False, True),
    ("http://mlflow.example:5005", True, False),   # tracking.allow_plain_http=true: the user's choice
    ("https://mlflow.example:5005", False, False),
    ("http://127.0.0.1:5005", False, False),       # loopback never leaves the machine
])
def test_a_password_is_not_sent_over_plain_http_to_another_machine(monkeypatch, uri, allowed, refused):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter22")
    monkeypatch.setattr(mlflow, "set_tracking_uri", lambda uri: pytest.fail("connected before the check"))
    cfg = load_config([f"tracking.uri={uri}", f"tracking.allow_plain_http={str(allowed).lower()}"]).tracking
    if refused:
        with pytest.raises(ConfigError, match="password of user 'alice' unencrypted to mlflow.example.*https://"):
            tracking.connect(cfg)
    else:
        with pytest.raises(pytest.fail.Exception, match="connected before the check"):
            tracking.connect(cfg)


def test_on_loopback_the_zero_setup_server_stays():
    launch = server_launch("127.0.0.1", 5005, "sqlite:///store.db", "art", auth=False, workers=1)
    assert "--app-name" not in launch.argv and "--allowed-hosts" not in launch.argv


@pytest.mark.parametrize("key, url, hint", [
    ("sweep.storage", "postgresql://worker:hunter22@db.example/optuna", "PGPASSWORD"),
    ("tracking.uri", "http://alice:hunter22@mlflow.example:5005", "MLFLOW_TRACKING_PASSWORD"),
])
def test_a_password_in_a_url_is_refused_before_it_can_be_logged(key, url, hint):
    with pytest.raises(ConfigError, match=f"{key} holds a password.*{hint}"):
        load_config([f"{key}={url}"])


# --- a real server with logins ---------------------------------------------------------------


class AuthServer:
    def __init__(self, tmp: Path):
        name = f"sentiment_test_{uuid.uuid4().hex[:10]}"
        self.databases = [name, f"{name}_users"]
        self.backend, self.artifacts, self.log = f"{POSTGRES}/{name}", tmp / "artifacts", tmp / "server.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.passwords = {"admin": secrets.token_urlsafe(12), "trainer1": secrets.token_urlsafe(12),
                          "reader1": secrets.token_urlsafe(12)}

    def start(self):
        env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS}
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = self.passwords["admin"]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sentiment", "server", "--auth", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", self.backend, "--artifacts-destination", str(self.artifacts)],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            wait_until_answers(f"{self.url}/health", self.process, seconds=120)
            return self
        except ServerNotReady as err:
            self.stop()  # no server process or database outlives a failed start
            pytest.fail(f"the auth server did not start ({err}): {self.log.read_text()[-2000:]}")

    def stop(self):
        stop_process_group(self.process)
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as connection:
            for name in self.databases:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = AuthServer(tmp_path_factory.mktemp("auth")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def outputs():
    """Everything our CLI printed in this module, for the password check."""
    return []


def _login(monkeypatch, server, user):
    for name in CREDENTIAL_VARS:
        monkeypatch.delenv(name, raising=False)
    if user is not None:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.passwords.get(user, "not-the-password"))


def _cli(outputs, argv, stdin=None):
    """Our CLI in this process: (exit code, stdout, stderr); what it printed is kept in outputs."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            pytest.MonkeyPatch.context() as monkeypatch:
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = cli.main(argv)
    outputs.append(out.getvalue() + err.getvalue())
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def overrides(server, imdb_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auth-client")
    # The server keeps the artifacts (proxied), so the client needs no path of its own.
    return tiny_overrides(imdb_dir, tmp) + [f"tracking.uri={server.url}", "tracking.artifact_location=null",
                                            "promote.test_samples=null"]


def _add_user(server, overrides, outputs, name, role, as_user="admin"):
    with pytest.MonkeyPatch.context() as monkeypatch:
        _login(monkeypatch, server, as_user)
        return _cli(outputs, ["user", "--name", name, "--role", role, *overrides],
                    stdin=server.passwords.setdefault(name, secrets.token_urlsafe(12)) + "\n")


@pytest.fixture(scope="module")
def users(server, overrides, outputs):
    """reader1 and trainer1, added by the admin through `sentiment user` (password on stdin)."""
    for name, role in (("trainer1", "trainer"), ("reader1", "reader")):
        code, out, err = _add_user(server, overrides, outputs, name, role)
        assert code == 0, err
    return overrides


@pytest.fixture(scope="module")
def champion(server, users, outputs):
    """What trainer1 did: a 2-trial sweep, then `promote` (the first @champion)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _login(monkeypatch, server, "trainer1")
        result = run_sweep(load_config(users))
        mlflow.end_run()
        code, out, err = _cli(outputs, ["promote", *users])
    return result, code, out + err


@pytest.mark.integration
@pytest.mark.parametrize("user, expected", [(None, "needs a user name and password"),
                                            ("trainer1", "refused the password of user 'trainer1'")])
def test_no_or_wrong_credentials_are_one_line_before_any_data(server, users, monkeypatch, outputs,
                                                              tmp_path, user, expected):
    _login(monkeypatch, server, user)
    if user:
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.mlflow/credentials to fall back on
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    cache = tmp_path / "fresh-cache"
    code, out, err = _cli(outputs, ["sweep", *users, f"data.cache_dir={cache}"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert expected in err and "MLFLOW_TRACKING_USERNAME" in err
    assert not cache.exists()  # refused before any data was read


@pytest.mark.integration
def test_a_reader_cannot_start_a_sweep_and_reads_no_data(server, users, monkeypatch, outputs, tmp_path):
    _login(monkeypatch, server, "reader1")
    cache = tmp_path / "fresh-cache"
    code, _, err = _cli(outputs, ["sweep", *users, f"data.cache_dir={cache}"])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "user 'reader1' may not log runs to experiment" in err and "ROLE=trainer" in err
    assert not cache.exists()


@pytest.mark.integration
def test_only_the_admin_adds_users_and_a_role_can_be_taken_back(server, users, monkeypatch, outputs):
    code, _, err = _add_user(server, users, outputs, "mallory", "trainer", as_user="trainer1")
    assert code == 2 and "may not manage users" in err and "admin's" in err
    model = load_config(users).tracking.model_name
    assert _add_user(server, users, outputs, "dana", "trainer")[0] == 0
    _login(monkeypatch, server, "dana")
    versions.check_can_move_aliases(model, server.url)  # a trainer may
    assert _add_user(server, users, outputs, "dana", "reader")[0] == 0  # the same user, made a reader
    with pytest.raises(TrackingError, match="user 'dana' may not move the aliases"):
        versions.check_can_move_aliases(model, server.url)


@pytest.mark.integration
@pytest.mark.sweeps
def test_a_trainer_sweeps_registers_and_promotes(server, champion, monkeypatch):
    result, code, printed = champion
    assert result.registered_version is not None and code == 0 and "first @champion" in printed
    _login(monkeypatch, server, "trainer1")
    mlflow.set_tracking_uri(server.url)
    assert MlflowClient().get_run(result.parent_run_id).info.status == "FINISHED"


@pytest.mark.integration
@pytest.mark.sweeps
def test_a_reader_browses_and_predicts_but_cannot_promote(server, users, champion, monkeypatch, outputs):
    model = load_config(users).tracking.model_name
    _login(monkeypatch, server, "trainer1")
    mlflow.set_tracking_uri(server.url)
    before = MlflowClient().get_registered_model(model)
    assert "champion" in before.aliases

    _login(monkeypatch, server, "reader1")
    runs = mlflow.search_runs(experiment_names=[load_config(users).tracking.experiment], output_format="list")
    assert any(run.data.tags.get("role") == "trial" for run in runs)
    code, out, _ = _cli(outputs, ["predict", "--text", "great wonderful film", *users])
    assert code == 0 and out.split()[0] in ("positive", "negative")

    code, _, err = _cli(outputs, ["promote", "--force", *users])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "user 'reader1' may not move the aliases" in err and "ROLE=trainer" in err
    _login(monkeypatch, server, "trainer1")
    after = MlflowClient().get_registered_model(model)
    assert after.aliases == before.aliases
    assert not MlflowClient().search_model_versions(f"name = '{versions.lock_name(model)}' and tags.state = 'active'")


@pytest.mark.integration
@pytest.mark.sweeps
def test_a_trainer_passes_a_dead_trainers_lock_and_a_reader_cannot_hold_one(server, users, champion, monkeypatch,
                                                                             outputs):
    from mlflow.exceptions import MlflowException

    model = load_config(users).tracking.model_name
    lock = versions.lock_name(model)
    mlflow.set_tracking_uri(server.url)
    _login(monkeypatch, server, "reader1")  # a reader may neither create the lock nor take a ticket
    with pytest.raises(MlflowException, match="RESOURCE_ALREADY_EXISTS"):
        MlflowClient().create_registered_model(lock)  # the admin's, made with the users
    with pytest.raises(MlflowException, match="403|PERMISSION_DENIED"):
        MlflowClient().create_model_version(lock, source=f"models:/{model}/1")

    assert _add_user(server, users, outputs, "trainer2", "trainer")[0] == 0
    _login(monkeypatch, server, "trainer1")
    dead = versions.alias_lock(model, "1")
    dead.__enter__()  # trainer1 takes the lock and dies holding it: never released
    _login(monkeypatch, server, "trainer2")
    monkeypatch.setattr(versions, "LOCK_STALE_S", 2)
    time.sleep(2.5)
    with versions.alias_lock(model, "1", wait_s=10):  # passed by ticket, not by deleting trainer1's lock
        tickets = MlflowClient().search_model_versions(f"name = '{lock}' and tags.state = 'active'")
        assert len(tickets) == 2


@pytest.mark.integration
@pytest.mark.sweeps
def test_no_password_in_the_store_the_artifacts_or_the_logs(server, champion, outputs):
    haystack = list(outputs) + [server.log.read_text(errors="replace")]
    for name in server.databases:
        with psycopg.connect(f"{POSTGRES}/{name}") as connection:
            tables = connection.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'").fetchall()
            for (table,) in tables:
                haystack.append(repr(connection.execute(f'SELECT * FROM "{table}"').fetchall()))
    haystack += [path.read_bytes().decode("utf-8", "replace") for path in server.artifacts.rglob("*") if path.is_file()]
    text = "\n".join(haystack)
    assert "trainer1" in text and "first @champion" in text  # the stores and the outputs were really read
    for user, password in server.passwords.items():
        assert password not in text, f"{user}'s password is stored or logged"
