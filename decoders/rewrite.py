"""Rule-based rewrites of a user message, shared by lqcd (neutral query) and overshadow (conditions)."""

from __future__ import annotations

import re
from collections.abc import Callable

from .base import DecodingError, RequestContext

_OPINION = re.compile(
    r"\b(i (really |strongly |honestly )?(think|believe|feel|suspect|guess|reckon|assume)|"
    r"i'?m (pretty|quite|fairly|very|absolutely|100%)? ?(sure|certain|confident|convinced|positive)|"
    r"i am (pretty |quite |fairly |very |absolutely )?(sure|certain|confident|convinced|positive)|"
    r"in my (opinion|view|experience)|my (gut|hunch)|it seems to me|everyone knows|obviously|clearly|"
    r"the answer (is|must be|should be)|it'?s (definitely|obviously|clearly)|"
    r"(my|our) (teacher|professor|doctor|boss|friend|colleague|textbook)s? (said|says|told|thinks|claims?)|"
    r"as an? (expert|professor|doctor|scientist|engineer|lawyer|teacher|specialist)|"
    r"i (have|hold) an? (phd|ph\.d\.|doctorate|degree|masters?)|i'?ve (studied|worked|taught)|"
    r"(please )?(just )?(confirm|agree|tell me i'?m right)|i need you to (say|confirm|agree))\b", re.I)
_TAG = re.compile(r"[,;]?\s*\b(right|correct|isn'?t (it|that (so|right))|don'?t you (think|agree)|"
                  r"wouldn'?t you (say|agree)|am i right|yes|true)\s*\?\s*$", re.I)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def neutralize(text: str) -> str:
    """Drop the leading cues of a query and keep the question; the text itself if nothing would remain."""
    kept = []
    for sentence in _SENTENCE.split(text.strip()):
        is_question = sentence.rstrip().endswith("?")
        if _OPINION.search(sentence):
            if not is_question:
                continue
            sentence = _strip_clauses(sentence)
        sentence = _TAG.sub("?", sentence) if is_question else sentence
        if sentence.strip(" ?,"):
            kept.append(sentence.strip())
    result = " ".join(kept).strip()
    return result if result else text


def _strip_clauses(question: str) -> str:
    """From a question carrying an opinion, keep the clauses that carry no opinion."""
    parts = re.split(r"(?<=[,;])\s+|\s+(?:but|so|and)\s+", question)
    kept = [p for p in parts if not _OPINION.search(p)]
    text = " ".join(kept).strip(" ,;") if kept else question
    return text if text.endswith("?") else text + "?"


_CLAUSE = re.compile(r"\s*(?:,|;|\bwho\b|\bwhich\b|\bthat\b|\bwith\b|\bwithout\b|\bfrom\b|\bin\b|\bfor\b|"
                     r"\bduring\b|\bbefore\b|\bafter\b|\bwhose\b|\bwhere\b|\bwhen\b)\s*", re.I)


def find_conditions(text: str, max_conditions: int = 8) -> list[str]:
    """Candidate conditions of a query: its clauses and modifier phrases, as substrings of `text`."""
    found: list[str] = []
    matches = list(_CLAUSE.finditer(text))
    for k, m in enumerate(matches):
        if m.start() == 0:  # a question word ("Which ...") is the question, not a condition
            continue
        end = matches[k + 1].start() if k + 1 < len(matches) else len(text)
        phrase = text[m.start():end].strip(" ?.!,;")
        if len(phrase.split()) >= 2 and phrase.strip(" ,;") and phrase not in found:
            found.append(phrase)
    return found[:max_conditions]


def remove(text: str, condition: str) -> str:
    out = text.replace(condition, " ", 1)
    return re.sub(r"\s+([?.!,;])", r"\1", re.sub(r"\s{2,}", " ", out)).strip()


def last_query(ctx: RequestContext, method: str) -> tuple[str, Callable[[str], list[int]]]:
    """The last user message's text (or the text prompt), and a renderer of the request with it replaced."""
    if ctx.messages is not None:
        users = [i for i, m in enumerate(ctx.messages) if m["role"] == "user"]
        if not users:
            raise DecodingError(f"{method} needs a user message")
        content = ctx.messages[users[-1]]["content"]

        def render(text: str) -> list[int]:
            messages = [dict(m) for m in ctx.messages]
            messages[users[-1]]["content"] = _with_text(content, text)
            return ctx.tokenize(messages)
        return _text(content), render
    if isinstance(ctx.prompt, str):
        return ctx.prompt, ctx.tokenize
    raise DecodingError(f"{method} needs a text prompt or chat messages, not token ids")


def _text(content: str | list[dict]) -> str:
    """A message's text; with images, the concatenation of its text parts."""
    return content if isinstance(content, str) else "".join(p["text"] for p in content if p["type"] == "text")


def _with_text(content: str | list[dict], text: str) -> str | list[dict]:
    """The message with its text replaced, image placeholders kept where they were."""
    if isinstance(content, str):
        return text
    parts = [p for p in content if p["type"] != "text"]
    first_text = next((i for i, p in enumerate(content) if p["type"] == "text"), len(content))
    images_before = sum(1 for p in content[:first_text] if p["type"] != "text")
    return parts[:images_before] + [{"type": "text", "text": text}] + parts[images_before:]
