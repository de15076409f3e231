"""A gateway with an outcome log and an A/B experiment, in front of the shared tiny worker."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import ThreadServer

EXPERIMENTS = {"greedy-ab": {"arms": [{"name": "control", "weight": 1, "decoding": "plain"},
                                      {"name": "treatment", "weight": 1, "decoding": {"method": "plain"}}]}}


def ab_settings(worker_url: str, log_path):
    from counterpoint.server.config import Settings
    return Settings(worker_urls=[worker_url], outcome_log=str(log_path), experiments=EXPERIMENTS)


@pytest.fixture(scope="module")
def ab_gateway(tiny_worker, tmp_path_factory):
    from counterpoint.server.gateway.app import create_app
    log_path = tmp_path_factory.mktemp("outcomes") / "outcomes.db"
    app = create_app(ab_settings(tiny_worker.url, log_path))
    with ThreadServer(app) as server:
        server.app, server.log_path = app, log_path
        yield server


@pytest.fixture()
def ab_client(ab_gateway):
    with httpx.Client(base_url=ab_gateway.url, timeout=60) as client:
        yield client
