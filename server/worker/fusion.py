"""From the views' logits of one step to one row of scores per group, for every backend.

Groups are fused per method (and `batch_key`, so views and layer keys match): each decoding method's
`fuse` gets the `[G_m, V]` logits of its requests' views in one call. The backend only says where each
view's logits are (`inputs_of`); the torch engine reads them from its forward outputs, vLLM from its batch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from counterpoint.decoders import Decoder


@dataclass
class FuseResult:
    scores: torch.Tensor  # [G, V] fused scores, -inf where the method rules a token out
    original: torch.Tensor  # [G, V] the original view's own logits (diagnostics: its own choice)
    contrast: list[torch.Tensor | None]  # per group: the contrast logits it used, for diagnostics
    silent: set[int] = field(default_factory=set)  # groups that emit no token this step (candidate prefill)
    decisions: list = field(default_factory=list)  # per group: its method's decision for `Decoder.record`, or None


def by_method(decoders: list[Decoder]) -> dict[tuple, list[int]]:
    """Indices of the decoders that fuse together: same method, same views and layer keys."""
    out: dict[tuple, list[int]] = defaultdict(list)
    for i, d in enumerate(decoders):
        out[(type(d), d.batch_key())].append(i)
    return out


def fuse_groups(decoders: list[Decoder], original: torch.Tensor,
                inputs_of: Callable[[list[int]], dict[str, torch.Tensor]]) -> FuseResult:
    """original `[G, V]`; `inputs_of(members)` -> view or layer key -> `[G_m, V]` for those groups."""
    groups = by_method(decoders)
    if len(groups) == 1:
        (cls, _), members = next(iter(groups.items()))
        fused = cls.fuse(decoders, inputs_of(members))
        return FuseResult(fused.scores, original, _rows(fused.contrast, len(decoders)), set(),
                          fused.decisions or [None] * len(decoders))
    scores = torch.empty_like(original)  # [G, V]
    contrast: list[torch.Tensor | None] = [None] * len(decoders)
    decisions: list = [None] * len(decoders)
    for (cls, _), members in groups.items():
        fused = cls.fuse([decoders[i] for i in members], inputs_of(members))
        scores[torch.tensor(members, device=scores.device)] = fused.scores
        for k, c, d in zip(members, _rows(fused.contrast, len(members)), fused.decisions or [None] * len(members)):
            contrast[k], decisions[k] = c, d
    return FuseResult(scores, original, contrast, set(), decisions)


def _rows(t: torch.Tensor | None, n: int) -> list[torch.Tensor | None]:
    return [None] * n if t is None else list(t)


def diagnostics(fused: FuseResult, rows: list[int], chosen: list[int]) -> dict[int, tuple[bool, float, int]]:
    """For the given groups: (did the contrast change the choice, JSD original || contrast, own choice)."""
    if not rows:
        return {}
    idx = torch.tensor(rows, device=fused.original.device)
    original = fused.original[idx]  # [D, V]
    contrast = torch.stack([fused.contrast[i] if fused.contrast[i] is not None else fused.original[i]
                            for i in rows])  # [D, V]
    vocab = min(original.shape[1], contrast.shape[1])
    div = jsd(original[:, :vocab], contrast[:, :vocab]).tolist()  # [D]
    own = original.argmax(-1).tolist()  # [D]
    return {i: (own[k] != chosen[i], div[k], own[k]) for k, i in enumerate(rows)}


def jsd(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (nats) between softmax(p) and softmax(q), rows `[G, V]` -> `[G]`."""
    p, q = torch.softmax(p_logits, -1), torch.softmax(q_logits, -1)  # [G, V]
    m = 0.5 * (p + q)
    lm = m.clamp_min(1e-30).log()
    kl_p = (p * (p.clamp_min(1e-30).log() - lm)).sum(-1)  # [G]
    kl_q = (q * (q.clamp_min(1e-30).log() - lm)).sum(-1)  # [G]
    return 0.5 * (kl_p + kl_q)
