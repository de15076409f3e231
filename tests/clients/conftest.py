"""The clients talk to the live gateways of the server tests (the tiny worker behind them)."""

from tests.server.gateway.conftest import ab_gateway  # noqa: F401  (a fixture, used by name)
