"""Kinds of store URL (MLflow server, SQLite, PostgreSQL, Optuna journal), the files they name,
the refusal of passwords in URLs, and creating a missing PostgreSQL database."""

import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from sentiment.bench.local_servers import free_port
from sentiment.config import load_config
from sentiment.errors import ConfigError
from sentiment.stores import (
    create_database_if_missing,
    is_journal,
    is_postgresql,
    is_server,
    is_sqlite,
    journal_file,
    reject_password_in_url,
    sqlite_file,
)
from tests.conftest import tiny_overrides

POSTGRES = "postgresql://postgres@127.0.0.1:5432"

URLS = {
    "server": ["http://127.0.0.1:5000", "https://tracking.example.org/mlflow"],
    "postgresql": ["postgresql://postgres@127.0.0.1:5432/optuna", "postgresql+psycopg://u@db.example.org/mlflow"],
    "sqlite": ["sqlite:///optuna.db", "sqlite:////var/data/mlflow.db", "sqlite://"],
    "journal": ["journal:optuna.journal", "journal://shared/optuna.journal"],
    "local": ["mlruns", "/var/data/mlruns", "file:///var/data/mlruns"],
}
CHECKS = {"server": is_server, "postgresql": is_postgresql, "sqlite": is_sqlite, "journal": is_journal}


@pytest.mark.parametrize("kind, url", [(kind, url) for kind, urls in URLS.items() for url in urls])
def test_each_url_is_exactly_its_own_kind(kind, url):
    assert {name for name, check in CHECKS.items() if check(url)} == ({kind} if kind in CHECKS else set())


@pytest.mark.parametrize("url, file", [
    ("journal:optuna.journal", "optuna.journal"),
    ("journal://optuna.journal", "optuna.journal"),
    ("journal:/var/data/optuna.journal", "/var/data/optuna.journal"),
    ("journal:///var/data/optuna.journal", "/var/data/optuna.journal"),
])
def test_journal_file_is_the_path_after_the_prefix(url, file):
    assert journal_file(url) == file


def test_sqlite_file_is_resolved_against_the_working_directory(tmp_path):
    # the autouse fixture runs each test in tmp_path
    assert sqlite_file("sqlite:///stores/mlflow.db") == (tmp_path / "stores" / "mlflow.db").resolve()
    assert Path.cwd().resolve() == tmp_path.resolve()


def test_sqlite_file_of_an_absolute_uri_is_that_path(tmp_path):
    target = tmp_path / "abs" / "optuna.db"
    assert sqlite_file(f"sqlite:///{target}") == target.resolve()


@pytest.mark.parametrize("uri", ["sqlite://", "postgresql://postgres@127.0.0.1/db",
                                 "http://127.0.0.1:5000", "journal:optuna.journal", "mlruns"])
def test_sqlite_file_is_none_for_anything_but_a_sqlite_file(uri):
    assert sqlite_file(uri) is None


@pytest.mark.parametrize("url", [None, "", "sqlite:///optuna.db", "journal:optuna.journal", "http://127.0.0.1:5000",
                                 "postgresql://postgres@127.0.0.1:5432/optuna", "https://alice@tracking.example.org"])
def test_urls_without_a_password_pass(url):
    assert reject_password_in_url("sweep.storage", url) is None


@pytest.mark.parametrize("key, url, where", [
    ("sweep.storage", "postgresql://postgres:s3cr3t@127.0.0.1:5432/optuna", "PGPASSWORD or ~/.pgpass"),
    ("sweep.warm_start_storage", "postgresql+psycopg://u:s3cr3t@db.example.org/optuna", "PGPASSWORD"),
    ("tracking.uri", "https://alice:s3cr3t@tracking.example.org", "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD"),
])
def test_a_password_in_a_url_is_refused_without_repeating_it(key, url, where):
    with pytest.raises(ConfigError) as err:
        reject_password_in_url(key, url)
    message = str(err.value)
    assert message.startswith(f"{key} holds a password") and where in message
    assert "s3cr3t" not in message and "\n" not in message


def test_config_validation_refuses_a_password_in_the_storage_url(imdb_dir, tmp_path):
    with pytest.raises(ConfigError, match="sweep.storage holds a password") as err:
        load_config(tiny_overrides(imdb_dir, tmp_path) + ["sweep.storage=postgresql://postgres:s3cr3t@127.0.0.1/optuna"])
    assert "s3cr3t" not in str(err.value)


def test_unreachable_postgresql_is_one_line_naming_host_port_and_database():
    port = free_port()  # nothing listens there
    with pytest.raises(ConfigError) as err:
        create_database_if_missing(f"postgresql://postgres@127.0.0.1:{port}/sentiment_unreachable")
    message = str(err.value)
    assert message.startswith(f"cannot reach PostgreSQL at 127.0.0.1:{port} for database sentiment_unreachable")
    assert message.endswith("start it or fix the URL") and "\n" not in message


def _exists(name: str) -> bool:
    with psycopg.connect(f"{POSTGRES}/postgres", connect_timeout=5) as connection:
        return connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


@pytest.fixture
def postgres_databases():
    """Fresh database names (created by the test), dropped at the end. The name has a hyphen: it
    must be quoted as an identifier to be created at all."""
    names = [f"sentiment-test-{uuid.uuid4().hex[:10]}"]
    yield names
    with psycopg.connect(f"{POSTGRES}/postgres", connect_timeout=5, autocommit=True) as connection:
        for name in names:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    assert not any(_exists(name) for name in names)


@pytest.mark.integration
def test_a_missing_database_is_created_once(postgres_databases):
    name = postgres_databases[0]
    assert not _exists(name)
    create_database_if_missing(f"{POSTGRES}/{name}")
    assert _exists(name)
    # again, and through the SQLAlchemy driver scheme: the database is already there, nothing fails
    create_database_if_missing(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    with psycopg.connect(f"{POSTGRES}/{name}", connect_timeout=5) as connection:
        assert connection.execute("SELECT current_database()").fetchone() == (name,)
