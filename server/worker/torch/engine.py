"""The engine: one model, its paged KV cache, and the step loop over sequence groups.

Three batch types, and who owns each:
- `list[SequenceGroup]` (scheduler): the requests that run this step, every view of each.
- `StepBatch` (engine, fusion): where each view sits in its model's forward; `PagedBatch` + packed
  `input_ids` (model runner): one model's rows as one forward (a second model runs its own).
- `[G, V]` scores (decoders, sampler): one fused row per group, from which one token is chosen.

`Engine.step()` is schedule -> run -> fuse -> sample -> postprocess; it is called from one thread only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from counterpoint.decoders import Decoder
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...worker_protocol import SamplingParams, TokenLogprob, TopLogprob
from .block_manager import BlockManager, KVPools
from .candidates import candidate_rows, commit, processed_pending
from ..detokenizer import Detokenizer
from ..fusion import FuseResult, StepBatch, fuse, jsd, prompt_logprobs
from .model_runner import ModelRunner
from .paged_attention import KVCache
from ..sampler import Sampler, SamplerOutput
from .scheduler import Scheduler, SchedulerConfig
from ..sequence import Sequence, SequenceGroup

MIN_LOGPROB = -9999.0  # what -inf (a token the method rules out) is reported as: JSON has no infinity


@dataclass
class EngineConfig:
    block_size: int = 16  # tokens per KV cache block
    kv_cache_bytes: int = 1 << 30  # memory for the KV cache; fixes the number of blocks
    max_model_len: int | None = None  # context length; default: the model's own
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)


@dataclass
class StepOutput:
    """What one step produced for one group (one choice of one request)."""

    group_id: str
    index: int  # choice index
    token_ids: list[int]  # the new token, or none (max_tokens 0, or a token that only ended the choice)
    text: str  # new text to send
    logprobs: list[TokenLogprob] | None
    prompt_logprobs: list[TokenLogprob] | None  # sent once, with the first output
    finish_reason: str | None
    num_prompt_tokens: int
    num_generated: int
    changed: list[bool] | None = None  # diagnostics: did the contrast change this token's choice
    divergence: list[float] | None = None  # diagnostics: JSD between original and contrast views
    own: list[int] | None = None  # diagnostics: the token the original view alone would have chosen (argmax)


class Engine:
    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: EngineConfig,
                 amateur: PreTrainedModel | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config
        self.runners: dict[str, ModelRunner] = {}
        managers: dict[str, BlockManager] = {}
        for name, m in (("main", model), ("amateur", amateur)):
            if m is not None:
                share = 1.0 if name == "main" and amateur is None else (0.75 if name == "main" else 0.25)
                cache = _make_cache(m.eval(), int(config.kv_cache_bytes * share), config.block_size)
                self.runners[name] = ModelRunner(m, cache)
                managers[name] = BlockManager(cache.num_blocks, config.block_size)
        self.amateur = amateur
        cfg = model.config.get_text_config()
        self.max_model_len = config.max_model_len or getattr(cfg, "max_position_embeddings", 2048)
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.block_manager = managers["main"]
        self.pools = KVPools(managers)
        self.scheduler = Scheduler(config.scheduler, self.pools)
        self.runner = self.runners["main"]
        self.sampler = Sampler(self.vocab_size, self.runner.device)
        self.groups: dict[str, SequenceGroup] = {}
        self.num_rows_by_view: Counter[str] = Counter()  # forward rows run so far, by view name (metrics)
        self.detokenizers: dict[str, Detokenizer] = {}
        eos = model.generation_config.eos_token_id if model.generation_config else None
        eos = eos if eos is not None else tokenizer.eos_token_id
        self.eos_token_ids = frozenset(eos if isinstance(eos, list) else [eos] if eos is not None else [])

    # ---- requests -------------------------------------------------------------------------------

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    @property
    def capacity_tokens(self) -> int:
        return self.block_manager.num_blocks * self.config.block_size

    def add(self, group_id: str, index: int, decoder: Decoder, sampling: SamplingParams,
            diagnostics: bool = False) -> SequenceGroup:
        """Queue one choice. The caller has validated lengths against `max_model_len` and capacity."""
        seqs = [Sequence.from_view(v, decoder.ctx) for v in decoder.views()]
        assert seqs[0].view == "original"
        scratch_blocks = 0
        if getattr(decoder, "expands_candidates", False):  # contrastive search: room for k candidate rows
            seqs[0].lookahead = 1
            scratch_blocks = -(-decoder.params.top_k // self.config.block_size)
        longest = max(len(s.token_ids) for s in seqs)
        room = self.max_model_len - longest
        max_tokens = room if sampling.max_tokens is None else min(sampling.max_tokens, room)
        generator = None
        if sampling.seed is not None:
            generator = torch.Generator(device=self.runner.device).manual_seed(sampling.seed + index)
        group = SequenceGroup(group_id, index, seqs, sampling, decoder, self.eos_token_ids, max_tokens,
                              generator=generator, wants_prompt_logprobs=sampling.prompt_logprobs is not None,
                              diagnostics=diagnostics, num_scratch_blocks=scratch_blocks)
        self.groups[group_id] = group
        self.detokenizers[group_id] = Detokenizer(self.tokenizer, seqs[0].token_ids, sampling.stop,
                                                  sampling.skip_special_tokens)
        self.scheduler.add(group)
        return group

    def abort(self, group_id: str) -> None:
        group = self.groups.pop(group_id, None)
        if group is not None:
            self.scheduler.finish(group)
            self.detokenizers.pop(group_id, None)

    # ---- the step -------------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self) -> list[StepOutput]:
        groups = self.scheduler.schedule()
        if not groups:
            return []
        batch = self.run(groups)
        fused = fuse(batch)
        sampled = self.sampler(fused.scores, groups)
        return self.postprocess(batch, fused, sampled)

    def run(self, groups: list[SequenceGroup]) -> StepBatch:
        """One batched forward per model over every scheduled view (and contrastive-search candidates)."""
        candidates = {}
        for i, g in enumerate(groups):
            d = g.decoder
            if getattr(d, "expands_candidates", False) and d.pending is not None and g.seqs[0].num_new_tokens == 0:
                tokens = d.propose(processed_pending(self.sampler, g))
                candidates[i] = candidate_rows(g, tokens, self.config.block_size)
        batch = StepBatch.build(groups, list(self.runners), candidates)
        for seqs in batch.seqs.values():
            self.num_rows_by_view.update(s.view.split(":")[0] for s in seqs)  # "cand:3" counts as "cand"
        for name, runner in self.runners.items():
            if batch.seqs[name]:
                batch.outputs[name] = runner.run(batch.seqs[name], batch.prompt_rows[name],
                                                 batch.layer_requests[name], batch.hidden_rows[name])
        return batch

    def postprocess(self, batch: StepBatch, fused: FuseResult, sampled: SamplerOutput) -> list[StepOutput]:
        groups = batch.groups
        diag = self._diagnostics(groups, fused, sampled)
        outputs = []
        for i, g in enumerate(groups):
            prompt_lps = None
            if g.wants_prompt_logprobs and batch.prompt_rows["main"]:
                prompt_lps = self._prompt_logprobs(g, prompt_logprobs(batch, i))
                g.wants_prompt_logprobs = False
            if i in fused.silent and g.max_tokens > 0:  # contrastive search's prefill: no token yet
                if prompt_lps is not None:
                    outputs.append(StepOutput(g.group_id, g.index, [], "", None, prompt_lps, None,
                                              g.seqs[0].num_prompt_tokens, 0))
                continue
            expanded = "cand:0" in batch.rows[i]
            if expanded:
                commit(self.runner.cache, g, g.decoder.selected)
            out = self._advance(g, i, sampled, prompt_lps)
            if expanded:
                g.seqs[0].num_computed_tokens = len(g.seqs[0].token_ids)  # its keys/values were committed
            if i in diag and out.token_ids:
                out.changed, out.divergence, out.own = [diag[i][0]], [diag[i][1]], [diag[i][2]]
            outputs.append(out)
            self._retire(g)
        for g in groups:
            if g.finish_reason is not None:
                self.scheduler.finish(g)
                self.groups.pop(g.group_id, None)
                self.detokenizers.pop(g.group_id, None)
        return outputs

    def _diagnostics(self, groups: list[SequenceGroup], fused: FuseResult,
                     sampled: SamplerOutput) -> dict[int, tuple[bool, float, int]]:
        rows = [i for i, g in enumerate(groups) if g.diagnostics  # a method without a contrast has nothing to say
                and (fused.contrast[i] is not None or getattr(g.decoder, "expands_candidates", False))]
        if not rows:
            return {}
        idx = torch.tensor(rows)
        original = fused.original[idx]  # [D, V]
        contrast = torch.stack([fused.contrast[i] if fused.contrast[i] is not None else fused.original[i]
                                for i in rows])  # [D, V]
        vocab = min(original.shape[1], contrast.shape[1])
        div = jsd(original[:, :vocab], contrast[:, :vocab]).tolist()  # [D]
        own = original.argmax(-1).tolist()  # [D]
        return {i: (own[k] != sampled.token_ids[i], div[k], own[k]) for k, i in enumerate(rows)}

    def _retire(self, g: SequenceGroup) -> None:
        names = set(g.decoder.retired_views())
        if names:
            gone = [s for s in g.seqs if s.view in names]
            self.pools.free(g, gone)
            g.seqs = [s for s in g.seqs if s.view not in names]

    def _advance(self, g: SequenceGroup, i: int, sampled: SamplerOutput,
                 prompt_lps: list[TokenLogprob] | None) -> StepOutput:
        detok = self.detokenizers[g.group_id]
        new_ids: list[int] = []
        logprobs = None
        if g.max_tokens <= 0:
            g.finish_reason = "length"
        else:
            token = sampled.token_ids[i]
            g.append_token(token)
            is_stop_token = token in g.sampling.stop_token_ids or (
                token in g.eos_token_ids and not g.sampling.ignore_eos)
            before = len(detok.text)
            if is_stop_token:
                g.finish_reason = "stop"
            else:
                new_ids = [token]
                if detok.add(token):
                    g.finish_reason = "stop"
                elif g.num_generated >= g.max_tokens:
                    g.finish_reason = "length"
            if g.sampling.logprobs is not None:
                logprobs = [self._token_logprob(token, sampled, i, g.sampling.logprobs)]
                logprobs[0].offset = _offset(detok.text, before, logprobs[0].token)
        text = detok.take(finished=g.finish_reason is not None)
        return StepOutput(g.group_id, g.index, new_ids, text, logprobs, prompt_lps, g.finish_reason,
                          g.seqs[0].num_prompt_tokens, g.num_generated)

    @staticmethod
    def _finite(lp: float) -> float:
        return max(lp, MIN_LOGPROB)

    def _token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def _token_logprob(self, token: int, sampled: SamplerOutput, i: int, k: int) -> TokenLogprob:
        top = []
        if k > 0:
            ids, lps = sampled.top_ids[i, :k].tolist(), sampled.top_logprobs[i, :k].tolist()
            top = [TopLogprob(token_id=t, token=self._token_text(t), logprob=self._finite(lp)) for t, lp in zip(ids, lps)]
        return TokenLogprob(token_id=token, token=self._token_text(token),
                            logprob=self._finite(float(sampled.logprobs[i])), top=top)

    def _prompt_logprobs(self, g: SequenceGroup, lp: torch.Tensor) -> list[TokenLogprob]:
        """lp `[P-1, V]` (the method's log-probs predicting tokens 1..P-1) -> one entry per prompt token."""
        k = g.sampling.prompt_logprobs or 0
        ids = g.seqs[0].token_ids[:g.seqs[0].num_prompt_tokens]
        targets = torch.tensor(ids[1:], device=lp.device)  # [P-1]
        chosen = lp.gather(1, targets[:, None])[:, 0].tolist()  # [P-1]
        top_lps, top_ids = lp.topk(k, dim=-1) if k > 0 else (None, None)  # [P-1, k]
        offsets = _text_offsets(self.tokenizer, ids)
        result = [TokenLogprob(token_id=ids[0], token=self._token_text(ids[0]), logprob=None, offset=0)]
        for p, (tok, lpv) in enumerate(zip(ids[1:], chosen)):
            top = []
            if k > 0:
                top = [TopLogprob(token_id=t, token=self._token_text(t), logprob=self._finite(v))
                       for t, v in zip(top_ids[p].tolist(), top_lps[p].tolist())]
            result.append(TokenLogprob(token_id=tok, token=self._token_text(tok), logprob=self._finite(lpv), top=top,
                                       offset=offsets[p + 1]))
        return result


def _text_offsets(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[int]:
    """Where each token's text starts in `tokenizer.decode(ids)`: a token that only completes a character
    split across tokens starts where that character does (decoded incrementally, O(len(ids)))."""
    detok = Detokenizer(tokenizer, [], [], skip_special_tokens=False)
    offsets = []
    for token in ids:
        before = len(detok.text)
        detok.add(token)
        offsets.append(_offset(detok.text, before, tokenizer.decode([token])))
    return offsets


def _offset(text: str, before: int, token_text: str) -> int:
    """Where a token's text starts, given the text after it was added and the text's length before: a whole
    token ends the text; a token holding part of a character starts where the text stood before it."""
    if token_text and "\ufffd" not in token_text and text.endswith(token_text) and len(text) - len(token_text) >= before:
        return len(text) - len(token_text)
    return before


def _make_cache(model: PreTrainedModel, kv_bytes: int, block_size: int) -> KVCache:
    cfg = model.config.get_text_config()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    param = next(model.parameters())
    per_block = KVCache.bytes_per_block(cfg.num_hidden_layers, block_size, kv_heads, head_dim, param.dtype)
    return KVCache(cfg.num_hidden_layers, max(1, kv_bytes // per_block), block_size, kv_heads, head_dim,
                   param.dtype, param.device)
