"""One batched forward of one model over every scheduled view.

`prepare_inputs` packs the uncomputed tokens of all rows into one sequence (prefill and decode rows
together) and describes where they live in the paged cache; `run` calls the unmodified transformers model
with our attention implementation and returns the logits of the positions the engine asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..sequence import Sequence
from .moe_routing import RoutingOverride
from .paged_attention import ATTN_IMPLEMENTATION, KVCache, PagedBatch


@dataclass
class LayerRequest:
    row: int  # which row of this forward
    layer: int  # hidden state after this layer (0 = embeddings)
    final_norm: bool  # apply the model's final norm before lm_head
    all_positions: bool = False  # every new token of the row (prompt scoring), not just the last


@dataclass
class ForwardOutput:
    logits: torch.Tensor  # [num_rows, vocab] at each row's last position, float32
    prompt_logits: dict[int, torch.Tensor]  # row -> [num_new_tokens, vocab] for rows that asked for all
    layer_logits: list[torch.Tensor]  # per LayerRequest: [vocab] (last position) or [num_new_tokens, vocab]
    hidden: dict[int, torch.Tensor]  # row -> [num_new_tokens, hidden] last-layer states, for rows that asked


class ModelRunner:
    def __init__(self, model: torch.nn.Module, cache: KVCache):
        self.model = model
        self.cache = cache
        self.device = cache.keys.device
        self.is_vision = getattr(model.config, "vision_config", None) is not None
        # Only the language model reads the paged cache; a vision tower keeps ordinary attention.
        model.set_attn_implementation({"text_config": ATTN_IMPLEMENTATION, "vision_config": "sdpa"}
                                      if self.is_vision else ATTN_IMPLEMENTATION)
        self.routing = RoutingOverride(model)

    def prepare_inputs(self, seqs: list[Sequence]) -> tuple[torch.Tensor, torch.Tensor, PagedBatch]:
        bs = self.cache.block_size
        tokens: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        q_lens: list[int] = []
        ctx_lens: list[int] = []
        for seq in seqs:
            start = seq.num_computed_tokens
            end = start + seq.num_new_tokens
            tokens += seq.token_ids[start:end]
            positions += range(start, end)
            table = seq.block_table
            slots += [table[p // bs] * bs + p % bs for p in range(start, end)]
            if seq.scratch_slot is not None:  # a candidate row: its one new token goes to scratch space
                slots[-1] = seq.scratch_slot
            q_lens.append(end - start)
            ctx_lens.append(end)
        dev = self.device
        input_ids = torch.tensor(tokens, device=dev).unsqueeze(0)  # [1, T]
        position_ids = torch.tensor(positions, device=dev).unsqueeze(0)  # [1, T]
        slot_mapping = torch.tensor(slots, device=dev)  # [T]
        batch = self._describe(seqs, slot_mapping, q_lens, ctx_lens)
        return input_ids, position_ids, batch

    def _describe(self, seqs: list[Sequence], slot_mapping: torch.Tensor, q_lens: list[int],
                  ctx_lens: list[int]) -> PagedBatch:
        dev, bs = self.device, self.cache.block_size
        num_rows, max_q, max_ctx = len(seqs), max(q_lens), max(ctx_lens)
        if num_rows == 1 and q_lens[0] == ctx_lens[0]:
            return PagedBatch(self.cache, slot_mapping, slot_mapping[None], None, None, None, True)
        max_blocks = -(-max_ctx // bs)
        tables = torch.tensor([s.block_table[:max_blocks] + [0] * (max_blocks - len(s.block_table[:max_blocks]))
                               for s in seqs], device=dev)  # [B, max_blocks]; a candidate's last column is patched
        key_pos = torch.arange(max_ctx, device=dev)  # [K]
        kv_slots = tables[:, key_pos // bs] * bs + key_pos % bs  # [B, K]
        for r, s in enumerate(seqs):
            if s.scratch_slot is not None:
                kv_slots[r, ctx_lens[r] - 1] = s.scratch_slot
        ctx = torch.tensor(ctx_lens, device=dev)  # [B]
        if max_q == 1 and min(ctx_lens) == max_ctx:
            return PagedBatch(self.cache, slot_mapping, kv_slots, None, None, None, False)
        q = torch.tensor(q_lens, device=dev)  # [B]
        offs = torch.arange(max_q, device=dev)  # [Q]
        q_pos = ctx[:, None] - q[:, None] + torch.minimum(offs[None], q[:, None] - 1)  # [B, Q] (padding repeats)
        mask = (key_pos[None, None, :] <= q_pos[:, :, None]).unsqueeze(1)  # [B, 1, Q, K]
        if max_q == 1:
            return PagedBatch(self.cache, slot_mapping, kv_slots, None, None, mask, False)
        starts = torch.cumsum(q, 0) - q  # [B] first packed index of each row
        query_index = starts[:, None] + torch.minimum(offs[None], q[:, None] - 1)  # [B, Q]
        row_of_token = torch.repeat_interleave(torch.arange(num_rows, device=dev), q)  # [T]
        offset_in_row = torch.arange(len(slot_mapping), device=dev) - starts[row_of_token]  # [T]
        output_index = row_of_token * max_q + offset_in_row  # [T] into the flattened [B * Q]
        return PagedBatch(self.cache, slot_mapping, kv_slots, query_index, output_index, mask, False)

    @torch.inference_mode()
    def run(self, seqs: list[Sequence], all_logits_rows: set[int] = frozenset(),
            layer_requests: list[LayerRequest] = (), hidden_rows: set[int] = frozenset()) -> ForwardOutput:
        """Forward every row's uncomputed tokens; return last-position logits (and all, where asked)."""
        input_ids, position_ids, batch = self.prepare_inputs(seqs)
        q_lens = torch.tensor([s.num_new_tokens for s in seqs], device="cpu")  # [B] host-side bookkeeping
        last = q_lens.cumsum(0) - 1  # [B] packed index of each row's last token
        starts = last + 1 - q_lens  # [B]
        keep = torch.cat([last, *(torch.arange(int(starts[r]), int(last[r]) + 1, device="cpu")
                                  for r in sorted(all_logits_rows))])
        # With layer logits, every lm_head row (final and intermediate) goes through one matmul below: on a CPU
        # one call with many rows costs far less than separate calls (benchmarks/matmul_rows.py).
        joint = bool(layer_requests) and not getattr(self.model.config, "final_logit_softcapping", None)
        self.routing.weak_rank = self._weak_ranks(seqs, q_lens)
        try:
            out = self.model(input_ids=input_ids, position_ids=position_ids, paged=batch,
                             logits_to_keep=(keep[:0] if joint else keep).to(self.device), use_cache=False,
                             output_hidden_states=bool(layer_requests or hidden_rows), **self._image_inputs(seqs))
        finally:
            self.routing.weak_rank = None
        if joint:
            final = out.hidden_states[-1][0, keep.to(self.device)]  # [len(keep), hidden], final norm applied
            logits, layers = self._layer_logits(out.hidden_states, layer_requests, starts, last, final)
        else:
            logits = out.logits[0].float()  # [len(keep), vocab]
            layers = self._layer_logits(out.hidden_states, layer_requests, starts, last)[1] if layer_requests else []
        prompt_logits, offset = {}, len(seqs)
        for r in sorted(all_logits_rows):
            n = int(q_lens[r])
            prompt_logits[r] = logits[offset:offset + n]  # [q_len, vocab]
            offset += n
        hidden = {r: out.hidden_states[-1][0, int(starts[r]):int(last[r]) + 1].float() for r in hidden_rows}
        for seq in seqs:
            seq.num_computed_tokens += seq.num_new_tokens
            seq.num_scheduled = None
        return ForwardOutput(logits[:len(seqs)], prompt_logits, layers, hidden)

    def _image_inputs(self, seqs: list[Sequence]) -> dict[str, torch.Tensor]:
        """Pixel inputs of the rows whose image tokens this forward computes, in packed order."""
        rows = [s.images for s in seqs if s.needs_images]
        if not rows:
            return {}
        from ..vision import concat
        return concat(rows, self.device, next(self.model.parameters()).dtype)

    def _weak_ranks(self, seqs: list[Sequence], q_lens: torch.Tensor) -> torch.Tensor | None:
        ranks = [-1 if s.weak_rank is None else s.weak_rank for s in seqs]
        if not self.routing.is_moe or max(ranks) < 0:
            return None
        return torch.repeat_interleave(torch.tensor(ranks, device="cpu"), q_lens).to(self.device)  # [T]

    def _layer_logits(self, hidden_states: tuple[torch.Tensor, ...], requests: list[LayerRequest],
                      starts: torch.Tensor, last: torch.Tensor, final: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """Intermediate-layer logits (and, given `final` hidden rows, the final logits) with one lm_head matmul."""
        picks = [] if final is None else [final]
        sizes = [] if final is None else [len(final)]
        for req in requests:
            idx = (torch.arange(int(starts[req.row]), int(last[req.row]) + 1, device="cpu") if req.all_positions
                   else last[req.row:req.row + 1])
            h = hidden_states[req.layer][0, idx.to(self.device)]  # [n, hidden]
            picks.append(self.final_norm(h) if req.final_norm else h)
            sizes.append(len(idx))
        logits = self.model.get_output_embeddings()(torch.cat(picks)).float()  # [sum n, vocab]
        parts = list(logits.split(sizes))
        final_logits = parts.pop(0) if final is not None else None
        return final_logits, [p if req.all_positions else p[0] for p, req in zip(parts, requests)]

    def final_norm(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.base_model.norm(h) if hasattr(self.model.base_model, "norm") else \
            self.model.get_decoder().norm(h)
