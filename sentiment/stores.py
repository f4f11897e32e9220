"""Where things are stored, by the kind of URL: an MLflow server (http), SQLite, PostgreSQL or an
Optuna journal file. Every check of a URL's kind is here, and no credential may sit in one."""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path
from urllib.parse import urlparse

from sentiment.errors import ConfigError

log = logging.getLogger(__name__)

JOURNAL_PREFIX = "journal:"  # sweep.storage=journal:FILE: an Optuna journal file


def is_server(uri: str) -> bool:
    """An MLflow tracking server (http:// or https://), not a local store."""
    return str(uri).startswith("http")


def is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def refuse_password_over_plain_http(uri: str, user: str | None, has_secret: bool, allowed: bool) -> None:
    """Basic auth sends the password with every request: over plain http to another machine,
    anyone on the path reads it. Refused unless the user opts in (tracking.allow_plain_http)."""
    host = urlparse(str(uri)).hostname
    if not str(uri).startswith("http://") or not has_secret or allowed or is_loopback(host):
        return
    whose = f" of user {user!r}" if user else ""
    raise ConfigError(f"tracking.uri={uri} would send the password{whose} unencrypted to {host}: "
                      "put TLS in front of the server and use https:// (README: three machines), "
                      "or set tracking.allow_plain_http=true on a network you trust")


def is_postgresql(url: str) -> bool:
    return str(url).startswith("postgresql")


def is_sqlite(url: str) -> bool:
    return str(url).startswith("sqlite:")


def is_journal(url: str) -> bool:
    return str(url).startswith(JOURNAL_PREFIX)


def journal_file(url: str) -> str:
    """The file of journal:FILE (journal://FILE works too)."""
    return str(url).removeprefix(JOURNAL_PREFIX).removeprefix("//")


def sqlite_file(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (relative to the working directory), else None."""
    return Path(uri.removeprefix("sqlite:///")).resolve() if uri.startswith("sqlite:///") else None


def reject_password_in_url(key: str, url: str | None) -> None:
    """Credentials never live in config: it is logged with every run and stored with the study."""
    if url and urlparse(str(url).removeprefix(JOURNAL_PREFIX)).password:
        where = "PGPASSWORD or ~/.pgpass" if is_postgresql(url) else "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD"
        raise ConfigError(f"{key} holds a password: remove it from the URL and set {where} instead")


# PostgreSQL's password for the study storage, once moved out of the environment (see below).
_study_database_password: str | None = None


def study_database_password() -> str | None:
    """The password the study storage's connections give PostgreSQL: PGPASSWORD, or what
    keep_study_database_password took out of it (~/.pgpass needs neither: libpq reads it)."""
    return os.environ.get("PGPASSWORD", _study_database_password)


def keep_study_database_password(password: str | None = None) -> str | None:
    """Take PGPASSWORD out of this process's environment (or keep the one a parent handed over)
    and return it: worker processes, and all they start, then never inherit it; the storage gives
    it to each of its connections itself. Only for processes whose other stores do not read
    PGPASSWORD themselves (a tracking store that is not a PostgreSQL URL)."""
    global _study_database_password
    _study_database_password = os.environ.pop("PGPASSWORD", password or _study_database_password)
    return _study_database_password


def create_database_if_missing(url: str) -> None:
    """PostgreSQL URLs name a database; create it on first use so nobody has to by hand."""
    import psycopg
    from psycopg import sql

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = parsed._replace(scheme="postgresql", path="/postgres").geturl()
    try:
        connection = psycopg.connect(admin, connect_timeout=5, autocommit=True,
                                     **_password_argument(study_database_password()))
    except psycopg.OperationalError as err:
        raise ConfigError(f"cannot reach PostgreSQL at {parsed.hostname}:{parsed.port} for database {name} "
                          f"({str(err).strip().splitlines()[0]}); start it or fix the URL") from None
    with connection:
        if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            log.info("creating PostgreSQL database %s", name)
            try:
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.DuplicateDatabase:
                pass  # another worker created it first


def _password_argument(password: str | None) -> dict[str, str]:
    return {"password": password} if password else {}


def postgresql_connect_args() -> dict[str, str]:
    """What SQLAlchemy hands psycopg for each new connection of the study storage."""
    return _password_argument(study_database_password())
