"""Token output, shared by every backend: stop checks, incremental text, logprob records, finish reasons.

A backend picks one token per group per step; `ChoiceOutput.emit` appends it to every view, decides whether
the choice ends (stop token, EOS unless ignored, a stop string, max_tokens) and returns the `StepOutput` to
send. The token that ends a choice by id (EOS, stop_token_ids) is appended but not sent, as OpenAI does.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from ..worker_protocol import TokenLogprob, TopLogprob
from .backend import StepOutput
from .detokenizer import Detokenizer
from .sequence import SequenceGroup

MIN_LOGPROB = -9999.0  # what -inf (a token the method rules out) is reported as: JSON has no infinity


def finite(lp: float) -> float:
    return max(lp, MIN_LOGPROB)


def token_logprob(tokenizer: PreTrainedTokenizerBase, token: int, logprob: float, top_ids: list[int] = (),
                  top_logprobs: list[float] = ()) -> TokenLogprob:
    """One position's record: the chosen token's log-prob and the k best (ids and values, best first)."""
    top = [TopLogprob(token_id=t, token=tokenizer.decode([t]), logprob=finite(v)) for t, v in zip(top_ids, top_logprobs)]
    return TokenLogprob(token_id=token, token=tokenizer.decode([token]), logprob=finite(logprob), top=top)


class ChoiceOutput:
    """One choice's text side: its detokenizer and the checks that end it."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, group: SequenceGroup):
        self.tokenizer = tokenizer
        self.group = group
        s = group.sampling
        self.detok = Detokenizer(tokenizer, group.seqs[0].token_ids, s.stop, s.skip_special_tokens)
        self.ends = frozenset(s.stop_token_ids) | (frozenset() if s.ignore_eos else group.eos_token_ids)
        self.num_outputs = 0

    def emit(self, token: int | None, logprob: tuple[float, list[int], list[float]] | None = None,
             prompt_logprobs: list[TokenLogprob] | None = None) -> StepOutput:
        """Append `token` (None: the choice ends before its first token, max_tokens 0) and say what to send.
        `logprob`: (chosen token's log-prob, top ids, top log-probs) when the request asked for logprobs."""
        g = self.group
        new_ids: list[int] = []
        logprobs = None
        if token is None or g.max_tokens <= 0:
            g.finish_reason = "length"
        else:
            g.append_token(token)
            before = len(self.detok.text)
            if token in self.ends:
                g.finish_reason = "stop"
            else:
                new_ids = [token]
                if self.detok.add(token):
                    g.finish_reason = "stop"
                elif g.num_generated >= g.max_tokens:
                    g.finish_reason = "length"
            if logprob is not None:
                entry = token_logprob(self.tokenizer, token, *logprob)
                entry.offset = text_offset(self.detok.text, before, entry.token)
                logprobs = [entry]
        text = self.detok.take(finished=g.finish_reason is not None)
        out = StepOutput(g.group_id, g.index, new_ids, text, logprobs, prompt_logprobs, g.finish_reason,
                         g.seqs[0].num_prompt_tokens, g.num_generated)
        if self.num_outputs == 0 or g.finish_reason is not None:
            out.decided = dict(g.decoder.report())
        self.num_outputs += 1
        return out


def prompt_logprobs(tokenizer: PreTrainedTokenizerBase, ids: list[int], chosen: list[float],
                    top_ids: list[list[int]] | None, top_lps: list[list[float]] | None) -> list[TokenLogprob]:
    """One record per prompt token: the first has no context (logprob None); `chosen[p]` and the top lists
    are for token p+1. Offsets follow the decoded text."""
    offsets = text_offsets(tokenizer, ids)
    result = [TokenLogprob(token_id=ids[0], token=tokenizer.decode([ids[0]]), logprob=None, offset=0)]
    for p, (tok, lp) in enumerate(zip(ids[1:], chosen)):
        entry = token_logprob(tokenizer, tok, lp, top_ids[p] if top_ids else (), top_lps[p] if top_lps else ())
        entry.offset = offsets[p + 1]
        result.append(entry)
    return result


def text_offsets(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[int]:
    """Where each token's text starts in `tokenizer.decode(ids)`: a token that only completes a character
    split across tokens starts where that character does (decoded incrementally, O(len(ids)))."""
    detok = Detokenizer(tokenizer, [], [], skip_special_tokens=False)
    offsets = []
    for token in ids:
        before = len(detok.text)
        detok.add(token)
        offsets.append(text_offset(detok.text, before, tokenizer.decode([token])))
    return offsets


def text_offset(text: str, before: int, token_text: str) -> int:
    """Where a token's text starts, given the text after it was added and the text's length before: a whole
    token ends the text; a token holding part of a character starts where the text stood before it."""
    if token_text and "\ufffd" not in token_text and text.endswith(token_text) and len(text) - len(token_text) >= before:
        return len(text) - len(token_text)
    return before
