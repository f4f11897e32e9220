"""`make soak MINUTES=10`: the whole system under faults for a bounded time. A command, not a test.

PostgreSQL holds the Optuna study and the MLflow store; the tracking server runs with logins; two
sweep processes (as two worker machines would: each its own `sentiment sweep`, as a trainer) share
the study, and a supervisor restarts one that died. Where root allows (`--hosts auto`, the
default), each worker runs as a host of its own: a network namespace joined to this machine by a
veth pair, with its own host name and pid namespace (bench.hosts), reaching the tracking server
and the database over that network; otherwise (or `--hosts loopback`) all runs on loopback. Meanwhile
`sentiment serve` follows `@champion` (as a reader) while 4 clients send it real reviews and
hostile bodies (one-line 4xx, or 200 where MLflow can read them); every minute `@champion` is
moved to another version. A chaos thread, every 60-120 s, kills a sweep process, cuts every
database connection, restarts the tracking server or (with worker hosts) cuts one worker's network
for 10-20 s.

Checked once a minute (a row of the report): no RUNNING trial with a stale heartbeat, finished
trials <= n_trials with unique params in each study, one sweep run per study (of those older
than a minute: two workers' race for it settles within seconds), `@champion` and
`@previous` on two different versions, every good request answered 200 (no 5xx, no lost
connection: the counts are cumulative), and the
scoring server's memory within 20 % of its first reading. The data is a seeded subsample of the
real reviews (`SOAK_OVERRIDES`, before the caller's), so a trial takes seconds, not minutes; when
a study is full the workers register its final model and start the next study.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import requests

from sentiment.bench.hosts import HostsUnavailable, Relay, WorkerHost, make_worker_hosts
from sentiment.bench.local_servers import free_port, stop_process_group, wait_until_answers
from sentiment.bench.results import machine_info, write_results
from sentiment.bench.serve import server_rss_mb
from sentiment.model_code import TEXT_COLUMN
from sentiment.registry.server import VERSION_COLUMN

log = logging.getLogger(__name__)

POSTGRES = "postgresql://postgres@127.0.0.1:5432"
SOAK_OVERRIDES = [
    "data.train_samples=2000", "data.test_samples=1000", "data.sequence_length=128", "model.units=16",
    "model.embedding_dim=32", "model.embedding_init=random", "train.max_epochs=2", "sweep.timeout=null",
    "sweep.n_trials=4", "sweep.noise_repeats=1", "sweep.final=best", "baseline.models=[]",
    "sweep.heartbeat_interval=5", "sweep.grace_period=30", "promote.test_samples=null",
    "tracking.artifact_location=null", "tracking.system_metrics_seconds=null",
]
CHAOS = ("kill a sweep worker", "cut the database connections", "restart the tracking server")
PARTITION = "cut a worker host's network"  # with worker hosts only
GOOD_STATUS = 200
HOSTILE_STATUSES = {200, 400, 413, 415, 503}  # the fuzz test's property: never a 5xx but 503
MEMORY_GROWTH_LIMIT = 0.20


def hostile_bodies() -> list[tuple[str, bytes]]:
    """(content type, body) pairs a scoring server must answer with a one-line 4xx (or 503)."""
    deep = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return [
        ("application/json", deep),
        ("application/json", b'{"inputs": [' + b"9" * 5000 + b"]}"),
        ("application/json", b'{"dataframe_records": [{"%s": "\\ud800 lone"}]}' % TEXT_COLUMN.encode()),
        ("application/json", b'{"dataframe_records": [{"%s": NaN}]}' % TEXT_COLUMN.encode()),
        ("application/json", b'{"inputs": ["a"], "inputs": 3}'),
        ("application/json", b'{"dataframe_split": {"columns": ["x"], "data": [[1]]}}'),
        ("application/json", b"not json at all"),
        ("text/csv", b"\xff\xfe\x00 not a csv"),
        ("application/xml", b"<review>good</review>"),
        ("application/json", b'{"instances": ' + b'"",' * 300_000 + b'""}'),
    ]


@dataclass
class Tally:
    """What the clients saw; shared by their threads."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    good: Counter = field(default_factory=Counter)      # status (or "connection") -> count
    hostile: Counter = field(default_factory=Counter)
    bad_bodies: list = field(default_factory=list)      # hostile answers that were not one-line JSON
    versions: Counter = field(default_factory=Counter)  # which version answered the good requests

    def add(self, kind: str, status, version: str | None = None, body: str | None = None) -> None:
        with self.lock:
            (self.good if kind == "good" else self.hostile)[status] += 1
            if version:
                self.versions[version] += 1
            if body is not None:
                self.bad_bodies.append(body[:300])


