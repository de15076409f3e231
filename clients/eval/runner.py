"""Runs a task under each decoding method through the server's own OpenAI API.

Methods run one after another (so each one's tokens/s is its own); within a method the items' requests run
concurrently, at most `concurrency` in flight. A request that fails for a transient reason (connection,
timeout, 408/409/429/5xx) is retried with exponential backoff; an item whose request still fails is kept
as a failed item with its error, so it is counted and reported, never silently dropped.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from tqdm import tqdm

from .items import GenItem, Item, MCItem
from .scoring import continuation_logprob, matches, mc1, mc2

MAX_PROMPTS_PER_REQUEST = 64  # the server's limit on a list prompt


@dataclass
class MethodSpec:
    label: str  # the name shown in the table (usually the method name)
    decoding: dict[str, Any]  # the request's `decoding` object


@dataclass
class ItemResult:
    id: str
    scores: dict[str, float] = field(default_factory=dict)  # metric -> value; empty when the item failed
    error: str | None = None  # why the item failed, after retries
    answer: str | None = None  # the generated text (generation items)
    logprobs: dict[str, float] | None = None  # multiple-choice items: each distinct choice's total log-prob


@dataclass
class MethodRun:
    method: MethodSpec
    results: list[ItemResult]
    tokens: int  # tokens the server processed for this method: scored prompt tokens + generated tokens
    seconds: float  # wall time of this method's run
    resolved: dict[str, Any] | None = None  # the `decoding` object the server reported (first answered item)


@dataclass
class Options:
    model: str
    max_tokens: int = 64  # generation items: the answer's token budget
    match: str = "contains"  # generation items: "contains" or "exact"


class RequestFailed(Exception):
    def __init__(self, status: int | None, message: str):
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


class Client:
    """POSTs JSON with bounded concurrency and retries transient failures."""

    def __init__(self, http: httpx.AsyncClient, concurrency: int = 8, retries: int = 3, backoff: float = 0.5):
        self.http, self.retries, self.backoff = http, retries, backoff
        self.slots = asyncio.Semaphore(concurrency)

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        for attempt in range(self.retries + 1):
            try:
                async with self.slots:
                    return _json(await self.http.post(path, json=body))
            except httpx.HTTPError as exc:
                error = RequestFailed(None, f"{type(exc).__name__}: {exc}")
            except RequestFailed as exc:
                if not _transient(exc.status):
                    raise
                error = exc
            if attempt < self.retries:
                await asyncio.sleep(self.backoff * 2 ** attempt)
        raise error


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        raise RequestFailed(r.status_code, f"not JSON: {r.text[:200]!r}") from None
    if r.status_code != 200:
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
        raise RequestFailed(r.status_code, message or r.text[:200])
    return body


def _transient(status: int | None) -> bool:
    return status is None or status in (200, 408, 409, 429) or status >= 500  # 200: a body that was not JSON


async def run_method(client: Client, items: list[Item], spec: MethodSpec, opts: Options,
                     progress: bool = True) -> MethodRun:
    bar = tqdm(total=len(items), desc=spec.label, unit="item", disable=not progress, leave=False)
    tokens, resolved = 0, None

    async def one(item: Item) -> ItemResult:
        nonlocal tokens, resolved
        try:
            result, used, decoding = await (score_mc if isinstance(item, MCItem) else score_gen)(
                client, item, spec, opts)
            tokens += used
            resolved = resolved or decoding
        except RequestFailed as exc:
            result = ItemResult(item.id, error=str(exc))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            result = ItemResult(item.id, error=f"unexpected response: {type(exc).__name__}: {exc}")
        bar.update(1)
        return result

    started = time.monotonic()
    try:
        results = await asyncio.gather(*(one(item) for item in items))
    finally:
        bar.close()
    return MethodRun(spec, list(results), tokens, time.monotonic() - started, resolved)


def _with_decoding(body: dict[str, Any], spec: MethodSpec) -> dict[str, Any]:
    if spec.decoding != {"method": "plain"}:  # bare plain: send nothing, so any OpenAI server can be the baseline
        body["decoding"] = spec.decoding
    return body


async def score_mc(client: Client, item: MCItem, spec: MethodSpec, opts: Options) -> tuple[ItemResult, int, Any]:
    """Score every distinct choice by prompt scoring (echo, max_tokens 0), then MC1 and MC2."""
    texts, logprob, tokens = item.texts, {}, 0
    for start in range(0, len(texts), MAX_PROMPTS_PER_REQUEST):
        chunk = texts[start:start + MAX_PROMPTS_PER_REQUEST]
        prompts = [item.context + t for t in chunk]
        body = _with_decoding({"model": opts.model, "prompt": prompts, "echo": True, "logprobs": 1,
                               "max_tokens": 0, "temperature": 0}, spec)
        resp = await client.post("/v1/completions", body)
        choices = sorted(resp["choices"], key=lambda c: c["index"])
        if len(choices) != len(prompts):
            raise ValueError(f"{len(choices)} choices for {len(prompts)} prompts")
        for text, prompt, choice in zip(chunk, prompts, choices):
            logprob[text] = continuation_logprob(choice, prompt, len(item.context))
        tokens += resp.get("usage", {}).get("prompt_tokens", 0)
    scores = {}
    if item.mc1:
        scores["mc1"] = mc1([logprob[c] for c in item.mc1.choices], item.mc1.labels)
    if item.mc2:
        scores["mc2"] = mc2([logprob[c] for c in item.mc2.choices], item.mc2.labels)
    return ItemResult(item.id, scores, logprobs=logprob), tokens, resp.get("decoding")


async def score_gen(client: Client, item: GenItem, spec: MethodSpec, opts: Options) -> tuple[ItemResult, int, Any]:
    """Greedy answer through chat completions, matched against accepted and known wrong answers."""
    messages = ([{"role": "system", "content": item.system}] if item.system else []) + \
        [{"role": "user", "content": item.prompt}]
    body = _with_decoding({"model": opts.model, "messages": messages, "max_tokens": opts.max_tokens,
                           "temperature": 0}, spec)
    resp = await client.post("/v1/chat/completions", body)
    answer = resp["choices"][0]["message"]["content"] or ""
    scores = {"accuracy": float(matches(answer, item.answers, opts.match))}
    if item.wrong:
        scores[item.wrong_metric] = float(matches(answer, item.wrong, opts.match))
    used = resp.get("usage", {}).get("completion_tokens", 0)
    return ItemResult(item.id, scores, answer=answer), used, resp.get("decoding")
