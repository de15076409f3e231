"""Typed builders for the `decoding` request field, one per method in the design (defaults from methods.md).

Each returns the plain dict the server expects, e.g. `cd(amateur="smollm2-135m", beta=1.0)` ->
`{"method": "cd", "alpha": 0.1, "beta": 1.0, "amateur_temperature": 1.0, "amateur": "smollm2-135m"}`.
Parameters whose default the server derives from the model or the request (a layer, an automatic rewrite)
are left out unless given. `diagnostics=True` asks each choice to report how much the contrast changed it.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

Decoding = dict[str, Any]

METHODS = ("plain", "cd", "dola", "lol", "cfg", "lqcd", "vcd", "ritual", "scmoe", "overshadow",
           "contrastive_search")

def _build(method: str, diagnostics: bool, **params: Any) -> Decoding:
    out: Decoding = {"method": method, **{k: v for k, v in params.items() if v is not None}}
    if diagnostics:
        out["diagnostics"] = True
    return out


def plain(*, diagnostics: bool = False) -> Decoding:
    return _build("plain", diagnostics)


def cd(amateur: str | None = None, *, alpha: float = 0.1, beta: float = 0.5, amateur_temperature: float = 1.0,
       diagnostics: bool = False) -> Decoding:
    """Contrastive decoding against an amateur model id, or "layer:K" for this model's own layer K."""
    return _build("cd", diagnostics, amateur=amateur, alpha=alpha, beta=beta, amateur_temperature=amateur_temperature)


def dola(layers: Literal["low", "high"] | list[int] | None = None, *, alpha: float = 0.1,
         diagnostics: bool = False) -> Decoding:
    """DoLa: contrast the final layer with early-exit layers ("low", "high" or a list of indices)."""
    return _build("dola", diagnostics, layers=layers, alpha=alpha)


def lol(amateur: str | None = None, *, alpha: float = 0.1, lower_layer: int | None = None, weight: float = 0.5,
        refocus: str | None = None, diagnostics: bool = False) -> Decoding:
    """Lower-layer fusion CD; `lower_layer` defaults to half the expert's depth on the server."""
    return _build("lol", diagnostics, amateur=amateur, alpha=alpha, lower_layer=lower_layer, weight=weight,
                  refocus=refocus)


def cfg(*, guidance_scale: float = 1.5, negative_prompt: str | None = None,
        negative_messages: list[dict[str, Any]] | None = None, diagnostics: bool = False) -> Decoding:
    """Classifier-free guidance away from a negative prompt (completions) or negative messages (chat)."""
    return _build("cfg", diagnostics, guidance_scale=guidance_scale, negative_prompt=negative_prompt,
                  negative_messages=negative_messages)


def lqcd(*, alpha: float = 1.0, beta: float = 0.1, neutral_query: str | None = None,
         diagnostics: bool = False) -> Decoding:
    """Leading-query CD; without `neutral_query` the server rewrites the last user message itself."""
    return _build("lqcd", diagnostics, alpha=alpha, beta=beta, neutral_query=neutral_query)


def vcd(*, alpha: float = 1.0, beta: float = 0.1, noise_step: int = 500, diagnostics: bool = False) -> Decoding:
    """Visual CD against the image with diffusion noise (vision-language models)."""
    return _build("vcd", diagnostics, alpha=alpha, beta=beta, noise_step=noise_step)


def ritual(*, alpha_pos: float = 3.0, beta: float = 0.1, transform: str = "random",
           diagnostics: bool = False) -> Decoding:
    """RITUAL: add the logits of a transformed image (vision-language models); `transform` names one."""
    return _build("ritual", diagnostics, alpha_pos=alpha_pos, beta=beta, transform=transform)


def scmoe(*, alpha: float = 0.1, beta: float = 0.5, weak_rank: int = 1, diagnostics: bool = False) -> Decoding:
    """Self-contrast MoE against weak (single-expert) routing; MoE models only."""
    return _build("scmoe", diagnostics, alpha=alpha, beta=beta, weak_rank=weak_rank)


def overshadow(*, alpha: float = 1.0, beta: float = 0.1, conditions: list[str] | None = None,
               threshold: float = 0.05, diagnostics: bool = False) -> Decoding:
    """Contrast with the prompt minus its overshadowed condition (found automatically unless given)."""
    return _build("overshadow", diagnostics, alpha=alpha, beta=beta, conditions=conditions, threshold=threshold)


def contrastive_search(*, penalty_alpha: float = 0.6, top_k: int = 4, diagnostics: bool = False) -> Decoding:
    """Contrastive search: top-k candidates scored with a degeneration penalty."""
    return _build("contrastive_search", diagnostics, penalty_alpha=penalty_alpha, top_k=top_k)


def experiment(name: str, *, diagnostics: bool = False) -> Decoding:
    """Enrol in a server-side A/B experiment; pass `user=` on the request for a stable arm."""
    return {"experiment": name, **({"diagnostics": True} if diagnostics else {})}


def by_name(method: str, **params: Any) -> Decoding:
    """The builder for `method` by name (for CLIs): `by_name("cd", beta=1.0)`."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    return globals()[method](**params)


def parse(spec: str) -> Decoding:
    """A command-line spec -> decoding: "cd", "cd:beta=1.0,amateur=layer:4", "experiment:NAME"."""
    method, _, rest = spec.partition(":")
    if method == "experiment":
        return experiment(rest)
    params: dict[str, Any] = {}
    for item in filter(None, re.split(r",(?=\s*[A-Za-z_]\w*=)", rest)):  # commas before key=
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"expected key=value in {spec!r}, got {item!r}")
        try:
            params[key.strip()] = json.loads(value)
        except ValueError:
            params[key.strip()] = value
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    return {"method": method, **params}  # only what was given: the server fills in the defaults
