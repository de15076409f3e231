"""vLLM's logprob records -> the worker protocol's `TokenLogprob` (as the PyTorch engine reports them)."""

from __future__ import annotations

from ...worker_protocol import TokenLogprob, TopLogprob
from ..torch.engine import MIN_LOGPROB


def token_text(tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id])


def vllm_logprob(tokenizer, token: int, entries: dict, k: int) -> TokenLogprob:
    """entries: vLLM's {token id: Logprob(logprob, rank)} for one position (the chosen token + the k best)."""
    top = sorted((lp.rank, t, lp.logprob) for t, lp in entries.items() if lp.rank is not None and lp.rank <= k)
    chosen = entries[token].logprob if token in entries else MIN_LOGPROB
    return TokenLogprob(token_id=token, token=token_text(tokenizer, token), logprob=max(chosen, MIN_LOGPROB),
                        top=[TopLogprob(token_id=t, token=token_text(tokenizer, t), logprob=max(v, MIN_LOGPROB))
                             for _, t, v in top[:k]])


def vllm_prompt_logprobs(tokenizer, ids: list[int], entries: list, k: int) -> list[TokenLogprob]:
    """One entry per prompt token; the first has no context (logprob None), as in the PyTorch engine."""
    result = [TokenLogprob(token_id=ids[0], token=token_text(tokenizer, ids[0]), logprob=None)]
    return result + [vllm_logprob(tokenizer, t, d or {}, k) for t, d in zip(ids[1:], entries[1:])]
