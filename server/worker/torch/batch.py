"""Where every view of a step sits in its model's forward, and prompt scoring over those outputs.

`StepBatch` records, per scheduled group, the row of each view in its model's forward and the
intermediate-layer logits its decoder asked for; after the forwards it hands `fusion.fuse_groups` the
`[G_m, V]` inputs of each method. `prompt_logprobs` does the same over prompt positions for prompt scoring.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..sequence import Sequence, SequenceGroup
from .model_runner import ForwardOutput, LayerRequest


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
        """`candidates`: group index -> the rows that replace its views this step (contrastive search). Groups
        computing a chunk of their prompt (`is_partial`) only add rows: they are not fused this step."""
        b = cls(groups, {m: [] for m in models}, layer_requests={m: [] for m in models},
                prompt_rows={m: set() for m in models}, hidden_rows={m: set() for m in models})
        for i, g in enumerate(groups):
            scoring = g.wants_prompt_logprobs and g.seqs[0].num_computed_tokens == 0
            needs_hidden = "candidates" in g.decoder.needs
            rows: dict[str, tuple[str, int]] = {}
            for seq in (candidates or {}).get(i, g.seqs):
                if g.is_partial and seq.num_new_tokens == 0:
                    continue  # a view waiting for an earlier view's chunk (chunked prefill)
                rows[seq.view] = (seq.model, len(b.seqs[seq.model]))
                if scoring:
                    b.prompt_rows[seq.model].add(len(b.seqs[seq.model]))
                if needs_hidden:
                    b.hidden_rows[seq.model].add(len(b.seqs[seq.model]))
                b.seqs[seq.model].append(seq)
            layers = {}
            for req in [] if g.is_partial else g.decoder.layer_logits():
                model, row = rows[req.view]
                layers[req.key] = (model, len(b.layer_requests[model]))
                b.layer_requests[model].append(LayerRequest(row, req.layer, req.final_norm, all_positions=scoring))
            b.rows.append(rows)
            b.layers.append(layers)
        return b

    def subset(self, indices: list[int]) -> StepBatch:
        """The same forwards seen through some of the groups only."""
        return StepBatch([self.groups[i] for i in indices], self.seqs, [self.rows[i] for i in indices],
                         [self.layers[i] for i in indices], self.layer_requests, self.prompt_rows,
                         self.hidden_rows, self.outputs)

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
            logits = self.outputs[model].logits  # [rows, V]
            idx = torch.tensor([self.rows[i][name][1] for i in members], device=logits.device)
            out[name] = logits[idx]  # [G_m, V]
        for key in self.layers[first]:
            out[key] = torch.stack([self.layer(i, key) for i in members])  # [G_m, V]
        return out


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
    if not g.decoder.supports_prompt_scoring:
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
