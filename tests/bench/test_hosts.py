"""The soak's worker hosts: network namespaces that look like other machines (root only; skipped
where the kernel or the user cannot make them)."""

import json
import subprocess

import pytest

from sentiment.bench import soak
from sentiment.bench.hosts import HostsUnavailable, Relay, make_worker_hosts
from sentiment.search.recovery import is_dead, this_worker

POSTGRES = ("127.0.0.1", 5432)


@pytest.fixture
def worker_host():
    try:
        hosts = make_worker_hosts(1)
    except HostsUnavailable as err:
        pytest.skip(f"no network namespaces here: {err}")
    yield hosts[0]
    hosts[0].remove()


def _run_on(host, code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(host.command(["-c", code]), capture_output=True, text=True, timeout=timeout)


@pytest.mark.integration
def test_a_worker_host_is_another_machine_that_reaches_the_database_over_its_own_network(worker_host):
    relay = Relay(worker_host.host_address, POSTGRES)
    try:
        code = ("import json, psycopg; from sentiment.search.recovery import this_worker; "
                f"c = psycopg.connect('postgresql://postgres@{relay.address}:{relay.port}/postgres'); "
                "print(json.dumps({'worker': this_worker(), 'one': c.execute('select 1').fetchone()[0]}))")
        done = _run_on(worker_host, code)
        assert done.returncode == 0, done.stderr[-500:]
        seen = json.loads(done.stdout)
        assert seen["one"] == 1  # PostgreSQL answered through the relay on the veth pair
        worker, here = seen["worker"], this_worker()
        assert worker["host"] == worker_host.hostname != here["host"]
        assert worker["machine"] != here["machine"]  # another pid namespace: another machine
        assert not is_dead(worker)  # from here its end cannot be seen: only its heartbeat tells

        worker_host.set_link(False)  # a pulled cable
        cut = _run_on(worker_host, f"import socket; socket.create_connection(('{relay.address}', {relay.port}), timeout=2)")
        assert cut.returncode != 0 and "timed out" in cut.stderr
        worker_host.set_link(True)
        again = _run_on(worker_host, f"import socket; socket.create_connection(('{relay.address}', {relay.port}), timeout=10)")
        assert again.returncode == 0, again.stderr[-300:]
    finally:
        relay.stop()


@pytest.mark.integration
def test_the_hosts_are_gone_after_remove(worker_host):
    worker_host.remove()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert worker_host.namespace not in listed
    links = subprocess.run(["ip", "-brief", "link"], capture_output=True, text=True).stdout
    assert worker_host._host_link not in links  # this end of the veth pair went with it


def test_where_hosts_cannot_be_made_auto_soaks_on_loopback_and_namespaces_refuses(monkeypatch):
    def refuse(count):
        raise HostsUnavailable("`ip netns add x` failed: Operation not permitted")

    monkeypatch.setattr(soak, "make_worker_hosts", refuse)
    auto = soak.Soak(1, [], hosts="auto")
    auto.make_worker_hosts()
    assert auto.worker_hosts == [] and auto.hosts_used.startswith("loopback (no worker hosts: `ip netns add")
    assert "tracking.uri=http://127.0.0.1" in " ".join(auto.worker_overrides(0))
    with pytest.raises(HostsUnavailable, match="Operation not permitted"):
        soak.Soak(1, [], hosts="namespaces").make_worker_hosts()
