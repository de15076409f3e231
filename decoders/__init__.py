"""Decoding methods: one module and one class per method, found by name in `REGISTRY`."""

from .base import Decoder, MethodParams, RequestContext, View
from .plain import Plain

REGISTRY: dict[str, type[Decoder]] = {cls.name: cls for cls in (Plain,)}

__all__ = ["REGISTRY", "Decoder", "MethodParams", "RequestContext", "View", "supported_methods"]


def supported_methods() -> list[str]:
    return sorted(REGISTRY)
