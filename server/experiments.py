"""A/B experiments: arms with weights, each with its own `decoding`, and the choice of an arm per request.

The arm is a pure function of (experiment, user): a SHA-256 of both mapped to a point in [0, 1) and
looked up in the arms' cumulative weights, so every gateway replica and every restart agrees. Without a
`user` the point is drawn at random.
"""

from __future__ import annotations

import hashlib
import random
from itertools import accumulate
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .errors import APIError


class Arm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    weight: float = Field(1.0, gt=0)  # relative share of traffic
    decoding: str | dict[str, Any] = "plain"  # what the request's `decoding` field would hold


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arms: list[Arm] = Field(min_length=1)


def unit_point(experiment: str, user: str) -> float:
    """A stable point in [0, 1) for this user in this experiment."""
    digest = hashlib.sha256(f"{experiment}\x00{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def choose_arm(experiment: str, spec: Experiment, user: str | None, rng: random.Random | None = None) -> Arm:
    point = unit_point(experiment, user) if user is not None else (rng or random).random()
    bounds = list(accumulate(a.weight for a in spec.arms))
    target = point * bounds[-1]
    return next((a for a, b in zip(spec.arms, bounds) if target < b), spec.arms[-1])


def check(experiments: dict[str, Experiment]) -> None:
    """Refuse a config whose arms name an unknown method or invalid parameters (at startup, not per request)."""
    from .protocol.common import DecodingField, SamplingFields
    for name, spec in experiments.items():
        for arm in spec.arms:
            field = arm.decoding if isinstance(arm.decoding, str) else DecodingField(**arm.decoding)
            try:
                SamplingFields(model="-", decoding=field).decoding_spec()
            except APIError as exc:
                raise ValueError(f"experiment {name!r}, arm {arm.name!r}: {exc.message}") from exc


def enrol(req: Any, experiments: dict[str, Experiment]) -> tuple[str, str] | None:
    """If `req.decoding` names an experiment, replace it with the chosen arm's decoding; (experiment, arm)."""
    from .protocol.common import DecodingField
    field = req.decoding
    if not isinstance(field, DecodingField) or field.experiment is None:
        return None
    spec = experiments.get(field.experiment)
    if spec is None:
        known = ", ".join(sorted(experiments)) or "none configured"
        raise APIError(400, f"unknown experiment {field.experiment!r} (experiments: {known})", "decoding.experiment")
    if field.method is not None or field.model_extra:
        raise APIError(400, "`experiment` chooses the method; give no method or parameters with it", "decoding")
    arm = choose_arm(field.experiment, spec, req.user)
    decoding = {"method": arm.decoding} if isinstance(arm.decoding, str) else dict(arm.decoding)
    req.decoding = DecodingField(**{**decoding, "diagnostics": field.diagnostics or decoding.get("diagnostics", False)})
    return field.experiment, arm.name


def to_worker(req: Any, request_id: str, experiments: dict[str, Experiment], **kwargs: Any):
    """`req.to_worker(request_id, **kwargs)` with the experiment's arm resolved and named in every `DecodingSpec`."""
    enrolled = enrol(req, experiments)
    gens = req.to_worker(request_id, **kwargs)
    if enrolled is not None:
        for gen in gens if isinstance(gens, list) else [gens]:
            gen.decoding.experiment, gen.decoding.arm = enrolled
    return gens
