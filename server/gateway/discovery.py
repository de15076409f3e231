"""Workers found through DNS: a name that resolves to every worker's address (a Kubernetes headless Service).

`--worker-dns NAME:PORT` is resolved again before every round of health checks, so pods that come and go
are picked up and dropped without restarting the gateway.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_all(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (A and AAAA records), deduplicated and sorted."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


def parse_target(spec: str) -> tuple[str, int]:
    """`NAME:PORT` -> (NAME, PORT), with a clear error for anything else."""
    host, sep, port = spec.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--worker-dns wants NAME:PORT, got {spec!r}")
    return host.strip("[]"), int(port)


def _url(address: str, port: int) -> str:
    return f"http://[{address}]:{port}" if ":" in address else f"http://{address}:{port}"


class DnsDiscovery:
    def __init__(self, targets: list[str], resolve: Resolver = resolve_all):
        self.targets = [parse_target(t) for t in targets]
        self.resolve = resolve

    def __bool__(self) -> bool:
        return bool(self.targets)

    async def urls(self) -> list[str] | None:
        """Worker URLs behind every target now, or None when a lookup failed (keep what we had)."""
        out: list[str] = []
        for host, port in self.targets:
            try:
                addresses = await self.resolve(host, port)
            except OSError as exc:
                log.warning("cannot resolve workers at %s:%d: %s", host, port, exc)
                return None
            out += [_url(a, port) for a in addresses]
        return out
