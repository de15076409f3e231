"""Scores for one item: choice log-likelihoods from an echoed /v1/completions response, MC1, MC2, and
normalised matching of a generated answer against reference answers.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from typing import Any

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation + "‘’“”"})


def continuation_logprob(choice: dict[str, Any], prompt: str, context_len: int) -> float:
    """Sum of the log-probs of the tokens of `prompt[context_len:]` in one echoed completions choice.

    The choice's tokens are those that end after the context: the first token whose `text_offset` is at or
    past the context's end, plus a token that straddles the boundary, if the tokenizer merged one. If the
    echoed text carries something before the prompt (a BOS rendered as text), offsets are shifted by it.
    """
    lp, text = choice["logprobs"], choice["text"]
    tokens, offsets = lp["tokens"], lp["text_offset"]
    shift = len(text) - len(prompt) if text.endswith(prompt) else 0
    boundary = _boundary(tokens, offsets, len(text), shift + context_len, len(prompt) - context_len)
    picked = [(tok, v) for tok, v, off in zip(tokens, lp["token_logprobs"], offsets) if off + len(tok) > boundary]
    if not picked:
        raise ValueError("the choice has no tokens of its own in the response")
    if any(v is None for _, v in picked):
        raise ValueError("the choice starts the prompt: its first token has no log-prob (give a context)")
    return float(sum(v for _, v in picked))


def _boundary(tokens: list[str], offsets: list[int], text_len: int, start: int, choice_len: int) -> int:
    """Where the choice begins, in `text_offset` coordinates.

    counterpoint's offsets follow the text. Servers whose offsets count the characters of the token strings
    (vLLM's do) drift after a character split across tokens (U+FFFD in each part): anchor at the start when
    the context's tokens are whole characters, else at the end when the choice's are; if both, refuse.
    """
    end = offsets[-1] + len(tokens[-1]) if tokens else 0
    if end == text_len:
        return start
    split = [off for tok, off in zip(tokens, offsets) if "\ufffd" in tok]
    if split and min(split) >= start:  # only the choice holds split characters: the context's offsets hold
        return start
    if split and all(off + len(tok) <= end - choice_len for tok, off in zip(tokens, offsets) if "\ufffd" in tok):
        return end - choice_len
    raise ValueError("the response's text_offset does not match its text; cannot find where the choice starts")


def mc1(logprobs: list[float], labels: list[int]) -> float:
    """1.0 when the highest-scoring choice is a true one (ties: the first), else 0.0."""
    best = max(range(len(logprobs)), key=logprobs.__getitem__)
    return float(labels[best] == 1)


def mc2(logprobs: list[float], labels: list[int]) -> float:
    """Probability mass on the true choices, normalised over all choices (TruthfulQA MC2)."""
    true = _logsumexp([lp for lp, y in zip(logprobs, labels) if y == 1])
    return math.exp(true - _logsumexp(logprobs))


def _logsumexp(xs: list[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def normalize(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD-style answer normalisation)."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def matches(answer: str, references: list[str], mode: str = "contains") -> bool:
    """`exact`: the normalised answer equals a normalised reference; `contains`: a reference appears in the
    answer as whole words (an exact match also counts)."""
    got = normalize(answer)
    for ref in map(normalize, references):
        if not ref:
            continue
        if got == ref or (mode == "contains" and f" {ref} " in f" {got} "):
            return True
    return False
