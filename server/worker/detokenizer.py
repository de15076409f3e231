"""Incremental detokenization and stop strings.

Text is decoded from a sliding window of tokens so each step costs O(1) tokens; text that ends in an
incomplete UTF-8 sequence (U+FFFD) waits for the next token, so a multi-byte character is never split. While
a choice runs, the last `max stop length - 1` characters are held back: they might become part of a stop
string, which is never sent.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

_CONTEXT_TOKENS = 4  # prompt tokens decoded before the output so leading spaces come out right


class Detokenizer:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_ids: list[int], stop: list[str],
                 skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids = list(prompt_ids[-_CONTEXT_TOKENS:])
        self.prefix_offset = 0
        self.read_offset = len(self.ids)
        self.stop = stop
        self.hold = max((len(s) for s in stop), default=1) - 1
        self.text = ""  # the choice's text so far
        self.sent = 0  # characters of `text` already emitted

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def add(self, token_id: int) -> bool:
        """Append one token; True if a stop string now ends the text (the text is cut before it)."""
        self.ids.append(token_id)
        prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
        full = self._decode(self.ids[self.prefix_offset:])
        if full.endswith("\ufffd") or len(full) <= len(prefix):
            return False
        start = max(0, len(self.text) - self.hold)
        self.text += full[len(prefix):]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return self._cut_at_stop(start)

    def _cut_at_stop(self, start: int) -> bool:
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        if not hits:
            return False
        self.text = self.text[:min(hits)]
        return True

    def take(self, finished: bool) -> str:
        """Text not yet emitted; while running, keep back what could still start a stop string."""
        end = len(self.text) if finished else max(self.sent, len(self.text) - self.hold)
        delta, self.sent = self.text[self.sent:end], end
        return delta
