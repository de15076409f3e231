"""A small typed client for a counterpoint server: sync `Client`, async `AsyncClient`, streaming iterators.

A thin layer over HTTP (httpx): requests are the OpenAI JSON bodies plus `decoding` (see
`counterpoint.clients.decoding`); responses are parsed into the models of `schema`; error bodies raise
`CounterpointError` with the server's status, message, param and code.

    with Client("http://127.0.0.1:8000") as c:
        for chunk in c.chat_stream([{"role": "user", "content": "Hi"}], decoding=decoding.cd(beta=1.0)):
            print(chunk.choices[0].delta.content or "", end="")
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from .schema import ChatCompletion, ChatCompletionChunk, Completion

Messages = list[dict[str, Any]]


class CounterpointError(Exception):
    def __init__(self, status: int, message: str, type: str | None = None, param: str | None = None,
                 code: str | None = None):
        super().__init__(f"{status}: {message}")
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code


def _error(status: int, body: Any) -> CounterpointError:
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return CounterpointError(status, str(body)[:500])
    return CounterpointError(status, err.get("message", ""), err.get("type"), err.get("param"), err.get("code"))


def _check(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if response.status_code >= 400:
        raise _error(response.status_code, body)
    return body


def _sse_data(line: str) -> dict[str, Any] | None:
    """One SSE line -> its JSON payload; None for other lines; StopIteration at `[DONE]`."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
        raise StopIteration
    payload = json.loads(data)
    if "error" in payload:
        raise _error(500, payload)  # a failure after streaming began: the status line was already 200
    return payload


def _body(model: str | None, decoding: dict[str, Any] | str | None, stream: bool, **fields: Any) -> dict[str, Any]:
    body = {k: v for k, v in fields.items() if v is not None}
    if model is not None:
        body["model"] = model
    if decoding is not None:
        body["decoding"] = decoding
    if stream:
        body["stream"] = True
        body.setdefault("stream_options", {"include_usage": True})
    return body


class _Base:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None,
                 timeout: float = 600.0):
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self._model: str | None = None


class Client(_Base):
    """Synchronous client. `model=None` uses the server's first model."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 600.0):
        super().__init__(base_url, api_key, timeout)
        self.http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def models(self) -> list[dict[str, Any]]:
        return _check(self.http.get("/v1/models"))["data"]

    def default_model(self) -> str:
        if self._model is None:
            self._model = self.models()[0]["id"]
        return self._model

    def chat(self, messages: Messages, model: str | None = None, decoding: Any = None, **fields: Any) -> ChatCompletion:
        body = _body(model or self.default_model(), decoding, False, messages=messages, **fields)
        return ChatCompletion.model_validate(_check(self.http.post("/v1/chat/completions", json=body)))

    def chat_stream(self, messages: Messages, model: str | None = None, decoding: Any = None,
                    **fields: Any) -> Iterator[ChatCompletionChunk]:
        body = _body(model or self.default_model(), decoding, True, messages=messages, **fields)
        for payload in self._stream("/v1/chat/completions", body):
            yield ChatCompletionChunk.model_validate(payload)

    def complete(self, prompt: str | list, model: str | None = None, decoding: Any = None, **fields: Any) -> Completion:
        body = _body(model or self.default_model(), decoding, False, prompt=prompt, **fields)
        return Completion.model_validate(_check(self.http.post("/v1/completions", json=body)))

    def complete_stream(self, prompt: str | list, model: str | None = None, decoding: Any = None,
                        **fields: Any) -> Iterator[Completion]:
        body = _body(model or self.default_model(), decoding, True, prompt=prompt, **fields)
        for payload in self._stream("/v1/completions", body):
            yield Completion.model_validate(payload)

    def feedback(self, completion_id: str, score: float | None = None, label: str | None = None) -> dict[str, Any]:
        body = _body(None, None, False, completion_id=completion_id, score=score, label=label)
        return _check(self.http.post("/v1/feedback", json=body))

    def health(self) -> dict[str, Any]:
        return self.http.get("/health").json()

    def _stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        with self.http.stream("POST", path, json=body) as response:
            if response.status_code >= 400:
                response.read()
                _check(response)
            for line in response.iter_lines():
                try:
                    payload = _sse_data(line)
                except StopIteration:
                    return
                if payload is not None:
                    yield payload


class AsyncClient(_Base):
    """Asynchronous client, the same methods as `Client` as coroutines and async iterators."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 600.0):
        super().__init__(base_url, api_key, timeout)
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def models(self) -> list[dict[str, Any]]:
        return _check(await self.http.get("/v1/models"))["data"]

    async def default_model(self) -> str:
        if self._model is None:
            self._model = (await self.models())[0]["id"]
        return self._model

    async def chat(self, messages: Messages, model: str | None = None, decoding: Any = None,
                   **fields: Any) -> ChatCompletion:
        body = _body(model or await self.default_model(), decoding, False, messages=messages, **fields)
        return ChatCompletion.model_validate(_check(await self.http.post("/v1/chat/completions", json=body)))

    async def chat_stream(self, messages: Messages, model: str | None = None, decoding: Any = None,
                          **fields: Any) -> AsyncIterator[ChatCompletionChunk]:
        body = _body(model or await self.default_model(), decoding, True, messages=messages, **fields)
        async for payload in self._stream("/v1/chat/completions", body):
            yield ChatCompletionChunk.model_validate(payload)

    async def complete(self, prompt: str | list, model: str | None = None, decoding: Any = None,
                       **fields: Any) -> Completion:
        body = _body(model or await self.default_model(), decoding, False, prompt=prompt, **fields)
        return Completion.model_validate(_check(await self.http.post("/v1/completions", json=body)))

    async def complete_stream(self, prompt: str | list, model: str | None = None, decoding: Any = None,
                              **fields: Any) -> AsyncIterator[Completion]:
        body = _body(model or await self.default_model(), decoding, True, prompt=prompt, **fields)
        async for payload in self._stream("/v1/completions", body):
            yield Completion.model_validate(payload)

    async def feedback(self, completion_id: str, score: float | None = None,
                       label: str | None = None) -> dict[str, Any]:
        body = _body(None, None, False, completion_id=completion_id, score=score, label=label)
        return _check(await self.http.post("/v1/feedback", json=body))

    async def health(self) -> dict[str, Any]:
        return (await self.http.get("/health")).json()

    async def _stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        async with self.http.stream("POST", path, json=body) as response:
            if response.status_code >= 400:
                await response.aread()
                _check(response)
            async for line in response.aiter_lines():
                try:
                    payload = _sse_data(line)
                except StopIteration:
                    return
                if payload is not None:
                    yield payload
