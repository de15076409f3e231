"""The vLLM worker backend: vLLM's V1 engine behind the same worker HTTP protocol (`--backend vllm`).

`VLLMEngine` implements the worker's backend protocol (backend.py), as the PyTorch engine does, and shares its
token output (outputs.py). Plain decoding is one vLLM request per choice with our
sampling settings mapped onto vLLM's (stop strings, seed + index, logprobs, min_tokens, penalties): vLLM
samples. Same-weights paired methods (cfg, lqcd, overshadow) are one vLLM request per view; the
`PairedLogitsProcessor` (vllm_logits.py) fuses and picks, and this module checks every step that all views
got the picked token at the same position. When vLLM scheduled the views apart (a view admitted a step
later, preempted, prefilled in chunks), the group is resubmitted from its tokens so far (at most
`MAX_RESTARTS` times, then it fails with an error event): no token that is not the method's is ever sent.

vLLM settings the backend requires (build.engine_args sets them):
- the V1 engine core in the worker's process: VLLM_ENABLE_V1_MULTIPROCESSING=0, one device (uni-process
  executor, no tensor parallelism), because the logits processor and this module share `vllm_logits.REGISTRY`;
- chunked prefill off (a partly prefilled view would get logits that are not its last position's), hence
  max_num_batched_tokens >= max_model_len; async scheduling off (the processor must see every row's
  previous tokens); no speculative decoding; enforce_eager on CPU (compilation adds minutes);
- prefix caching off: kept conservative so each view's logits come from its own prefill;
- max_num_seqs counts views, not requests: a paired request needs all its views admitted in one step, so
  give it at least (views per request) x (concurrent paired requests); a split admission costs a resubmit.
Known: vLLM warns that SmolLM2/Llama "does not officially support disabling chunked prefill"; it runs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

from ...worker_protocol import SamplingParams
from ..backend import VLLM_FEATURES, EngineRequest, EngineStats, GroupFailure, StepOutput
from ..outputs import ChoiceOutput
from ..sequence import Sequence, SequenceGroup
from .logprobs import vllm_logprob, vllm_prompt_logprobs

_SET_NUM_THREADS = torch.set_num_threads  # taken before vLLM's CPU worker replaces it with a no-op
PAIRED = ("cfg", "lqcd", "overshadow")  # same-weights methods this backend runs
METHODS = ("plain",) + PAIRED
MAX_RESTARTS = 3  # resubmissions of a paired group whose views vLLM scheduled apart after its first token
MAX_ADMISSIONS = 64  # before its first token (views admitted in different steps under a full batch)


@dataclass
class _Plain:
    group_id: str
    index: int
    request_id: str
    sampling: SamplingParams
    scoring_only: bool  # max_tokens 0: vLLM runs one token for the prompt logprobs; it is not sent
    num_generated: int = 0
    prompt_logprobs_sent: bool = False


@dataclass
class _Paired:
    group_id: str
    entry: object  # vllm_logits.PairedEntry
    choice: ChoiceOutput
    attempt: int = 0  # submissions so far - 1 (names this attempt's vLLM requests)
    restarts: int = 0  # resubmissions after the first token
    requests: dict[str, str] = field(default_factory=dict)  # view -> vLLM request id (this attempt)

    @property
    def key(self) -> str:
        return f"{self.group_id}#{self.attempt}"


class VLLMEngine:
    features = VLLM_FEATURES  # same-weights views of one request, fused by the logits processor

    def __init__(self, llm, tokenizer, max_model_len: int, vocab_size: int, eos_token_ids: frozenset[int]):
        from .logits import REGISTRY
        self.llm = llm
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size
        self.eos_token_ids = eos_token_ids
        self.registry = REGISTRY
        REGISTRY.vocab_size = vocab_size
        self.groups: dict[str, _Plain | _Paired] = {}
        self.num_restarts = 0  # paired groups resubmitted because vLLM scheduled their views apart
        self._owner: dict[str, tuple[str, str]] = {}  # vLLM request id -> (group id, view)
        self._ids = itertools.count()
        self._threads = torch.get_num_threads()  # vLLM's CPU kernels need the same count on the stepping thread
        self._thread_set = False

    @property
    def has_work(self) -> bool:
        return bool(self.groups)

    # ---- requests -------------------------------------------------------------------------------

    def stats(self) -> EngineStats:
        return EngineStats(num_running=len(self.groups), num_preemptions=self.num_restarts)

    def submit(self, request: EngineRequest) -> None:
        group_id, index, decoder, sampling = request.group_id, request.index, request.decoder, request.sampling
        views = request.views
        room = self.max_model_len - max(len(v.prompt_ids) for v in views)
        max_tokens = room if sampling.max_tokens is None else min(sampling.max_tokens, room)
        if decoder.name == "plain":
            return self._add_plain(group_id, index, views[0].prompt_ids, sampling, max_tokens)
        from .logits import PairedEntry
        seqs = [Sequence(v.name, list(v.prompt_ids), len(v.prompt_ids)) for v in views]
        generator = None
        if sampling.seed is not None:
            generator = torch.Generator().manual_seed(sampling.seed + index)
        group = SequenceGroup(group_id, index, seqs, sampling, decoder, self.eos_token_ids, max_tokens,
                              generator=generator, diagnostics=request.diagnostics)
        entry = PairedEntry(group, {v.name for v in views})
        paired = _Paired(group_id, entry, ChoiceOutput(self.tokenizer, group))
        self.groups[group_id] = paired
        self._submit(paired)

    def _add_plain(self, group_id: str, index: int, ids: list[int], s: SamplingParams, max_tokens: int) -> None:
        from vllm import SamplingParams as VSP
        from vllm.sampling_params import RequestOutputKind
        rid = f"{group_id}/{next(self._ids)}"
        params = VSP(n=1, temperature=s.temperature, top_p=s.top_p, top_k=max(0, s.top_k),
                     repetition_penalty=s.repetition_penalty,
                     seed=None if s.seed is None else s.seed + index, stop=list(s.stop) or None,
                     stop_token_ids=list(s.stop_token_ids) or None, ignore_eos=s.ignore_eos,
                     max_tokens=max(max_tokens, 1), min_tokens=min(s.min_tokens, max(max_tokens, 1)),
                     logprobs=s.logprobs, prompt_logprobs=s.prompt_logprobs,
                     skip_special_tokens=s.skip_special_tokens, output_kind=RequestOutputKind.DELTA)
        self.groups[group_id] = _Plain(group_id, index, rid, s, scoring_only=max_tokens <= 0)
        self._owner[rid] = (group_id, "original")
        self.llm.add_request(rid, {"prompt_token_ids": list(ids)}, params)

    def _submit(self, p: _Paired) -> None:
        """Queue every live view of a paired group as a vLLM request, from the tokens it has so far."""
        from vllm import SamplingParams as VSP
        from vllm.sampling_params import RequestOutputKind

        from .logits import KEY
        g = p.entry.group
        remaining = max(g.max_tokens - g.num_generated, 1)
        self.registry.entries[p.key] = p.entry
        p.entry.base = g.num_generated
        p.requests = {}
        for seq in g.seqs:
            if seq.view not in p.entry.live:
                continue
            rid = f"{p.key}/{seq.view}"
            params = VSP(n=1, temperature=0.0, max_tokens=remaining, ignore_eos=True, detokenize=False,
                         extra_args={KEY: (p.key, seq.view)}, output_kind=RequestOutputKind.DELTA)
            p.requests[seq.view] = rid
            self._owner[rid] = (p.group_id, seq.view)
            self.llm.add_request(rid, {"prompt_token_ids": list(seq.token_ids)}, params)

    def abort(self, group_id: str) -> None:
        group = self.groups.pop(group_id, None)
        if isinstance(group, _Plain):
            self._drop([group.request_id])
        elif isinstance(group, _Paired):
            self._drop(list(group.requests.values()))
            self.registry.entries.pop(group.key, None)

    def _drop(self, request_ids: list[str]) -> None:
        for rid in request_ids:
            self._owner.pop(rid, None)
        self.llm.abort_request(request_ids)

    # ---- the step -------------------------------------------------------------------------------

    def step(self) -> list[StepOutput | GroupFailure]:
        if not self._thread_set:
            _SET_NUM_THREADS(self._threads)
            self._thread_set = True
        results = self.llm.step()
        outputs: list[StepOutput] = []
        paired: dict[str, dict[str, list[int]]] = {}
        for r in results:
            owner = self._owner.get(r.request_id)
            if owner is None:
                continue
            group = self.groups.get(owner[0])
            if isinstance(group, _Plain):
                outputs.append(self._plain_output(group, r))
            elif isinstance(group, _Paired):
                paired.setdefault(owner[0], {})[owner[1]] = list(r.outputs[0].token_ids)
        for p in [g for g in self.groups.values() if isinstance(g, _Paired)]:
            out = self._paired_step(p, paired.get(p.group_id, {}))
            if out is not None:
                outputs.append(out)
        return outputs

    def _plain_output(self, g: _Plain, r) -> StepOutput:
        c = r.outputs[0]
        ids = list(c.token_ids)
        prompt_lps = None
        if g.sampling.prompt_logprobs is not None and not g.prompt_logprobs_sent and r.prompt_logprobs is not None:
            prompt_lps = vllm_prompt_logprobs(self.tokenizer, r.prompt_token_ids, r.prompt_logprobs,
                                              g.sampling.prompt_logprobs)
            g.prompt_logprobs_sent = True
        logprobs = None
        if g.sampling.logprobs is not None and c.logprobs:
            logprobs = [vllm_logprob(self.tokenizer, t, d, g.sampling.logprobs) for t, d in zip(ids, c.logprobs)]
        finish = c.finish_reason if c.finish_reason in (None, "stop", "length") else "stop"
        if g.scoring_only:
            ids, text, logprobs, finish = [], "", None, "length"
        else:
            g.num_generated += len(ids)
            text = c.text
            ends = set(g.sampling.stop_token_ids) | (set() if g.sampling.ignore_eos else set(self.eos_token_ids))
            if finish == "stop" and ids and ids[-1] in ends and not isinstance(c.stop_reason, str):
                ids = ids[:-1]  # like the PyTorch engine: the token that ended the choice is not sent
        if finish is not None:
            self.groups.pop(g.group_id, None)
            self._owner.pop(g.request_id, None)
            if g.scoring_only:
                self.llm.abort_request([g.request_id])
        return StepOutput(g.group_id, g.index, ids, text, logprobs, prompt_lps, finish,
                          len(r.prompt_token_ids or []), g.num_generated)

    def _paired_step(self, p: _Paired, new: dict[str, list[int]]) -> StepOutput | None:
        entry, g = p.entry, p.entry.group
        picks, entry.picks = entry.picks, []
        if not picks and not new:
            return None  # not scheduled this step
        pick = picks[0] if len(picks) == 1 else None
        aligned = (pick is not None and pick.position == g.num_generated and set(new) >= entry.live
                   and all(new[v] == [pick.token] for v in entry.live))
        if not aligned:
            return self._restart(p)
        return self._advance(p, pick)

    def _restart(self, p: _Paired) -> GroupFailure | None:
        self._drop(list(p.requests.values()))
        self.registry.entries.pop(p.key, None)
        p.attempt += 1
        self.num_restarts += 1
        p.restarts += p.entry.group.num_generated > 0
        if p.restarts > MAX_RESTARTS or p.attempt > MAX_ADMISSIONS:
            self.groups.pop(p.group_id, None)
            return GroupFailure(p.group_id, "vLLM scheduled the views of this request in different steps too "
                                            "often; raise max_num_seqs / max_num_batched_tokens or use the torch backend")
        p.entry.live -= set(p.entry.group.decoder.retired_views())
        self._submit(p)
        return None

    def _advance(self, p: _Paired, pick) -> StepOutput:
        g = p.entry.group
        if g.max_tokens <= 0:  # max_tokens 0: the choice ends before its first token, as in the torch engine
            self.abort(g.group_id)
            return p.choice.emit(None)
        g.decoder.record(pick.decision)
        logprob = None
        if g.sampling.logprobs is not None:
            k = g.sampling.logprobs
            lps, ids = pick.logprobs.topk(k) if k > 0 else (pick.logprobs[:0], pick.logprobs[:0].long())
            logprob = (float(pick.logprobs[pick.token]), ids.tolist(), lps.tolist())
        out = p.choice.emit(pick.token, logprob)
        if g.diagnostics and out.token_ids:
            out.changed, out.divergence, out.own_token_ids = [pick.changed], [pick.divergence], [pick.own]
        retired = set(g.decoder.retired_views())
        if retired:
            p.entry.live -= retired
            self._drop([p.requests.pop(v) for v in retired if v in p.requests])
        if g.finish_reason is not None:
            self.abort(g.group_id)
        return out

    def recover(self) -> list[StepOutput | GroupFailure]:
        """vLLM's step raised: its batch state is vLLM's own, so every group on it fails cleanly."""
        failures = [GroupFailure(gid, "the vLLM engine could not run this request") for gid in list(self.groups)]
        for f in failures:
            self.abort(f.group_id)
        return failures
