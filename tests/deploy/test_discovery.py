"""Worker discovery through DNS (`--worker-dns NAME:PORT`), as the gateway uses a Kubernetes headless Service."""

from __future__ import annotations

import asyncio
import socket

import pytest
from counterpoint.server.cli import parser
from counterpoint.server.gateway.discovery import parse_target, resolve_all
from counterpoint.server.gateway.workers import WorkerPool


def test_parse_target():
    assert parse_target("counterpoint-workers:8100") == ("counterpoint-workers", 8100)
    assert parse_target("[::1]:8100") == ("::1", 8100)
    for bad in ("counterpoint-workers", ":8100", "name:http"):
        with pytest.raises(ValueError, match="NAME:PORT"):
            parse_target(bad)


def test_real_resolver_finds_loopback():
    assert "127.0.0.1" in asyncio.run(resolve_all("localhost", 80))


def test_cli_accepts_worker_dns():
    ns = parser().parse_args(["gateway", "--worker-dns", "workers:8100", "--worker-dns", "more:9000"])
    assert ns.worker_dns == ["workers:8100", "more:9000"]


def test_pool_follows_dns_records(tiny_worker):
    """Every address the name resolves to becomes a worker; records that vanish drop it; a failed lookup
    keeps the last known set."""
    records: dict[str, object] = {"value": ["127.0.0.1"]}

    async def fake_resolve(host: str, port: int) -> list[str]:
        assert (host, port) == ("workers.test", tiny_worker.port)
        if isinstance(records["value"], Exception):
            raise records["value"]
        return records["value"]

    async def scenario() -> list[dict[str, bool]]:
        pool = WorkerPool([], dns=[f"workers.test:{tiny_worker.port}"], resolve=fake_resolve, health_timeout=1.0)
        seen = []
        try:
            for value in (["127.0.0.1"], ["127.0.0.1", "::1"], socket.gaierror("temporary failure"), []):
                records["value"] = value
                await pool.refresh()
                seen.append({w.url: w.healthy for w in pool.workers})
        finally:
            await pool.close()
        return seen

    ipv4, ipv6 = f"http://127.0.0.1:{tiny_worker.port}", f"http://[::1]:{tiny_worker.port}"
    one, two, failed, none = asyncio.run(scenario())
    assert one == {ipv4: True}
    assert set(two) == {ipv4, ipv6} and two[ipv4] is True  # ::1 is not listened on: added, but not healthy
    assert set(failed) == {ipv4, ipv6}
    assert none == {}


def test_gateway_from_settings_serves_through_a_dns_name(tiny_worker):
    """`counterpoint gateway --worker-dns localhost:PORT`: settings -> pool -> a worker found by name."""
    import httpx
    from counterpoint.server.config import Settings
    from counterpoint.server.gateway.app import create_app

    from tests.conftest import ThreadServer

    app = create_app(Settings(worker_dns=[f"localhost:{tiny_worker.port}"], health_interval=0.5))
    with ThreadServer(app) as gateway:
        assert f"http://127.0.0.1:{tiny_worker.port}" in app.state.pool.by_url
        r = httpx.post(f"{gateway.url}/v1/completions", timeout=60,
                       json={"model": "tiny", "prompt": "Hi", "max_tokens": 2, "temperature": 0})
        assert r.status_code == 200, r.text
