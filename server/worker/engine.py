"""The engine: one model, its paged KV cache, and the step loop over sequence groups.

Three batch types, and who owns each:
- `list[SequenceGroup]` (scheduler): the requests that run this step, every view of each.
- `PagedBatch` + packed `input_ids` (model runner): those views' uncomputed tokens as one forward.
- `[G, V]` scores (decoders, sampler): one fused row per group, from which one token is chosen.

`Engine.step()` is schedule -> run -> fuse -> sample -> postprocess; it is called from one thread only.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from counterpoint.decoders import Decoder

from ..worker_protocol import SamplingParams, TokenLogprob, TopLogprob
from .block_manager import BlockManager
from .detokenizer import Detokenizer
from .model_runner import ForwardOutput, ModelRunner
from .paged_attention import KVCache
from .sampler import Sampler, SamplerOutput
from .scheduler import Scheduler, SchedulerConfig
from .sequence import Sequence, SequenceGroup


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


class Engine:
    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: EngineConfig):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config
        cfg = model.config.get_text_config()
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        dtype = next(model.parameters()).dtype
        device = next(model.parameters()).device
        per_block = KVCache.bytes_per_block(cfg.num_hidden_layers, config.block_size, kv_heads, head_dim, dtype)
        num_blocks = max(1, config.kv_cache_bytes // per_block)
        self.cache = KVCache(cfg.num_hidden_layers, num_blocks, config.block_size, kv_heads, head_dim,
                             dtype, device)
        self.max_model_len = config.max_model_len or getattr(cfg, "max_position_embeddings", 2048)
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.block_manager = BlockManager(num_blocks, config.block_size)
        self.scheduler = Scheduler(config.scheduler, self.block_manager)
        self.runner = ModelRunner(model, self.cache)
        self.sampler = Sampler(self.vocab_size, device)
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

    def add(self, group_id: str, index: int, decoder: Decoder, sampling: SamplingParams) -> SequenceGroup:
        """Queue one choice. The caller has validated lengths against `max_model_len` and capacity."""
        seqs = [Sequence(v.name, list(v.prompt_ids), len(v.prompt_ids)) for v in decoder.views()]
        longest = max(len(s.token_ids) for s in seqs)
        room = self.max_model_len - longest
        max_tokens = room if sampling.max_tokens is None else min(sampling.max_tokens, room)
        generator = None
        if sampling.seed is not None:
            generator = torch.Generator(device=self.cache.keys.device).manual_seed(sampling.seed + index)
        group = SequenceGroup(group_id, index, seqs, sampling, decoder, self.eos_token_ids, max_tokens,
                              generator=generator, wants_prompt_logprobs=sampling.prompt_logprobs is not None)
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
        seqs = [seq for g in groups for seq in g.seqs]
        out = self.run(groups, seqs)
        scores = self.fuse(groups, out)  # [G, V]
        sampled = self.sampler(scores, groups)
        return self.postprocess(groups, out, sampled)

    def run(self, groups: list[SequenceGroup], seqs: list[Sequence]) -> ForwardOutput:
        prompt_rows, row = set(), 0
        for g in groups:
            if g.wants_prompt_logprobs and g.seqs[0].num_computed_tokens == 0:
                prompt_rows.add(row)
            row += len(g.seqs)
        self.num_rows_by_view.update(s.view for s in seqs)
        return self.runner.run(seqs, prompt_rows)

    def fuse(self, groups: list[SequenceGroup], out: ForwardOutput) -> torch.Tensor:
        """One `[G, V]` row of scores per group: each method fuses its requests' view logits in batch."""
        if all(len(g.seqs) == 1 for g in groups) and len({type(g.decoder) for g in groups}) == 1:
            return type(groups[0].decoder).fuse([g.decoder for g in groups], {"original": out.logits})
        by_method: dict[type, list[int]] = defaultdict(list)
        rows: list[dict[str, int]] = []
        row = 0
        for i, g in enumerate(groups):
            by_method[type(g.decoder)].append(i)
            rows.append({s.view: row + j for j, s in enumerate(g.seqs)})
            row += len(g.seqs)
        scores = torch.empty(len(groups), out.logits.shape[1], device=out.logits.device)  # [G, V]
        for cls, members in by_method.items():
            views = {name: out.logits[torch.tensor([rows[i][name] for i in members])]  # [G_m, V]
                     for name in rows[members[0]]}
            scores[torch.tensor(members)] = cls.fuse([groups[i].decoder for i in members], views)
        return scores

    def postprocess(self, groups: list[SequenceGroup], out: ForwardOutput,
                    sampled: SamplerOutput) -> list[StepOutput]:
        outputs, row = [], 0
        for i, g in enumerate(groups):
            prompt_lps = None
            if g.wants_prompt_logprobs and row in out.prompt_logits:
                prompt_lps = self._prompt_logprobs(g, out.prompt_logits[row])
                g.wants_prompt_logprobs = False
            row += len(g.seqs)
            outputs.append(self._advance(g, i, sampled, prompt_lps))
        for g in groups:
            if g.finish_reason is not None:
                self.scheduler.finish(g)
                self.groups.pop(g.group_id, None)
                self.detokenizers.pop(g.group_id, None)
        return outputs

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
        text = detok.take(finished=g.finish_reason is not None)
        return StepOutput(g.group_id, g.index, new_ids, text, logprobs, prompt_lps, g.finish_reason,
                          g.seqs[0].num_prompt_tokens, g.num_generated)

    def _token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def _token_logprob(self, token: int, sampled: SamplerOutput, i: int, k: int) -> TokenLogprob:
        top = []
        if k > 0:
            ids, lps = sampled.top_ids[i, :k].tolist(), sampled.top_logprobs[i, :k].tolist()
            top = [TopLogprob(token_id=t, token=self._token_text(t), logprob=lp) for t, lp in zip(ids, lps)]
        return TokenLogprob(token_id=token, token=self._token_text(token),
                            logprob=float(sampled.logprobs[i]), top=top)

    def _prompt_logprobs(self, g: SequenceGroup, logits: torch.Tensor) -> list[TokenLogprob]:
        """logits `[P, V]` at every prompt position -> logprob of each prompt token given its prefix."""
        k = g.sampling.prompt_logprobs or 0
        ids = g.seqs[0].token_ids[:g.seqs[0].num_prompt_tokens]
        lp = torch.log_softmax(logits[:-1], dim=-1)  # [P-1, V] predicts tokens 1..P-1
        targets = torch.tensor(ids[1:], device=lp.device)  # [P-1]
        chosen = lp.gather(1, targets[:, None])[:, 0].tolist()  # [P-1]
        top_lps, top_ids = lp.topk(k, dim=-1) if k > 0 else (None, None)  # [P-1, k]
        result = [TokenLogprob(token_id=ids[0], token=self._token_text(ids[0]), logprob=None)]
        for p, (tok, lpv) in enumerate(zip(ids[1:], chosen)):
            top = []
            if k > 0:
                top = [TopLogprob(token_id=t, token=self._token_text(t), logprob=v)
                       for t, v in zip(top_ids[p].tolist(), top_lps[p].tolist())]
            result.append(TokenLogprob(token_id=tok, token=self._token_text(tok), logprob=lpv, top=top))
        return result
