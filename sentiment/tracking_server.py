"""The shared tracking server `make server` starts (MLflow's basic-auth app on any address beyond
loopback), and the users its admin adds (`make user`). Clients' one-line answers to a refused
credential or permission are tracking.refusal.

Clients authenticate the standard MLflow way: MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD
or ~/.mlflow/credentials. Every authenticated user may read (the auth app's default permission);
a `trainer` may also edit the experiment and the registered model: log runs, register, promote
and roll back.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig

from sentiment.errors import ConfigError, TrackingError
from sentiment.stores import (
    create_database_if_missing,
    is_loopback,
    is_postgresql,
    is_server,
    reject_password_in_url,
    sqlite_file,
)

# What each role may do beyond reading, as MLflow permissions on the experiment and registered
# model: EDIT logs runs, registers versions and moves aliases (it cannot delete or grant).
ROLES = {"reader": None, "trainer": "EDIT"}
DEFAULT_PERMISSION = "READ"  # any authenticated user: browse runs, load models, predict


# --- the server ------------------------------------------------------------------------------


@dataclass
class ServerLaunch:
    argv: list[str]
    env: dict[str, str]
    private_dir: Path | None = None  # the auth settings; removed when the server exits (run_server)


def server_launch(host: str, port: int, backend_store_uri: str, artifacts: str, auth: bool,
                  workers: int, names: tuple[str, ...] = ()) -> ServerLaunch:
    """`mlflow server` arguments and environment. Beyond loopback, authentication is always on, and
    the server answers only to this machine's names and `names` (DNS aliases clients use)."""
    reject_password_in_url("--backend-store-uri", backend_store_uri)  # it would show in `ps`
    argv = ["mlflow", "server", "--backend-store-uri", backend_store_uri, "--artifacts-destination", artifacts,
            "--host", host, "--port", str(port), "--workers", str(workers)]
    env = dict(os.environ)
    if not (auth or not is_loopback(host)):
        return ServerLaunch(argv, env)  # 127.0.0.1: only this machine can connect, as before
    password = admin_password()
    # A password from MLFLOW_AUTH_ADMIN_PASSWORD_FILE goes into the private settings file, never
    # into the server's environment (which every process it starts inherits).
    from_file = not os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD")
    env.pop("MLFLOW_AUTH_ADMIN_PASSWORD", None)  # set but empty would win over the file (MLflow's rule)
    if not from_file:
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = password
    # CSRF tokens of the UI are signed with it; MLflow refuses to start the auth app without one.
    env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_hex(32))
    private_dir = Path(tempfile.mkdtemp(prefix="sentiment-auth-"))  # mode 0700
    config = write_auth_config(private_dir, users_database(backend_store_uri), password if from_file else None)
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(config)
    argv += ["--app-name", "basic-auth"]
    if not is_loopback(host):
        names = sorted({*served_names(host), *names})
        argv += ["--allowed-hosts", ",".join(n for name in names for n in (name, f"{name}:{port}")),
                 "--cors-allowed-origins", ",".join(f"http://{name}:{port}" for name in names)]
    return ServerLaunch(argv, env, private_dir)


def run_server(launch: ServerLaunch) -> int:
    """Run the server until it exits (SIGTERM and SIGINT are passed on to it), then remove its
    private settings: nothing with a password outlives it."""
    started: list[subprocess.Popen] = []
    pending: list[int] = []

    def forward(signum, _frame):
        for process in started:
            process.send_signal(signum)
        if not started:
            pending.append(signum)

    # Handlers first: a signal that comes while the server starts is passed on once it runs.
    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        process = subprocess.Popen(launch.argv, env=launch.env)
        started.append(process)
        for signum in pending:
            process.send_signal(signum)
        return process.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()
        if launch.private_dir is not None:
            shutil.rmtree(launch.private_dir, ignore_errors=True)


def admin_password() -> str:
    """From MLFLOW_AUTH_ADMIN_PASSWORD, or the file MLFLOW_AUTH_ADMIN_PASSWORD_FILE names; there
    is no default password."""
    if os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
        return os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"]
    path = os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD_FILE")
    if path:
        try:
            password = Path(path).expanduser().read_text(encoding="utf-8").strip()
        except OSError as err:
            raise ConfigError(f"cannot read MLFLOW_AUTH_ADMIN_PASSWORD_FILE={path} ({err.strerror})") from None
        if password:
            return password
    raise ConfigError("the server needs an admin password to turn authentication on: set "
                      "MLFLOW_AUTH_ADMIN_PASSWORD, or MLFLOW_AUTH_ADMIN_PASSWORD_FILE to a file outside the repo")


