"""POST /v1/feedback: a score or a label stored against a completion in the outcome log."""

from __future__ import annotations

import math

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import APIError
from . import metrics
from .deps import Authorized, OutcomesDep

router = APIRouter(prefix="/v1", dependencies=[Authorized])


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    completion_id: str = Field(min_length=1, max_length=128)  # the `id` of a chat or text completion
    score: float | None = None  # any scale the team chooses (e.g. 0/1 thumbs, 1-5 stars); ab-report averages it
    label: str | None = Field(None, max_length=256)  # a free category ("wrong", "hallucinated", ...)

    @field_validator("score")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @model_validator(mode="after")
    def _something(self) -> FeedbackRequest:
        if self.score is None and self.label is None:
            raise ValueError("give a score, a label or both")
        return self


@router.post("/feedback")
async def feedback(req: FeedbackRequest, outcomes: OutcomesDep) -> dict:
    if outcomes is None:
        raise APIError(501, "feedback needs the outcome log: set `outcome_log` in the server's config")
    found = await outcomes.feedback(req.completion_id, req.score, req.label)
    metrics.FEEDBACK.labels(str(found).lower()).inc()
    if not found:
        raise APIError(404, f"no completion with id {req.completion_id!r}", "completion_id", "completion_not_found")
    return {"object": "feedback", "completion_id": req.completion_id, "score": req.score, "label": req.label}
