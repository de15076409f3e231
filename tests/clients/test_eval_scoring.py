"""Per-item scoring on fabricated responses, confidence intervals, and the printed table."""

from __future__ import annotations

import math

import pytest

from counterpoint.clients.eval import stats
from counterpoint.clients.eval.report import summarize, table
from counterpoint.clients.eval.runner import ItemResult, MethodRun, MethodSpec
from counterpoint.clients.eval.scoring import continuation_logprob, matches, mc1, mc2, normalize


def _choice(text: str, tokens: list[str], lps: list[float | None]) -> dict:
    offsets, pos = [], 0
    for t in tokens:
        offsets.append(pos)
        pos += len(t)
    return {"text": text, "logprobs": {"tokens": tokens, "token_logprobs": lps, "text_offset": offsets,
                                       "top_logprobs": [None] + [{} for _ in tokens[1:]]}}


def test_continuation_logprob_sums_only_the_choice_tokens():
    prompt = "Q: sky?\nA: blue sky"
    c = _choice(prompt, ["Q", ":", " sky", "?\n", "A", ":", " blue", " sky"],
                [None, -1.0, -2.0, -3.0, -4.0, -5.0, -0.5, -0.25])
    assert continuation_logprob(c, prompt, len("Q: sky?\nA:")) == pytest.approx(-0.75)


def test_a_token_straddling_the_boundary_belongs_to_the_choice():
    prompt = "Q: x\nA: yes"  # the context "Q: x\nA" ends inside the token "\nA:"
    c = _choice(prompt, ["Q", ": x", "\nA:", " yes"], [None, -1.0, -2.0, -3.0])
    assert continuation_logprob(c, prompt, len("Q: x\nA")) == pytest.approx(-5.0)  # "\nA:" straddles


def test_text_echoed_before_the_prompt_shifts_the_boundary():
    prompt = "Q: x\nA: yes"
    c = _choice("<s>" + prompt, ["<s>", "Q", ": x", "\nA:", " yes"], [None, -9.0, -1.0, -2.0, -3.0])
    assert continuation_logprob(c, prompt, len("Q: x\nA:")) == pytest.approx(-3.0)


def test_offsets_that_drift_over_split_characters():
    """Offsets count token-string characters; a character split over two tokens ("\ufffd", "\ufffd") is one
    character of text but two of offsets. The boundary is anchored where the offsets still hold."""
    prompt = "Q: ü?\nA: yes"  # context "Q: ü?\nA:" (8 characters); its "ü" is split
    c = _choice(prompt, ["Q:", " \ufffd", "\ufffd", "?\nA:", " yes"], [None, -1.0, -2.0, -3.0, -4.0])
    assert continuation_logprob(c, prompt, len("Q: ü?\nA:")) == pytest.approx(-4.0)
    prompt = "Q: x\nA: ü"  # now the choice holds the split character
    c = _choice(prompt, ["Q: x", "\nA:", " \ufffd", "\ufffd"], [None, -1.0, -2.0, -3.0])
    assert continuation_logprob(c, prompt, len("Q: x\nA:")) == pytest.approx(-5.0)
    prompt = "Q: ü\nA: ü"  # both: refused rather than guessed
    c = _choice(prompt, ["Q: \ufffd", "\ufffd", "\nA:", " \ufffd", "\ufffd"], [None, -1.0, -2.0, -3.0, -4.0])
    with pytest.raises(ValueError, match="text_offset"):
        continuation_logprob(c, prompt, len("Q: ü\nA:"))


def test_a_choice_without_context_is_refused():
    c = _choice("yes", ["yes"], [None])
    with pytest.raises(ValueError, match="no log-prob"):
        continuation_logprob(c, "yes", 0)


def test_mc1_and_mc2():
    assert mc1([-1.0, -0.5, -3.0], [0, 1, 0]) == 1.0
    assert mc1([-1.0, -0.5, -3.0], [1, 0, 0]) == 0.0
    lps = [math.log(0.2), math.log(0.1), math.log(0.3)]
    assert mc2(lps, [1, 1, 0]) == pytest.approx(0.3 / 0.6)
    assert mc2([-1000.0, -1001.0], [1, 0]) == pytest.approx(1 / (1 + math.exp(-1)))  # no underflow


def test_normalised_matching():
    assert normalize("  The Eiffel-Tower!  ") == "eiffel tower"
    assert matches("It is the Eiffel Tower.", ["eiffel tower"])
    assert not matches("It is the Eiffel Tower.", ["eiffel tower"], mode="exact")
    assert matches("Eiffel tower", ["The Eiffel Tower"], mode="exact")
    assert not matches("Parisian", ["Paris"])  # whole words only
    assert not matches("anything", ["", "!!"])  # empty references never match


def test_wilson_matches_scipy():
    # scipy.stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert stats.wilson(7, 20) == pytest.approx((0.1811918241010821, 0.5671457233147637), abs=1e-9)
    assert stats.wilson(1, 3) == pytest.approx((0.06149194472039626, 0.7923403991979523), abs=1e-9)
    assert stats.wilson(0, 5)[0] == 0.0 and stats.wilson(5, 5)[1] == 1.0


def test_bootstrap_interval_contains_the_mean_and_is_deterministic():
    values = [0.1, 0.4, 0.35, 0.8, 0.6, 0.55, 0.2, 0.9]
    lo, hi = stats.interval(values)
    assert lo < sum(values) / len(values) < hi and (lo, hi) == stats.interval(values)
    d, dlo, dhi = stats.paired_delta([1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0])
    assert d == pytest.approx(0.5) and dlo <= d <= dhi


def _run(label: str, scores: list[float | None]) -> MethodRun:
    results = [ItemResult(str(i), {"mc1": s}) if s is not None else ItemResult(str(i), error="HTTP 503: busy")
               for i, s in enumerate(scores)]
    return MethodRun(MethodSpec(label, {"method": label}), results, tokens=100, seconds=2.0)


def test_summary_and_table():
    rejected = MethodRun(MethodSpec("dola", {"method": "dola"}),
                         [ItemResult(str(i), error="HTTP 400: unknown decoding method 'dola'") for i in range(4)],
                         tokens=0, seconds=0.1)
    runs = [_run("plain", [1, 0, 0, 1]), _run("cd", [1, 1, None, 1]), rejected]
    plain, cd, dola = summarize(runs)
    assert plain["metrics"]["mc1"]["score"] == 0.5 and plain["metrics"]["mc1"]["delta"] is None
    assert plain["tokens_per_s"] == 50.0 and plain["metrics"]["mc1"]["ci_method"] == "wilson"
    m = cd["metrics"]["mc1"]
    assert cd["failed"] == 1 and m["n"] == 3 and m["score"] == 1.0
    assert m["delta"] == pytest.approx(1 - 2 / 3) and m["delta_n"] == 3  # paired over items both answered
    assert cd["failures"] == [{"id": "2", "error": "HTTP 503: busy"}]
    assert dola["error"] == "HTTP 400: unknown decoding method 'dola'" and dola["metrics"] == {}
    text = table([plain, cd, dola])
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["method", "metric", "n", "score"]
    assert lines[3].split()[:4] == ["cd", "mc1", "3", "1.000"] and "+0.333" in lines[3] and "1/4" in lines[3]
    assert lines[4].split()[:4] == ["dola", "error", "(4/4", "failed):"] and "unknown decoding method" in lines[4]
