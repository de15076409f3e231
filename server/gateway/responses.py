"""Worker events -> OpenAI responses: whole JSON bodies, or SSE chunks ending in `[DONE]`.

Both endpoints share one shape of state: per choice, its text, logprobs and finish reason; per request,
the token counts and the resolved decoding. The first streamed chunk carries the decoding object.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from ..errors import APIError, error_body
from ..protocol.chat import ChatCompletionRequest, chat_logprobs
from ..protocol.common import usage
from ..protocol.completions import CompletionRequest, LegacyLogprobs
from ..worker_protocol import WorkerEvent


class StreamFailed(Exception):
    def __init__(self, event: WorkerEvent):
        super().__init__(event.message)
        self.event = event


async def merged(streams: list[AsyncIterator[WorkerEvent]]) -> AsyncIterator[tuple[int, WorkerEvent]]:
    """Interleave several worker streams (one per prompt) as (prompt index, event)."""
    if len(streams) == 1:
        async for ev in streams[0]:
            yield 0, ev
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, stream: AsyncIterator[WorkerEvent]) -> None:
        try:
            async for ev in stream:
                await queue.put((i, ev))
        finally:
            await queue.put((i, None))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            i, ev = await queue.get()
            if ev is None:
                remaining -= 1
            else:
                yield i, ev
    finally:
        for t in tasks:
            t.cancel()


class Tally:
    """Token counts and decoding over all the worker streams of one response."""

    def __init__(self):
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.decoding: dict[str, Any] | None = None

    def see(self, ev: WorkerEvent) -> None:
        if ev.type == "start":
            self.prompt_tokens += ev.prompt_tokens
            if self.decoding is None and ev.decoding is not None:
                self.decoding = ev.decoding.model_dump()
        elif ev.type == "done":
            self.completion_tokens += ev.completion_tokens
            if ev.decoding is not None:
                self.decoding = ev.decoding.model_dump()
        elif ev.type == "error":
            raise StreamFailed(ev)

    def usage(self) -> dict[str, int]:
        return usage(self.prompt_tokens, self.completion_tokens)


class Diagnostics:
    """Per-choice summary of how the contrast changed the output (tokens whose choice differed, JSD)."""

    def __init__(self):
        self.changed: list[bool] = []
        self.divergence: list[float] = []

    def add(self, ev: WorkerEvent) -> None:
        self.changed += ev.changed or []
        self.divergence += ev.divergence or []

    def summary(self) -> dict[str, Any] | None:
        n = len(self.changed)
        if not n:
            return None  # the method has no contrast view (plain)
        return {"tokens": n, "changed_tokens": sum(self.changed),
                "changed_positions": [i for i, c in enumerate(self.changed) if c],
                "mean_divergence": sum(self.divergence) / n if n else 0.0}


def _stream_diagnostics(ev: WorkerEvent) -> dict[str, Any]:
    if ev.changed is None:
        return {}
    return {"diagnostics": {"changed": ev.changed, "divergence": ev.divergence,
                            "own_token_ids": ev.own_token_ids, "own_tokens": ev.own_tokens}}


def _sse(payload: dict[str, Any]) -> dict[str, str]:
    return {"data": json.dumps(payload, separators=(",", ":"), ensure_ascii=False)}


def _error_chunk(exc: Exception) -> dict[str, str]:
    if isinstance(exc, StreamFailed):
        return _sse(error_body(exc.event.status, exc.event.message or "generation failed"))
    if isinstance(exc, APIError):
        return _sse(exc.body())
    return _sse(error_body(500, "internal error while streaming"))


def _wants_diagnostics(tally: Tally) -> bool:
    return bool(tally.decoding and tally.decoding.get("diagnostics"))


# ---- chat ---------------------------------------------------------------------------------------

async def chat_response(req: ChatCompletionRequest, rid: str, created: int,
                        events: AsyncIterator[WorkerEvent]) -> dict[str, Any]:
    tally = Tally()
    texts = [""] * req.n
    lps: list[list] = [[] for _ in range(req.n)]
    finish: list[str | None] = [None] * req.n
    diags = [Diagnostics() for _ in range(req.n)]
    async for ev in events:
        tally.see(ev)
        if ev.type == "delta":
            texts[ev.index] += ev.text
            lps[ev.index] += ev.logprobs or []
            finish[ev.index] = ev.finish_reason or finish[ev.index]
            diags[ev.index].add(ev)
    choices = [{"index": i, "message": {"role": "assistant", "content": texts[i]},
                "logprobs": chat_logprobs(lps[i]) if req.logprobs else None, "finish_reason": finish[i],
                **({"diagnostics": diags[i].summary()} if _wants_diagnostics(tally) else {})}
               for i in range(req.n)]
    return {"id": rid, "object": "chat.completion", "created": created, "model": req.model,
            "choices": choices, "usage": tally.usage(), "decoding": tally.decoding}


async def chat_chunks(req: ChatCompletionRequest, rid: str, created: int,
                      events: AsyncIterator[WorkerEvent]) -> AsyncIterator[dict[str, str]]:
    base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": req.model}
    tally = Tally()
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    try:
        async for ev in events:
            tally.see(ev)
            if ev.type == "start":
                for i in range(req.n):
                    yield _sse({**base, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                                     "logprobs": None, "finish_reason": None}],
                                "decoding": tally.decoding})
            elif ev.type == "delta" and (ev.text or ev.finish_reason or ev.logprobs or ev.changed):
                choice = {"index": ev.index, "delta": {"content": ev.text} if ev.text else {},
                          "logprobs": chat_logprobs(ev.logprobs) if req.logprobs and ev.logprobs else None,
                          "finish_reason": ev.finish_reason, **_stream_diagnostics(ev)}
                yield _sse({**base, "choices": [choice]})
    except Exception as exc:
        yield _error_chunk(exc)
        return
    if include_usage:
        yield _sse({**base, "choices": [], "usage": tally.usage(), "decoding": tally.decoding})
    yield {"data": "[DONE]"}


# ---- completions --------------------------------------------------------------------------------

async def completion_response(req: CompletionRequest, rid: str, created: int,
                              streams: list[AsyncIterator[WorkerEvent]]) -> dict[str, Any]:
    tally = Tally()
    n, num = req.n, len(streams) * req.n
    texts, finish = [""] * num, [None] * num
    lps = [LegacyLogprobs() for _ in range(num)]
    diags = [Diagnostics() for _ in range(num)]
    echoed = [0] * len(streams)  # length of each prompt's echoed text: completion offsets count after it
    async for p, ev in merged(streams):
        tally.see(ev)
        if ev.type == "start":
            echoed[p] = len(ev.prompt_text or "")
            for j in range(n):
                texts[p * n + j] = ev.prompt_text or ""
                if ev.prompt_logprobs is not None:
                    lps[p * n + j].add(ev.prompt_logprobs)
        elif ev.type == "delta":
            k = p * n + ev.index
            texts[k] += ev.text
            lps[k].add(ev.logprobs or [], base=echoed[p])
            finish[k] = ev.finish_reason or finish[k]
            diags[k].add(ev)
    choices = [{"index": k, "text": texts[k], "logprobs": lps[k].data if req.logprobs is not None else None,
                "finish_reason": finish[k], **({"diagnostics": diags[k].summary()} if _wants_diagnostics(tally) else {})}
               for k in range(num)]
    return {"id": rid, "object": "text_completion", "created": created, "model": req.model,
            "choices": choices, "usage": tally.usage(), "decoding": tally.decoding}


async def completion_chunks(req: CompletionRequest, rid: str, created: int,
                            streams: list[AsyncIterator[WorkerEvent]]) -> AsyncIterator[dict[str, str]]:
    base = {"id": rid, "object": "text_completion", "created": created, "model": req.model}
    tally, n = Tally(), req.n
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    lps: dict[int, LegacyLogprobs] = {}
    echoed: dict[int, int] = {}  # prompt index -> length of its echoed text
    first = True

    def chunk(choice: dict[str, Any]) -> dict[str, str]:
        nonlocal first
        extra, first = ({"decoding": tally.decoding} if first else {}), False
        return _sse({**base, **extra, "choices": [choice]})

    try:
        async for p, ev in merged(streams):
            tally.see(ev)
            if ev.type == "start" and req.echo:
                echoed[p] = len(ev.prompt_text or "")
                for j in range(n):
                    lp = lps.setdefault(p * n + j, LegacyLogprobs())
                    chunk_lp = lp.add(ev.prompt_logprobs) if ev.prompt_logprobs and req.logprobs is not None else None
                    yield chunk({"index": p * n + j, "text": ev.prompt_text or "", "logprobs": chunk_lp,
                                 "finish_reason": None})
            elif ev.type == "delta" and (ev.text or ev.finish_reason or ev.logprobs or ev.changed):
                k = p * n + ev.index
                chunk_lp = lps.setdefault(k, LegacyLogprobs()).add(ev.logprobs or [], base=echoed.get(p, 0)) \
                    if req.logprobs is not None else None
                yield chunk({"index": k, "text": ev.text, "logprobs": chunk_lp, "finish_reason": ev.finish_reason,
                             **_stream_diagnostics(ev)})
    except Exception as exc:
        yield _error_chunk(exc)
        return
    if include_usage:
        yield _sse({**base, "choices": [], "usage": tally.usage()})
    yield {"data": "[DONE]"}