class Soak:
    def __init__(self, minutes: float, overrides: list[str], postgres: str = POSTGRES, hosts: str = "auto"):
        self.minutes, self.postgres, self.hosts_mode = minutes, postgres, hosts
        self.tag = secrets.token_hex(4)
        self.dir: Path | None = None  # the processes' logs and artifacts: made when the soak runs
        self.optuna_db = f"{postgres}/sentiment_soak_{self.tag}_optuna"
        self.mlflow_db = f"{postgres}/sentiment_soak_{self.tag}_mlflow"
        self.passwords = {name: secrets.token_urlsafe(12) for name in ("admin", "soak-trainer", "soak-reader")}
        self.port, self.serve_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.study_index = 0
        self.caller_overrides = [*SOAK_OVERRIDES, *overrides]
        self.overrides = [*self.caller_overrides, f"tracking.uri={self.url}", f"sweep.storage={self.optuna_db}"]
        self.worker_hosts: list[WorkerHost] = []
        self.relays: list[Relay] = []  # to the database, one on each worker host's network
        self.hosts_used = "loopback"
        self.stop = threading.Event()
        self.tally = Tally()
        self.events: list[dict] = []
        self.minutes_checked: list[dict] = []
        self.server = self.serve = None
        self.promoter: threading.Thread | None = None
        self.workers: list[subprocess.Popen | None] = [None, None]
        self.restarts = 0
        self.rss_first: float | None = None
        self.model_name = "imdb-sentiment"  # tracking.model_name, read from the config in run()

    # --- processes ---------------------------------------------------------------------------

    def _env(self, user: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "10"  # ride out a server restart of a few seconds
        if user:
            env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = user, self.passwords[user]
        return env

    def _spawn(self, argv: list[str], user: str | None, log_name: str, host: WorkerHost | None = None,
               **env) -> subprocess.Popen:
        python = ["-m", "sentiment", *argv]
        command = host.command(python) if host else [sys.executable, *python]
        out = (self.dir / log_name).open("a")
        return subprocess.Popen(command, cwd=self.dir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**self._env(user), **env})

    def _cli(self, argv: list[str], user: str, stdin: str | None = None, timeout: float = 600):
        return subprocess.run([sys.executable, "-m", "sentiment", *argv], cwd=self.dir, input=stdin, text=True,
                              capture_output=True, env=self._env(user), timeout=timeout)

    def start_tracking_server(self) -> None:
        # With worker hosts: bound to every address, answering to the names the workers use.
        beyond = [arg for host in self.worker_hosts for arg in ("--name", host.host_address)]
        bind = ["--host", "0.0.0.0", *beyond] if beyond else []
        self.server = self._spawn(["server", "--auth", *bind, "--port", str(self.port), "--workers", "1",
                                   "--backend-store-uri", self.mlflow_db,
                                   "--artifacts-destination", str(self.dir / "artifacts")],
                                  None, "server.log", MLFLOW_AUTH_ADMIN_PASSWORD=self.passwords["admin"])
        wait_until_answers(f"{self.url}/health", self.server, seconds=180)

    def study_overrides(self, reaching: list[str] | None = None) -> list[str]:
        """The current study's config, with the way to the servers (default: this machine's)."""
        return [*(reaching or self.overrides), f"sweep.study_name=soak-{self.study_index}"]

    def worker_overrides(self, index: int) -> list[str]:
        """A worker host's way to the servers: this machine's address on its network, over plain
        http (a network we trust: the veth pair), and the database through the relay."""
        if not self.worker_hosts:
            return self.study_overrides()
        host, relay = self.worker_hosts[index], self.relays[index]
        study_database = urlparse(self.optuna_db)
        through_relay = study_database._replace(netloc=f"{study_database.username}@{relay.address}:{relay.port}")
        return self.study_overrides([*self.caller_overrides, f"tracking.uri=http://{host.host_address}:{self.port}",
                                     "tracking.allow_plain_http=true", f"sweep.storage={urlunparse(through_relay)}"])

    def start_worker(self, index: int) -> None:
        host = self.worker_hosts[index] if self.worker_hosts else None
        self.workers[index] = self._spawn(["sweep", *self.worker_overrides(index)], "soak-trainer",
                                          f"worker-{index}.log", host=host)

    def make_worker_hosts(self) -> None:
        """Two worker hosts (network namespaces) where the mode and root allow; else loopback."""
        if self.hosts_mode == "loopback":
            return
        try:
            self.worker_hosts = make_worker_hosts(2)
        except HostsUnavailable as err:
            if self.hosts_mode == "namespaces":
                raise
            self.hosts_used = f"loopback (no worker hosts: {err})"
            log.info("soak: %s", self.hosts_used)
            return
        database = urlparse(self.postgres)
        self.relays = [Relay(host.host_address, (database.hostname, database.port or 5432))
                       for host in self.worker_hosts]
        self.hosts_used = "worker hosts: " + ", ".join(
            f"{host.hostname} at {host.worker_address}" for host in self.worker_hosts)

    def supervise_workers(self) -> None:
        """Restart a sweep process that died; once both ended well, the study is full: next study."""
        codes = [w.poll() if w else 0 for w in self.workers]
        for index, code in enumerate(codes):
            if code not in (None, 0):
                self.restarts += 1
                self._event(f"worker {index} exited {code}: restarted")
                self.start_worker(index)
        if all(code == 0 for code in codes):
            self.study_index += 1
            for index in range(2):
                self.start_worker(index)

    def setup(self) -> None:
        from sentiment.stores import create_database_if_missing

        for url in (self.optuna_db, self.mlflow_db):
            create_database_if_missing(url)
        self.make_worker_hosts()
        self.start_tracking_server()
        for name, role in (("soak-trainer", "trainer"), ("soak-reader", "reader")):
            done = self._cli(["user", "--name", name, "--role", role, *self.overrides], "admin",
                             stdin=self.passwords[name] + "\n")
            if done.returncode:
                raise RuntimeError(f"`sentiment user {name}` failed: {done.stderr.strip()[-500:]}")
        # A first champion, so the scoring server has something to serve.
        first = self._cli(["sweep", *self.study_overrides()], "soak-trainer", timeout=1800)
        if first.returncode:
            raise RuntimeError(f"the first sweep failed: {first.stderr.strip()[-800:]}")
        self._cli(["promote", *self.overrides], "soak-trainer")
        self.serve = self._spawn(["serve", "--port", str(self.serve_port), *self.overrides,
                                  "serve.reload_seconds=10"], "soak-reader", "serve.log")
        wait_until_answers(f"http://127.0.0.1:{self.serve_port}/ping", self.serve, seconds=300)
        self.study_index += 1
        for index in range(2):
            self.start_worker(index)

    def teardown(self) -> None:
        import psycopg

        self.stop.set()
        if self.promoter is not None:  # a promotion under way ends first: nothing outlives the soak
            self.promoter.join(timeout=600)
        for process in [*self.workers, self.serve, self.server]:
            if process is not None:
                stop_process_group(process, grace_seconds=30)
        for relay in self.relays:
            relay.stop()
        for host in self.worker_hosts:
            host.remove()
        with psycopg.connect(f"{self.postgres}/postgres", autocommit=True) as admin:
            for url in (self.optuna_db, self.mlflow_db, f"{self.mlflow_db}_users"):
                admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')

    # --- load and chaos ----------------------------------------------------------------------

    def client(self, index: int, reviews: list[str]) -> None:
        session, rng, hostile = requests.Session(), random.Random(index), hostile_bodies()
        url = f"http://127.0.0.1:{self.serve_port}/invocations"
        while not self.stop.wait(rng.uniform(0.05, 0.25)):  # steady traffic that leaves the workers CPU
            if rng.random() < 0.8:
                body = {"dataframe_records": [{TEXT_COLUMN: rng.choice(reviews)} for _ in range(rng.randint(1, 8))]}
                try:
                    reply = session.post(url, json=body, timeout=60)
                    self.tally.add("good", reply.status_code, _answering_version(reply))
                except requests.RequestException:
                    self.tally.add("good", "connection")
            else:
                content_type, body = rng.choice(hostile)
                try:
                    reply = session.post(url, data=body, headers={"Content-Type": content_type}, timeout=60)
                except requests.RequestException:
                    self.tally.add("hostile", "connection")
                    continue
                text = reply.text
                one_line = "\n" not in text.strip() and "Traceback" not in text and "stack_trace" not in text
                self.tally.add("hostile", reply.status_code, body=None if one_line else text)

    def chaos(self) -> None:
        rng = random.Random(self.tag)
        kinds = [*CHAOS, PARTITION] if self.worker_hosts else list(CHAOS)
        order: list[str] = []
        while not self.stop.wait(rng.uniform(60, 120)):
            if not order:  # each kind once, in a shuffled order, before any comes again
                order = rng.sample(kinds, len(kinds))
            fault = order.pop()
            self._event(fault)
            outcome = self._safely(lambda: self._inflict(fault, rng))  # noqa: B023 - called at once
            if outcome is not None:
                self._event(f"{fault} went wrong: {outcome}")

    def _inflict(self, fault: str, rng: random.Random) -> None:
        if fault == CHAOS[0]:
            victim = self.workers[rng.randrange(2)]
            if victim is not None and victim.poll() is None:
                os.killpg(victim.pid, signal.SIGKILL)  # the supervisor restarts it
        elif fault == CHAOS[1]:
            self._cut_database_connections()
        elif fault == PARTITION:
            host = rng.choice(self.worker_hosts)
            host.set_link(False)  # as a pulled cable: connections stall, nothing is told
            try:
                self.stop.wait(rng.uniform(10, 20))  # within sweep.grace_period: the worker's trial lives on
            finally:
                host.set_link(True)
        else:
            os.killpg(self.server.pid, signal.SIGKILL)  # no goodbye: as a crashed machine would
            self.server.wait(timeout=30)
            self.start_tracking_server()

    def _cut_database_connections(self) -> None:
        import psycopg

        names = [url.rsplit("/", 1)[1] for url in (self.optuna_db, self.mlflow_db, f"{self.mlflow_db}_users")]
        with psycopg.connect(f"{self.postgres}/postgres", autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ANY(%s)", (names,))

    def promote_every_minute(self) -> None:
        while not self.stop.wait(60):
            self._event(f"promotion: {self._safely(self.promote_now)}")

    def promote_now(self) -> str:
        """A move of @champion: to another version (FORCE, so it moves, exercising the reload)."""
        import mlflow

        client = mlflow.MlflowClient(self.url)
        model = self.model_name
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{model}'"))
        champion = int(client.get_registered_model(model).aliases.get("champion", 0))
        others = [v for v in versions if v != champion]
        if not others:
            return "no other version yet"
        moved = self._cli(["promote", "--version", str(others[-1]), "--force", *self.overrides], "soak-trainer")
        return f"v{others[-1]}: exit {moved.returncode}"

    def _event(self, what: str) -> None:
        self.events.append({"t_s": round(time.monotonic() - self.began, 1), "event": what})
        log.info("soak: %s", what)

    # --- the minute's checks -----------------------------------------------------------------

    def check(self) -> dict:
        import mlflow
        import optuna

        from sentiment import tracking
        from sentiment.config import load_config
        from sentiment.search.storage import make_storage

        row: dict = {"minute": len(self.minutes_checked) + 1}
        client = mlflow.MlflowClient(self.url)
        cfg = load_config(self.study_overrides())
        storage = make_storage(cfg.sweep)
        studies, stale = {}, 0
        for summary in optuna.get_all_study_summaries(storage):
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            finished = [t for t in study.trials if t.state.is_finished() and t.state.name != "FAIL"]
            studies[summary.study_name] = {
                "finished": len(finished), "unique_params": len({json.dumps(t.params, sort_keys=True)
                                                                for t in finished}) == len(finished)}
            stale += len(storage._get_stale_trial_ids(study._study_id))
        storage.engine.dispose()
        experiment = client.get_experiment_by_name(cfg.tracking.experiment).experiment_id
        runs = client.search_runs([experiment], f"tags.{tracking.ROLE_TAG} = '{tracking.SWEEP}'")
        # A sweep run made in the last minute may still be settling a race with another worker's.
        settled = time.time() * 1000 - 60_000
        parents = Counter(run.data.tags.get(tracking.STUDY_TAG) for run in runs if run.info.start_time < settled)
        aliases = client.get_registered_model(cfg.tracking.model_name).aliases
        rss = server_rss_mb(self.serve.pid)
        self.rss_first = self.rss_first or rss
        row.update({
            "stale_running": stale,
            "studies_ok": all(s["finished"] <= cfg.sweep.n_trials and s["unique_params"] for s in studies.values()),
            "finished_trials": sum(s["finished"] for s in studies.values()),
            "sweep_runs_per_study": dict(parents),
            "champion": aliases.get("champion"), "previous": aliases.get("previous"),
            "good_not_200": sum(n for status, n in self.tally.good.items() if status != GOOD_STATUS),
            "good_ok": self.tally.good[GOOD_STATUS],
            "hostile_unexpected": sum(n for s, n in self.tally.hostile.items() if s not in HOSTILE_STATUSES),
            "serve_rss_mb": rss, "rss_growth": round(rss / self.rss_first - 1, 3),
        })
        row["ok"] = (row["stale_running"] == 0 and row["studies_ok"] and set(parents.values()) <= {1}
                     and row["champion"] != row["previous"] and row["good_not_200"] == 0
                     and row["hostile_unexpected"] == 0 and row["rss_growth"] < MEMORY_GROWTH_LIMIT)
        return row

    @contextlib.contextmanager
    def _as_admin(self):
        """This process's own MLflow calls (the checks, the promotions' reads) as the admin, for
        the whole soak: set once, as the threads share the environment."""
        login = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": self.passwords["admin"]}
        saved = {key: os.environ.get(key) for key in login}
        os.environ.update(login)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    # --- the run -----------------------------------------------------------------------------

    def run(self) -> dict:
        from sentiment.config import load_config
        from sentiment.data import load_test_reviews

        self.began = time.monotonic()
        self.dir = Path(tempfile.mkdtemp(prefix="sentiment-soak-"))
        cfg = load_config(self.overrides)
        self.model_name = cfg.tracking.model_name
        reviews = load_test_reviews(cfg).texts
        with self._as_admin():
            try:
                self._soak(reviews)
            finally:
                self.teardown()
        report = {"machine": machine_info(), "minutes": self.minutes, "hosts": self.hosts_used,
                  "overrides": self.overrides,
                  "events": self.events, "checks": self.minutes_checked, "worker_restarts": self.restarts,
                  "good_requests": dict(self.tally.good), "hostile_requests": dict(self.tally.hostile),
                  "hostile_not_one_line": self.tally.bad_bodies[:10], "versions_answering": dict(self.tally.versions),
                  "passed": bool(self.minutes_checked) and all(row["ok"] for row in self.minutes_checked),
                  "logs": str(self.dir)}
        return write_results(report, "soak")

    def _soak(self, reviews: list[str]) -> None:
        self.setup()
        self._event("set up: tracking server, users, a first champion, `serve`, 2 sweep processes")
        threads = [threading.Thread(target=self.client, args=(i, reviews), daemon=True) for i in range(4)]
        self.promoter = threading.Thread(target=self.promote_every_minute, daemon=True)
        threads += [threading.Thread(target=self.chaos, daemon=True), self.promoter]
        for thread in threads:
            thread.start()
        end = time.monotonic() + self.minutes * 60
        while time.monotonic() < end:
            minute_ends = min(end, time.monotonic() + 60)
            while time.monotonic() < minute_ends:  # a supervisor restarts a dead worker within seconds
                self.stop.wait(min(5, max(0.1, minute_ends - time.monotonic())))
                self.supervise_workers()
            row = self._safely(self.check)
            if not isinstance(row, dict):
                row = {"minute": len(self.minutes_checked) + 1, "ok": False, "error": row}
            self.minutes_checked.append(row)
            log.info("soak minute %s: %s", row["minute"], row)

    def _safely(self, step):
        """A check or promotion that could not be made is reported in the minute's row (a check
        that fails fails the minute), not the end of the soak."""
        try:
            return step()
        except Exception as err:  # noqa: BLE001 - reported in the minute's row
            return f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"


def _answering_version(reply: requests.Response) -> str | None:
    """Which registered version scored a request (each prediction row names it)."""
    try:
        return str(reply.json()["predictions"][0][VERSION_COLUMN])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def format_soak_report(report: dict) -> str:
    lines = [f"soak: {report['minutes']} min, {report['hosts']}, worker restarts {report['worker_restarts']}, "
             f"good requests {report['good_requests']}, hostile {report['hostile_requests']}, "
             f"versions answering {report['versions_answering']}",
             "events: " + "; ".join(f"{e['t_s']:.0f} s {e['event']}" for e in report["events"])]
    for row in report["checks"]:
        lines.append(json.dumps(row))
    lines.append(f"{'PASSED' if report['passed'] else 'FAILED'}; logs in {report['logs']}; written to {report['path']}")
    return "\n".join(lines)
