"""Per-row expert routing for Mixture-of-Experts models (scmoe's weak view), without touching model code.

A forward hook on every `*TopKRouter` module rewrites its (logits, weights, indices) output for the tokens
of weak rows: each such token goes to exactly one expert, the one at rank `weak_rank` of the router's
sorted probabilities, with weight 1. Strong rows keep the model's own top-k routing, so strong and weak rows
of many requests share one forward.
"""

from __future__ import annotations

import torch


class RoutingOverride:
    def __init__(self, model: torch.nn.Module):
        self.weak_rank: torch.Tensor | None = None  # [T] rank per packed token, -1 = normal routing
        self.routers = [m for m in model.modules() if type(m).__name__.endswith("TopKRouter")]
        for router in self.routers:
            router.register_forward_hook(self._hook)

    @property
    def is_moe(self) -> bool:
        return bool(self.routers)

    def _hook(self, module: torch.nn.Module, args, output):
        if self.weak_rank is None:
            return output
        router_logits, weights, indices = output  # [T, E], [T, k], [T, k]
        weak = self.weak_rank >= 0  # [T]
        ranked = router_logits.argsort(dim=-1, descending=True)  # [T, E]: softmax keeps the order
        chosen = ranked.gather(1, self.weak_rank.clamp(min=0)[:, None])  # [T, 1]
        weak_indices = indices.clone()
        weak_indices[:, :1] = chosen
        weak_weights = torch.zeros_like(weights)
        weak_weights[:, 0] = 1.0
        indices = torch.where(weak[:, None], weak_indices, indices)  # [T, k]
        weights = torch.where(weak[:, None], weak_weights, weights)  # [T, k]
        return router_logits, weights, indices
