"""The vLLM V1 logits processor that runs same-weights paired methods (cfg, lqcd, overshadow) in vLLM.

Each view of a paired group is its own vLLM request; its `SamplingParams.extra_args[KEY]` is
`(group key, view name)`. Once per step this processor finds the rows of every group in the batch, hands
their logits to the decoder's own `fuse` (the same code the PyTorch engine runs), picks the token with the
PyTorch engine's sampler (same temperature / top-k / top-p / seed / penalty semantics) and forces it into
every row of the group: every other entry becomes -inf, so vLLM's own sampler can only take that token.

A group is fused only when every live view has a row in this batch and all of them have produced exactly
the tokens the group has (vLLM may schedule views in different steps: admission under a full batch,
chunked prefill, preemption). Otherwise nothing is chosen for it; the backend sees a step without a pick
(or rows that disagree) and restarts or fails the group, so no token that is not the method's is ever sent.

The processor and the backend share `PairedRegistry` in memory: the engine core must run in the worker's
process (VLLM_ENABLE_V1_MULTIPROCESSING=0, one device, the uni-process executor).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from ..fusion import diagnostics, fuse_groups
from ..sampler import Sampler
from ..sequence import SequenceGroup

KEY = "counterpoint"  # extra_args key naming a row's (group key, view)


@dataclass
class Pick:
    """What the processor chose for one group at one step."""

    position: int  # the group's num_generated when the token was chosen
    token: int
    logprobs: torch.Tensor  # [V] log_softmax of the fused scores (the method's distribution)
    changed: bool  # diagnostics: the original view alone would have chosen another token
    divergence: float  # diagnostics: JSD(original || contrast)
    own: int  # diagnostics: the token the original view alone would have chosen
    decision: object  # the method's decision for this token (`Decoder.record`)


@dataclass
class PairedEntry:
    group: SequenceGroup  # our record: decoder, sampling, generated tokens, generator
    live: set[str]  # views still decoded (overshadow retires some after prefill)
    base: int = 0  # tokens the group had when its views were (re)submitted: they are in the vLLM prompts
    picks: list[Pick] = field(default_factory=list)  # filled by the processor, drained by the backend


class PairedRegistry:
    """Groups the backend runs as paired vLLM requests, by group key (written on the engine thread only)."""

    def __init__(self) -> None:
        self.entries: dict[str, PairedEntry] = {}
        self.vocab_size = 0


REGISTRY = PairedRegistry()


class PairedLogitsProcessor(LogitsProcessor):
    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.device = device
        self.rows: dict[int, tuple[str, str, list[int]]] = {}  # batch index -> (group key, view, output ids)
        self.sampler: Sampler | None = None

    def is_argmax_invariant(self) -> bool:
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        for index, params, _prompt, output_ids in batch_update.added:
            tag = (params.extra_args or {}).get(KEY) if params is not None else None
            if tag is not None:
                self.rows[index] = (tag[0], tag[1], output_ids)
            else:
                self.rows.pop(index, None)
        for index in batch_update.removed:
            self.rows.pop(index, None)
        for a, b, direction in batch_update.moved:
            ra, rb = self.rows.pop(a, None), self.rows.pop(b, None)
            if ra is not None:
                self.rows[b] = ra
            if rb is not None and direction == MoveDirectionality.SWAP:
                self.rows[a] = rb

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        by_group: dict[str, dict[str, int]] = defaultdict(dict)
        for index, (key, view, output_ids) in self.rows.items():
            entry = REGISTRY.entries.get(key)
            if (entry is not None and view in entry.live and index < logits.shape[0]
                    and entry.base + len(output_ids) == entry.group.num_generated):
                by_group[key][view] = index
        ready = [k for k, views in by_group.items() if set(views) >= REGISTRY.entries[k].live]
        if not ready:
            return logits
        vocab = REGISTRY.vocab_size or logits.shape[1]
        entries = [REGISTRY.entries[k] for k in ready]
        rows = [by_group[k] for k in ready]
        fused = self._fuse(entries, rows, logits[:, :vocab].float())
        if self.sampler is None:
            self.sampler = Sampler(vocab, logits.device)
        groups = [e.group for e in entries]
        tokens = self.sampler(fused.scores, groups).token_ids
        lps = torch.log_softmax(fused.scores, dim=-1)  # [G, V]
        diag = diagnostics(fused, list(range(len(entries))), tokens)
        for i, e in enumerate(entries):
            changed, divergence, own = diag[i]
            e.picks.append(Pick(e.group.num_generated, tokens[i], lps[i], changed, divergence, own,
                                fused.decisions[i]))
            index = torch.tensor(list(rows[i].values()), device=logits.device)
            logits[index] = -float("inf")
            logits[index, tokens[i]] = 0.0
        return logits

    @staticmethod
    def _fuse(entries: list[PairedEntry], rows: list[dict[str, int]], logits: torch.Tensor):
        """The shared fusion over the ready groups; their views' rows in this batch are `rows`."""
        original = logits[torch.tensor([r["original"] for r in rows], device=logits.device)]  # [G, V]

        def inputs_of(members: list[int]) -> dict[str, torch.Tensor]:
            views = rows[members[0]]
            return {v: logits[torch.tensor([rows[i][v] for i in members], device=logits.device)] for v in views}

        return fuse_groups([e.group.decoder for e in entries], original, inputs_of)
