"""The typed `decoding` builders use the parameter names and defaults of methods.md."""

from __future__ import annotations

import pytest

from counterpoint.clients import decoding as dec


def test_every_method_has_a_builder_with_documented_defaults():
    assert dec.plain() == {"method": "plain"}
    assert dec.cd("small") == {"method": "cd", "amateur": "small", "alpha": 0.1, "beta": 0.5,
                               "amateur_temperature": 1.0}
    assert dec.dola("high") == {"method": "dola", "layers": "high", "alpha": 0.1}
    assert dec.lol("small", refocus="Be truthful.") == {"method": "lol", "amateur": "small", "alpha": 0.1,
                                                        "weight": 0.5, "refocus": "Be truthful."}
    assert dec.cfg(negative_prompt="rude") == {"method": "cfg", "guidance_scale": 1.5, "negative_prompt": "rude"}
    assert dec.lqcd() == {"method": "lqcd", "alpha": 1.0, "beta": 0.1}
    assert dec.vcd() == {"method": "vcd", "alpha": 1.0, "beta": 0.1, "noise_step": 500}
    assert dec.ritual() == {"method": "ritual", "alpha_pos": 3.0, "beta": 0.1, "transform": "random"}
    assert dec.scmoe() == {"method": "scmoe", "alpha": 0.1, "beta": 0.5, "weak_rank": 1}
    assert dec.overshadow(conditions=["in 1990"]) == {"method": "overshadow", "alpha": 1.0, "beta": 0.1,
                                                      "conditions": ["in 1990"], "threshold": 0.05}
    assert dec.contrastive_search() == {"method": "contrastive_search", "penalty_alpha": 0.6, "top_k": 4}
    assert {m: dec.by_name(m)["method"] for m in dec.METHODS} == {m: m for m in dec.METHODS}


def test_diagnostics_and_experiment():
    assert dec.cd(diagnostics=True)["diagnostics"] is True
    assert dec.experiment("ab", diagnostics=True) == {"experiment": "ab", "diagnostics": True}


def test_parse_specs():
    assert dec.parse("plain") == {"method": "plain"}
    assert dec.parse("cd:beta=1.0,amateur=layer:4") == {"method": "cd", "beta": 1.0, "amateur": "layer:4"}
    assert dec.parse("dola:layers=[2,4]") == {"method": "dola", "layers": [2, 4]}
    assert dec.parse("experiment:ab") == {"experiment": "ab"}
    with pytest.raises(ValueError):
        dec.parse("magic")
    with pytest.raises(ValueError):
        dec.parse("cd:beta")
