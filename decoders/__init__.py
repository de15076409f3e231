"""Decoding methods: one module and one class per method, found by name in `REGISTRY`."""

from .base import Decoder, DecodingError, Fused, LayerLogits, MethodParams, RequestContext, View
from .cd import CD
from .cfg import CFG
from .contrastive_search import ContrastiveSearch
from .dola import DoLa
from .lol import LoL
from .lqcd import LQCD
from .overshadow import Overshadow
from .plain import Plain
from .ritual import Ritual
from .scmoe import SCMoE
from .vcd import VCD

REGISTRY: dict[str, type[Decoder]] = {cls.name: cls for cls in (Plain, CD, DoLa, LoL, CFG, LQCD, Overshadow, SCMoE,
                                                                    ContrastiveSearch, VCD, Ritual)}

__all__ = ["REGISTRY", "Decoder", "DecodingError", "Fused", "LayerLogits", "MethodParams", "RequestContext", "View",
           "supported_methods"]


def supported_methods() -> list[str]:
    return sorted(REGISTRY)