def users_database(backend_store_uri: str) -> str:
    """The auth app's users and permissions: a database beside the tracking store's
    (`<name>_users`, created if missing), never in the repo."""
    parsed = urlparse(backend_store_uri)
    if is_postgresql(backend_store_uri):
        url = parsed._replace(path=f"{parsed.path.rstrip('/')}_users").geturl()
        create_database_if_missing(url)
        return url
    database = sqlite_file(backend_store_uri)
    if database is not None:
        return f"sqlite:///{database.with_name(database.stem + '_users.db')}"
    raise ConfigError(f"--backend-store-uri {backend_store_uri} is not PostgreSQL or SQLite")


def write_auth_config(directory: Path, database_uri: str, admin_password: str | None = None) -> Path:
    """The auth app's settings in directory (private: 0600), with the admin password only when
    it came from a file (configparser reads `%` as interpolation, hence `%%`)."""
    lines = ["[mlflow]", f"default_permission = {DEFAULT_PERMISSION}", f"database_uri = {database_uri}",
             f"admin_username = {os.environ.get('MLFLOW_AUTH_ADMIN_USERNAME', 'admin')}",
             "authorization_function = mlflow.server.auth:authenticate_request_basic_auth"]
    if admin_password is not None:
        lines.append(f"admin_password = {admin_password.replace('%', '%%')}")
    path = directory / "auth.ini"
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(handle, "w") as file:
        file.write("\n".join(lines) + "\n")
    return path


def served_names(host: str) -> list[str]:
    """The names clients may use for a server bound to host (all of this machine's for 0.0.0.0)."""
    if host not in ("0.0.0.0", "::"):
        return [host]
    names = {socket.gethostname(), socket.getfqdn(), "localhost", "127.0.0.1"}
    try:
        names.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass  # a host name that does not resolve: the names above still work
    return sorted(names)


# --- users (admin) ---------------------------------------------------------------------------


def add_user(tracking_cfg: DictConfig, name: str, password: str, role: str) -> list[str]:
    """As the admin whose credentials are set: create the user (or, if it exists, set its
    password) and give it exactly the role's permissions. Returns what the user may do."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    from sentiment import tracking  # here, not at the top: `make server` starts without TensorFlow
    from sentiment.registry.versions import create_lock_model, lock_name

    if role not in ROLES:
        raise ConfigError(f"role {role!r} is invalid: expected one of {', '.join(ROLES)}")
    if not is_server(tracking_cfg.uri):
        raise ConfigError(f"tracking.uri={tracking_cfg.uri} is a local store: users exist on a tracking server only")
    experiment_id = tracking.connect(tracking_cfg, write=True)
    client, model = AuthServiceClient(tracking_cfg.uri), tracking_cfg.model_name
    # The promotion lock is the admin's, so no reader can own it, and trainers take tickets on it.
    resources = (("experiment", experiment_id, f"experiment {tracking_cfg.experiment}"),
                 ("registered_model", model, f"registered model {model}"),
                 ("registered_model", lock_name(model), f"its promotion lock {lock_name(model)}"))
    try:
        if _user_exists(client, name):
            client.update_user_password(name, password)
        else:
            client.create_user(name, password)
        registry = mlflow.MlflowClient()
        if not registry.search_registered_models(filter_string=f"name = '{model}'"):
            registry.create_registered_model(model)
        create_lock_model(registry, model)
        permission = ROLES[role]
        for kind, resource, _ in resources:
            if permission is None:
                _revoke(client, name, kind, resource)  # a trainer made a reader again
            else:
                client.grant_user_permission(name, kind, resource, permission)
    except MlflowException as err:
        raise tracking.refusal(err, tracking_cfg.uri, "manage users",
                      fix="set MLFLOW_TRACKING_USERNAME / PASSWORD to the admin's") or TrackingError(
            f"cannot set up user {name!r}: {tracking.short_error(err)}") from None
    if permission is None:
        return [f"{DEFAULT_PERMISSION} on everything (the server's default)"]
    return [f"{permission} on {label}" for _, _, label in resources]


def _user_exists(client, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_user(name)
        return True
    except MlflowException as err:
        if "RESOURCE_DOES_NOT_EXIST" in str(err.error_code):
            return False
        raise


def _revoke(client, name: str, kind: str, resource: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.revoke_user_permission(name, kind, resource)
    except MlflowException as err:
        if "RESOURCE_DOES_NOT_EXIST" not in str(err.error_code):
            raise
