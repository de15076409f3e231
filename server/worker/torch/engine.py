"""The PyTorch engine: one model (and an optional amateur), their paged KV caches, the step loop over groups.

Three batch types, and who owns each:
- `list[SequenceGroup]` (scheduler): the requests that run this step, every view of each.
- `StepBatch` (engine, batch.py): where each view sits in its model's forward; `PagedBatch` + packed
  `input_ids` (model runner): one model's rows as one forward (a second model runs its own).
- `[G, V]` scores (decoders, sampler): one fused row per group, from which one token is chosen.

`Engine.step()` is schedule -> run -> fuse -> sample -> postprocess. It implements `backend.Backend` and is
driven by one thread only (the engine core's main thread).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import torch
from counterpoint.decoders import Decoder
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...worker_protocol import SamplingParams
from ..backend import TORCH_FEATURES, EngineRequest, EngineStats, GroupFailure, StepOutput
from ..fusion import FuseResult, diagnostics, fuse_groups
from ..outputs import ChoiceOutput, prompt_logprobs
from ..sampler import Sampler, SamplerOutput
from ..sequence import Sequence, SequenceGroup
from .batch import StepBatch
from .batch import prompt_logprobs as fused_prompt_logprobs
from .block_manager import BlockManager, KVPools
from .candidates import CandidateStage, wants_candidates
from .model_runner import ModelRunner
from .paged_attention import KVCache
from .scheduler import Scheduler, SchedulerConfig

log = logging.getLogger(__name__)


@dataclass
class EngineConfig:
    block_size: int = 16  # tokens per KV cache block
    kv_cache_bytes: int = 1 << 30  # memory for the KV cache; fixes the number of blocks
    max_model_len: int | None = None  # context length; default: the model's own
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)


class Engine:
    features = TORCH_FEATURES

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
        self.candidates = CandidateStage(self.sampler, self.runner.cache)
        self.groups: dict[str, SequenceGroup] = {}
        self.num_rows_by_view: Counter[str] = Counter()  # forward rows run so far, by view name (metrics)
        self.choices: dict[str, ChoiceOutput] = {}
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
        """Queue one choice of a decoder built in this process (tests, benchmarks)."""
        return self.submit(EngineRequest.of(group_id, index, decoder, sampling, diagnostics))

    def submit(self, request: EngineRequest) -> SequenceGroup:
        """Queue one choice. The front has validated lengths against `max_model_len` and capacity."""
        seqs = [Sequence.from_view(v) for v in request.views]
        assert seqs[0].view == "original"
        sampling = request.sampling
        room = self.max_model_len - max(len(s.token_ids) for s in seqs)
        max_tokens = room if sampling.max_tokens is None else min(sampling.max_tokens, room)
        generator = None
        if sampling.seed is not None:
            generator = torch.Generator(device=self.runner.device).manual_seed(sampling.seed + request.index)
        group = SequenceGroup(request.group_id, request.index, seqs, sampling, request.decoder, self.eos_token_ids,
                              max_tokens, generator=generator, diagnostics=request.diagnostics,
                              wants_prompt_logprobs=sampling.prompt_logprobs is not None)
        if wants_candidates(group):
            self.candidates.prepare(group)
        self.groups[group.group_id] = group
        self.choices[group.group_id] = ChoiceOutput(self.tokenizer, group)
        self.scheduler.add(group)
        return group

    def abort(self, group_id: str) -> None:
        group = self.groups.pop(group_id, None)
        if group is not None:
            self.scheduler.finish(group)
            self.choices.pop(group_id, None)

    def stats(self) -> EngineStats:
        return EngineStats(len(self.scheduler.running), len(self.scheduler.waiting), self.block_manager.usage,
                           self.scheduler.num_preemptions, dict(self.num_rows_by_view))

    # ---- the step -------------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self) -> list[StepOutput]:
        groups = self.scheduler.schedule()
        if not groups:
            return []
        batch = self.run(groups)
        batch = self.ready(batch)  # groups that computed only a chunk of their prompt wait for the next step
        if not batch.groups:
            return []
        fused = self.fuse(batch)
        sampled = self.sampler(fused.scores, batch.groups)
        return self.postprocess(batch, fused, sampled)

    def run(self, groups: list[SequenceGroup]) -> StepBatch:
        """One batched forward per model over every scheduled view (and contrastive-search candidates)."""
        batch = StepBatch.build(groups, list(self.runners), self.candidates.expand(groups))
        for seqs in batch.seqs.values():
            self.num_rows_by_view.update(s.view.split(":")[0] for s in seqs)  # "cand:3" counts as "cand"
        for name, runner in self.runners.items():
            if batch.seqs[name]:
                batch.outputs[name] = runner.run(batch.seqs[name], batch.prompt_rows[name],
                                                 batch.layer_requests[name], batch.hidden_rows[name])
        return batch

    @staticmethod
    def ready(batch: StepBatch) -> StepBatch:
        """The batch seen through the groups whose prompt is complete (chunked prefill)."""
        partial = [i for i, g in enumerate(batch.groups) if g.is_partial]
        return batch.subset([i for i in range(len(batch.groups)) if i not in partial]) if partial else batch

    def fuse(self, batch: StepBatch) -> FuseResult:
        if any(wants_candidates(g) for g in batch.groups):
            return self.candidates.fuse(batch, self._fuse)
        return self._fuse(batch)

    @staticmethod
    def _fuse(batch: StepBatch) -> FuseResult:
        original = torch.stack([batch.view(i, "original") for i in range(len(batch.groups))])  # [G, V]
        return fuse_groups([g.decoder for g in batch.groups], original, batch.method_inputs)

    def postprocess(self, batch: StepBatch, fused: FuseResult, sampled: SamplerOutput) -> list[StepOutput]:
        groups = batch.groups
        diag = diagnostics(fused, [i for i, g in enumerate(groups) if g.diagnostics and i not in fused.silent
                                   and (fused.contrast[i] is not None or wants_candidates(g))], sampled.token_ids)
        outputs = []
        for i, g in enumerate(groups):
            prompt_lps = None
            if g.wants_prompt_logprobs and batch.prompt_rows["main"]:
                prompt_lps = self._prompt_logprobs(g, fused_prompt_logprobs(batch, i))
                g.wants_prompt_logprobs = False
            if i in fused.silent and g.max_tokens > 0:  # contrastive search's prefill: no token yet
                if prompt_lps is not None:
                    outputs.append(StepOutput(g.group_id, g.index, [], "", None, prompt_lps, None,
                                              g.seqs[0].num_prompt_tokens, 0))
                continue
            expanded = "cand:0" in batch.rows[i]
            if expanded:
                self.candidates.commit(g)
            if fused.decisions and fused.decisions[i] is not None:
                g.decoder.record(fused.decisions[i])
            out = self.choices[g.group_id].emit(sampled.token_ids[i], self._logprob(sampled, i, g), prompt_lps)
            if expanded:
                g.seqs[0].num_computed_tokens = len(g.seqs[0].token_ids)  # its keys/values were committed
            if i in diag and out.token_ids:
                changed, divergence, own = diag[i]
                out.changed, out.divergence, out.own_token_ids = [changed], [divergence], [own]
            outputs.append(out)
            self._retire(g)
        for g in groups:
            if g.finish_reason is not None:
                self.scheduler.finish(g)
                self.groups.pop(g.group_id, None)
                self.choices.pop(g.group_id, None)
        return outputs

    def _retire(self, g: SequenceGroup) -> None:
        names = set(g.decoder.retired_views())
        if names:
            gone = [s for s in g.seqs if s.view in names]
            self.pools.free(g, gone)
            g.seqs = [s for s in g.seqs if s.view not in names]

    @staticmethod
    def _logprob(sampled: SamplerOutput, i: int, g: SequenceGroup) -> tuple[float, list[int], list[float]] | None:
        k = g.sampling.logprobs
        if k is None:
            return None
        top_ids = sampled.top_ids[i, :k].tolist() if k > 0 else []
        top_lps = sampled.top_logprobs[i, :k].tolist() if k > 0 else []
        return float(sampled.logprobs[i]), top_ids, top_lps

    def _prompt_logprobs(self, g: SequenceGroup, lp: torch.Tensor):
        """lp `[P-1, V]` (the method's log-probs predicting tokens 1..P-1) -> one entry per prompt token."""
        k = g.sampling.prompt_logprobs or 0
        ids = g.seqs[0].token_ids[:g.seqs[0].num_prompt_tokens]
        targets = torch.tensor(ids[1:], device=lp.device)  # [P-1]
        chosen = lp.gather(1, targets[:, None])[:, 0].tolist()  # [P-1]
        top_lps, top_ids = lp.topk(k, dim=-1) if k > 0 else (None, None)  # [P-1, k]
        return prompt_logprobs(self.tokenizer, ids, chosen, top_ids.tolist() if k > 0 else None,
                               top_lps.tolist() if k > 0 else None)

    # ---- a step that failed ---------------------------------------------------------------------

    def recover(self) -> list[StepOutput | GroupFailure]:
        """After `step` raised: every running group is preempted (recomputed later), then each runs one step
        alone, oldest first; a group whose lone step fails is failed. When every lone step succeeds the
        failure needed the whole batch, and the newest group (the last to join) is failed instead."""
        suspects = sorted(self.scheduler.running, key=lambda g: g.uid)
        for g in suspects:
            self.scheduler.preempt(g)
        results: list[StepOutput | GroupFailure] = []
        failed = []
        for g in suspects:
            if g.group_id not in self.groups:
                continue
            try:
                results += self._step_alone(g)
            except Exception:
                log.exception("group %s fails a step on its own", g.group_id)
                failed.append(g)
        if suspects and not failed:
            failed = [suspects[-1]]
        for g in failed:
            self.abort(g.group_id)
            results.append(GroupFailure(g.group_id, "the engine could not run this request"))
        return results

    @torch.inference_mode()
    def _step_alone(self, g: SequenceGroup) -> list[StepOutput]:
        groups = self.scheduler.schedule_only(g)
        if not groups:
            return []
        batch = self.ready(self.run(groups))
        if not batch.groups:
            return []
        fused = self.fuse(batch)
        return self.postprocess(batch, fused, self.sampler(fused.scores, batch.groups))


def _make_cache(model: PreTrainedModel, kv_bytes: int, block_size: int) -> KVCache:
    cfg = model.config.get_text_config()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    param = next(model.parameters())
    per_block = KVCache.bytes_per_block(cfg.num_hidden_layers, block_size, kv_heads, head_dim, param.dtype)
    return KVCache(cfg.num_hidden_layers, max(1, kv_bytes // per_block), block_size, kv_heads, head_dim,
                   param.dtype, param.device)
