"""Worker "machines" for the soak: network namespaces joined to this one by veth pairs (root only).

Each worker host has its own network stack (a /30 of 10.231.<n>.0/24: this machine .1, the host .2),
its own host name and its own pid namespace, so to the rest of the system it is another machine:
its trials carry another machine id (search.recovery: no pid check can see it die, only its
heartbeat going stale), it reaches the tracking server over a real network path (logins over
plain http: tracking.allow_plain_http, the server's allowed hosts) and the database over that
path too. PostgreSQL here listens on loopback only, and the soak leaves the machine's database
settings alone: a relay on this side of each veth pair carries the workers' connections to it.
A partition (the link down for some seconds) cuts a worker off as a pulled cable would.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field

SUBNET = "10.231"  # 10.231.<network>.<4 * worker + 1 | 2>/30: this machine, the worker host
# auto: worker hosts where root allows, else loopback; namespaces: worker hosts or an error.
HOSTS_MODES = ("auto", "namespaces", "loopback")


class HostsUnavailable(RuntimeError):
    """Namespaces cannot be made here (not root, no `ip`/`unshare`, or the kernel refuses)."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode:
        raise HostsUnavailable(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")


@dataclass
class WorkerHost:
    index: int
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    network: int = 0  # the third octet: one per set of hosts, so two soaks (or tests) never share addresses

    @property
    def namespace(self) -> str:
        return f"sentiment-{self.tag}-w{self.index}"

    @property
    def hostname(self) -> str:
        return f"soak-worker-{self.index}"

    @property
    def host_address(self) -> str:
        """This machine's address on the worker's network: where it finds the servers."""
        return f"{SUBNET}.{self.network}.{4 * self.index + 1}"

    @property
    def worker_address(self) -> str:
        return f"{SUBNET}.{self.network}.{4 * self.index + 2}"

    @property
    def _host_link(self) -> str:  # interface names are at most 15 characters
        return f"ss{self.tag}h{self.index}"

    @property
    def _worker_link(self) -> str:
        return f"ss{self.tag}w{self.index}"

    def create(self) -> None:
        _ip("netns", "add", self.namespace)
        try:
            _ip("link", "add", self._host_link, "type", "veth", "peer", "name", self._worker_link)
            _ip("link", "set", self._worker_link, "netns", self.namespace)
            _ip("addr", "add", f"{self.host_address}/30", "dev", self._host_link)
            _ip("link", "set", self._host_link, "up")
            inside = ("netns", "exec", self.namespace, "ip")
            _ip(*inside, "addr", "add", f"{self.worker_address}/30", "dev", self._worker_link)
            _ip(*inside, "link", "set", self._worker_link, "up")
            _ip(*inside, "link", "set", "lo", "up")
            done = subprocess.run(self.command(["-c", "import socket; print(socket.gethostname())"]),
                                  capture_output=True, text=True, timeout=60)
            if done.returncode or done.stdout.strip() != self.hostname:
                raise HostsUnavailable(f"a process in {self.namespace} could not start as {self.hostname}: "
                                       f"{done.stderr.strip()[-300:]}")
        except Exception:
            self.remove()
            raise

    def remove(self) -> None:
        """Delete the namespace (its end of the veth pair goes with it, and so this end)."""
        subprocess.run(["ip", "netns", "delete", self.namespace], capture_output=True)
        subprocess.run(["ip", "link", "delete", self._host_link], capture_output=True)

    def command(self, python_args: list[str]) -> list[str]:
        """argv running `python <python_args>` as this host: its network, host name and pid
        namespace (the process is pid 1 there; killing the outer process kills it too)."""
        return ["ip", "netns", "exec", self.namespace,
                "unshare", "--uts", "--pid", "--fork", "--kill-child", "--mount-proc",
                "sh", "-c", 'hostname "$0" && exec "$@"', self.hostname, sys.executable, *python_args]

    def set_link(self, up: bool) -> None:
        _ip("link", "set", self._host_link, "up" if up else "down")


class Relay:
    """TCP from (listen address, an own port) to a fixed target, a thread per direction; stop()
    closes the listener and every connection (as the database's end going away would)."""

    def __init__(self, listen_address: str, target: tuple[str, int]):
        self.target = target
        self._listener = socket.create_server((listen_address, 0))
        self.address, self.port = self._listener.getsockname()[:2]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name=f"relay {self.address}").start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()  # the database is down: the worker sees a refused connection
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:  # one side gone: the connection is over for both
            with self._lock:
                self._open.difference_update((source, sink))
            _close(source)
            _close(sink)

    def stop(self) -> None:
        self._listener.close()
        with self._lock:
            ends, self._open = list(self._open), set()
        for end in ends:
            _close(end)


def _close(end: socket.socket) -> None:
    """Shut down (waking a thread blocked in recv on it) and close; already closed is fine."""
    try:
        end.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    end.close()


def make_worker_hosts(count: int) -> list[WorkerHost]:
    """count worker hosts, or HostsUnavailable (with every one made so far removed again)."""
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            raise HostsUnavailable(f"`{tool}` is not installed")
    tag, network, hosts = secrets.token_hex(3), _free_network(), []
    try:
        for index in range(count):
            host = WorkerHost(index, tag, network)
            host.create()
            hosts.append(host)
    except Exception:
        for host in hosts:
            host.remove()
        raise
    return hosts


def _free_network() -> int:
    """A third octet of SUBNET no interface here has an address in."""
    shown = subprocess.run(["ip", "-brief", "addr"], capture_output=True, text=True).stdout
    free = [n for n in range(256) if f"{SUBNET}.{n}." not in shown]
    if not free:
        raise HostsUnavailable(f"every {SUBNET}.x.0/24 is in use here")
    return secrets.choice(free)
