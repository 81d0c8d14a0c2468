"""A network namespace for one data plane, joined to this host by two veth pairs, so that its bus link
can be cut while its clients and backends still reach it.

    host namespace                                   namespace <name>
    10.A.B.1 (clients connect from here,  ──serve──  10.A.B.2 (the data plane listens here)
              backends listen here)
    10.A.B.5 (NATS listens on 0.0.0.0)    ──bus────  10.A.B.6

``cut()`` takes the host end of the bus pair down (``ip link set ... down``); ``restore()`` brings it
back. Needs root and iproute2; ``unavailable()`` says why not when they are missing. The namespace and
both pairs are deleted on exit, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Namespace", "network_namespace", "unavailable"]


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=10)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def unavailable() -> str | None:
    """Why no network namespace can be made here, or None when one can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "network namespaces need iproute2's ip command"
    probe = "ofprobe" + uuid.uuid4().hex[:6]
    try:
        _ip("netns", "add", probe)
    except RuntimeError as exc:
        return f"cannot create a network namespace: {exc}"
    with contextlib.suppress(RuntimeError):
        _ip("netns", "del", probe)
    return None


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    serve_host: str  # this side of the serving pair: clients come from it, backends listen on it
    serve_inner: str  # the namespace's side: the data plane listens on it
    bus_host: str  # this side of the bus pair: NATS is reached on it
    bus_link: str  # the host end of the bus pair

    @property
    def prefix(self) -> list[str]:
        """Runs a command inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def cut(self) -> None:
        _ip("link", "set", self.bus_link, "down")

    def restore(self) -> None:
        _ip("link", "set", self.bus_link, "up")


def _pair(namespace: str, host_end: str, inner_end: str, host_address: str, inner_address: str) -> None:
    _ip("link", "add", host_end, "type", "veth", "peer", "name", inner_end, "netns", namespace)
    _ip("addr", "add", f"{host_address}/30", "dev", host_end)
    _ip("link", "set", host_end, "up")
    _ip("-n", namespace, "addr", "add", f"{inner_address}/30", "dev", inner_end)
    _ip("-n", namespace, "link", "set", inner_end, "up")


@contextlib.contextmanager
def network_namespace() -> Iterator[Namespace]:
    tag = uuid.uuid4().hex[:6]
    name = f"offaults{tag}"
    # A random /29 in 10.0.0.0/8, unlikely to meet another run's or the host's own.
    net = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}"
    namespace = Namespace(name, f"{net}.1", f"{net}.2", f"{net}.5", f"ofb{tag}")
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _pair(name, f"ofs{tag}", f"ofsi{tag}", namespace.serve_host, namespace.serve_inner)
        _pair(name, namespace.bus_link, f"ofbi{tag}", namespace.bus_host, f"{net}.6")
        yield namespace
    finally:
        for link in (f"ofs{tag}", namespace.bus_link):  # deleting one end deletes the pair
            with contextlib.suppress(RuntimeError):
                _ip("link", "del", link)
        with contextlib.suppress(RuntimeError):
            _ip("netns", "del", name)
