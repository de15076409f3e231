"""From one step's forward outputs to one row of scores per group.

`StepBatch` records where every view of every scheduled group sits in its model's forward, and which
intermediate-layer logits each decoder asked for. `fuse` hands each decoding method the `[G_m, V]` logits of
its requests' views in one call; `prompt_logprobs` does the same over prompt positions for prompt scoring.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch

from .torch.model_runner import ForwardOutput, LayerRequest
from .sequence import Sequence, SequenceGroup


@dataclass
class StepBatch:
    groups: list[SequenceGroup]
    seqs: dict[str, list[Sequence]]  # model -> the rows of its forward, in order
    rows: list[dict[str, tuple[str, int]]] = field(default_factory=list)  # per group: view -> (model, row)
    layers: list[dict[str, tuple[str, int]]] = field(default_factory=list)  # per group: layer key -> (model, i)
    layer_requests: dict[str, list[LayerRequest]] = field(default_factory=dict)  # model -> requests
    prompt_rows: dict[str, set[int]] = field(default_factory=dict)  # model -> rows that need every position
    hidden_rows: dict[str, set[int]] = field(default_factory=dict)  # model -> rows whose hidden states are needed
    outputs: dict[str, ForwardOutput] = field(default_factory=dict)  # model -> its forward's output

    @classmethod
    def build(cls, groups: list[SequenceGroup], models: list[str],
              candidates: dict[int, list[Sequence]] | None = None) -> StepBatch:
        """`candidates`: group index -> the rows that replace its views this step (contrastive search)."""
        b = cls(groups, {m: [] for m in models}, layer_requests={m: [] for m in models},
                prompt_rows={m: set() for m in models}, hidden_rows={m: set() for m in models})
        for i, g in enumerate(groups):
            scoring = g.wants_prompt_logprobs and g.seqs[0].num_computed_tokens == 0
            needs_hidden = getattr(g.decoder, "expands_candidates", False)
            rows: dict[str, tuple[str, int]] = {}
            for seq in (candidates or {}).get(i, g.seqs):
                rows[seq.view] = (seq.model, len(b.seqs[seq.model]))
                if scoring:
                    b.prompt_rows[seq.model].add(len(b.seqs[seq.model]))
                if needs_hidden:
                    b.hidden_rows[seq.model].add(len(b.seqs[seq.model]))
                b.seqs[seq.model].append(seq)
            layers = {}
            for req in g.decoder.layer_logits():
                model, row = rows[req.view]
                layers[req.key] = (model, len(b.layer_requests[model]))
                b.layer_requests[model].append(LayerRequest(row, req.layer, req.final_norm, all_positions=scoring))
            b.rows.append(rows)
            b.layers.append(layers)
        return b

    def view(self, i: int, name: str) -> torch.Tensor:
        model, row = self.rows[i][name]
        return self.outputs[model].logits[row]  # [V]

    def layer(self, i: int, key: str) -> torch.Tensor:
        model, j = self.layers[i][key]
        t = self.outputs[model].layer_logits[j]
        return t if t.dim() == 1 else t[-1]  # [V] at the last position

    def method_inputs(self, members: list[int]) -> dict[str, torch.Tensor]:
        """view and layer keys -> `[G_m, V]` for the given groups (all of one method)."""
        first = members[0]
        out = {}
        for name, (model, _) in self.rows[first].items():
            idx = torch.tensor([self.rows[i][name][1] for i in members])
            out[name] = self.outputs[model].logits[idx]  # [G_m, V]
        for key in self.layers[first]:
            out[key] = torch.stack([self.layer(i, key) for i in members])  # [G_m, V]
        return out


@dataclass
class FuseResult:
    scores: torch.Tensor  # [G, V]
    original: torch.Tensor  # [G, V] the original view's own logits
    contrast: list[torch.Tensor | None]  # per group: the contrast logits it used, for diagnostics
    silent: set[int] = field(default_factory=set)  # groups that emit no token this step (candidate prefill)


def fuse(batch: StepBatch) -> FuseResult:
    groups = batch.groups
    if any(getattr(g.decoder, "expands_candidates", False) for g in groups):
        return _fuse_with_candidates(batch)
    original = torch.stack([batch.view(i, "original") for i in range(len(groups))])  # [G, V]
    by_method = _by_key(list(enumerate(groups)))
    if len(by_method) == 1 and all(len(r) == 1 for r in batch.rows) and not any(batch.layers):
        (cls, _), members = next(iter(by_method.items()))
        fused = cls.fuse([g.decoder for g in groups], {"original": original})
        return FuseResult(fused.scores, original, _rows(fused.contrast, len(groups)))
    scores = torch.empty_like(original)  # [G, V]
    contrast: list[torch.Tensor | None] = [None] * len(groups)
    for (cls, _), members in by_method.items():
        fused = cls.fuse([groups[i].decoder for i in members], batch.method_inputs(members))
        scores[torch.tensor(members)] = fused.scores
        for k, c in zip(members, _rows(fused.contrast, len(members))):
            contrast[k] = c
    return FuseResult(scores, original, contrast)


def _fuse_with_candidates(batch: StepBatch) -> FuseResult:
    """Contrastive-search groups pick among their candidate rows; all others fuse as usual."""
    groups = batch.groups
    search = [i for i, g in enumerate(groups) if getattr(g.decoder, "expands_candidates", False)]
    others = [i for i in range(len(groups)) if i not in search]
    vocab = next(iter(batch.outputs.values())).logits.shape[-1]
    scores, original = torch.empty(len(groups), vocab), torch.empty(len(groups), vocab)  # [G, V]
    contrast: list[torch.Tensor | None] = [None] * len(groups)
    silent: set[int] = set()
    if others:
        sub = StepBatch([groups[i] for i in others], batch.seqs, [batch.rows[i] for i in others],
                        [batch.layers[i] for i in others], batch.layer_requests, batch.prompt_rows,
                        batch.hidden_rows, batch.outputs)
        part = fuse(sub)
        scores[others], original[others] = part.scores, part.original
        for k, i in enumerate(others):
            contrast[i] = part.contrast[k]
    expanding = [i for i in search if "cand:0" in batch.rows[i]]
    for i in search:
        if i not in expanding:  # prefill: remember the logits and hidden states, emit nothing yet
            model, row = batch.rows[i]["original"]
            out = batch.outputs[model]
            groups[i].decoder.observe_prefill(out.logits[row], out.hidden[row])
            scores[i] = original[i] = out.logits[row]
            silent.add(i)
    for (cls, _), members in _by_key([(i, groups[i]) for i in expanding]).items():
        k = groups[members[0]].decoder.params.top_k
        out = batch.outputs["main"]
        rows = torch.tensor([[batch.rows[i][f"cand:{j}"][1] for j in range(k)] for i in members])  # [G_m, k]
        hidden = torch.stack([out.hidden[int(r)][0] for r in rows.flatten()]).view(*rows.shape, -1)  # [G_m, k, H]
        picked = cls.select([groups[i].decoder for i in members], out.logits[rows], hidden)
        scores[torch.tensor(members)] = picked.scores
        original[torch.tensor(members)] = torch.stack([groups[i].decoder.proposed for i in members])
    return FuseResult(scores, original, contrast, silent)


def _by_key(items: list[tuple[int, SequenceGroup]]) -> dict[tuple, list[int]]:
    out: dict[tuple, list[int]] = defaultdict(list)
    for i, g in items:
        out[(type(g.decoder), g.decoder.batch_key())].append(i)
    return out


def _rows(t: torch.Tensor | None, n: int) -> list[torch.Tensor | None]:
    return [None] * n if t is None else list(t)


def prompt_logprobs(batch: StepBatch, i: int) -> torch.Tensor:
    """Fused log-probs `[P-1, V]` predicting prompt tokens 1..P-1 of group i's original view.

    Contrast views are aligned with the original from the end: a position is fused when its next token lies
    in the longest common suffix of every view's prompt (the continuation a harness scores); earlier positions
    keep the original view's log-probs. Layer logits align exactly (same row).
    """
    g = batch.groups[i]
    model, row = batch.rows[i]["original"]
    original = batch.outputs[model].prompt_logits[row]  # [P, V]
    lp = torch.log_softmax(original[:-1], dim=-1)  # [P-1, V]
    if not getattr(type(g.decoder), "supports_prompt_scoring", True):
        return lp
    num_prompt = g.seqs[0].num_prompt_tokens
    suffix = _aligned_suffix(g, {name: len(batch.outputs[m].prompt_logits[r]) for name, (m, r) in batch.rows[i].items()})
    first = max(num_prompt - suffix - 1, 0)  # first position whose next token is in the common suffix
    n = num_prompt - 1 - first
    if n <= 0:
        return lp
    inputs = {}
    for name, (m, r) in batch.rows[i].items():
        logits = batch.outputs[m].prompt_logits[r]  # [Q, V] computed positions of that view
        inputs[name] = logits[-1 - n:-1]  # [n, V], aligned from the end
    for key, (m, j) in batch.layers[i].items():
        inputs[key] = batch.outputs[m].layer_logits[j][-1 - n:-1]  # [n, V]
    fused = type(g.decoder).fuse([g.decoder] * n, inputs).scores  # [n, V]
    lp = lp.clone()
    lp[first:] = torch.log_softmax(fused, dim=-1)
    return lp


def _aligned_suffix(g: SequenceGroup, computed: dict[str, int]) -> int:
    """Length of the prompt suffix all views share and computed in this forward (their logits exist)."""
    ref = g.seqs[0].token_ids[:g.seqs[0].num_prompt_tokens]
    suffix = len(ref)
    for seq in g.seqs[1:]:
        other = seq.token_ids[:seq.num_prompt_tokens]
        k = 0
        while k < min(len(ref), len(other)) and ref[-1 - k] == other[-1 - k]:
            k += 1
        suffix = min(suffix, k, computed[seq.view] - 1)
    return max(suffix, 0)


def jsd(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (nats) between softmax(p) and softmax(q), rows `[G, V]` -> `[G]`."""
    p, q = torch.softmax(p_logits, -1), torch.softmax(q_logits, -1)  # [G, V]
    m = 0.5 * (p + q)
    lm = m.clamp_min(1e-30).log()
    kl_p = (p * (p.clamp_min(1e-30).log() - lm)).sum(-1)  # [G]
    kl_q = (q * (q.clamp_min(1e-30).log() - lm)).sum(-1)  # [G]
    return 0.5 * (kl_p + kl_q)

