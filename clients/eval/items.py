"""The two kinds of evaluation item every reader produces, and the counterpoint JSONL schema that maps onto them.

A multiple-choice item is scored by the log-probability of each choice after a shared context (prompt
scoring through /v1/completions); a generation item by what the model answers to a chat message.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ChoiceSet(BaseModel):
    """Choices appended verbatim to the context, each labelled true (1) or false (0)."""

    model_config = ConfigDict(extra="forbid")
    choices: list[str] = Field(min_length=2)
    labels: list[Literal[0, 1]]

    @model_validator(mode="after")
    def _check(self) -> ChoiceSet:
        if len(self.labels) != len(self.choices):
            raise ValueError("labels must have one entry per choice")
        if 1 not in self.labels or 0 not in self.labels:
            raise ValueError("labels need at least one true (1) and one false (0) choice")
        if any(not c for c in self.choices):
            raise ValueError("choices must not be empty strings")
        return self


class MCItem(BaseModel):
    """Scored as MC1 on `mc1` and MC2 on `mc2` (either may be absent)."""

    id: str
    context: str  # the text every choice is appended to
    mc1: ChoiceSet | None = None  # MC1: is the highest-scoring choice a true one?
    mc2: ChoiceSet | None = None  # MC2: normalised probability mass on the true choices

    @property
    def texts(self) -> list[str]:
        """Every distinct choice of both sets, in first-seen order (each is scored once)."""
        seen: dict[str, None] = {}
        for cs in (self.mc1, self.mc2):
            for c in cs.choices if cs else []:
                seen.setdefault(c, None)
        return list(seen)


class GenItem(BaseModel):
    """Scored by matching the greedy answer against accepted answers and known wrong ones."""

    id: str
    prompt: str  # the user message, sent as is (for lqcd: the leading question)
    system: str | None = None  # an optional system message
    answers: list[str] = Field(min_length=1)  # accepted answers: a match counts as correct
    wrong: list[str] = Field(default_factory=list)  # known hallucinated / sycophantic answers
    wrong_metric: str = "hallucination"  # the metric name for matching a `wrong` answer


Item = MCItem | GenItem


# ---- counterpoint's own JSONL: one object per line --------------------------------------------------

class OwnMC(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["mc"]
    id: str | None = None
    prompt: str = Field(min_length=1)  # the context; each choice is appended verbatim (include the leading space)
    choices: list[str]
    labels: list[Literal[0, 1]]  # 1 = true choice; MC1 and MC2 are both scored on this one set

    def item(self, line: int) -> MCItem:
        cs = ChoiceSet(choices=self.choices, labels=self.labels)
        return MCItem(id=self.id or str(line), context=self.prompt, mc1=cs, mc2=cs)


class OwnGen(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["generate"]
    id: str | None = None
    prompt: str  # the user message
    system: str | None = None
    answers: list[str] = Field(min_length=1)
    hallucinations: list[str] = Field(default_factory=list)

    def item(self, line: int) -> GenItem:
        return GenItem(id=self.id or str(line), prompt=self.prompt, system=self.system, answers=self.answers,
                       wrong=self.hallucinations)


class OwnLine(BaseModel):
    line: OwnMC | OwnGen = Field(discriminator="type")
