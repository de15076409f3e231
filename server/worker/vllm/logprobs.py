"""vLLM's logprob records -> the worker protocol's `TokenLogprob` (through the shared outputs module)."""

from __future__ import annotations

from ...worker_protocol import TokenLogprob
from ..outputs import MIN_LOGPROB, token_logprob


def vllm_logprob(tokenizer, token: int, entries: dict, k: int) -> TokenLogprob:
    """entries: vLLM's {token id: Logprob(logprob, rank)} for one position (the chosen token + the k best)."""
    top = sorted((lp.rank, t, lp.logprob) for t, lp in entries.items() if lp.rank is not None and lp.rank <= k)[:k]
    chosen = entries[token].logprob if token in entries else MIN_LOGPROB
    return token_logprob(tokenizer, token, chosen, [t for _, t, _ in top], [v for _, _, v in top])


def vllm_prompt_logprobs(tokenizer, ids: list[int], entries: list, k: int) -> list[TokenLogprob]:
    """One entry per prompt token; the first has no context (logprob None), as in the PyTorch engine."""
    result = [TokenLogprob(token_id=ids[0], token=tokenizer.decode([ids[0]]), logprob=None)]
    return result + [vllm_logprob(tokenizer, t, d or {}, k) for t, d in zip(ids[1:], entries[1:])]
