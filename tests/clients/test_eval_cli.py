"""`counterpoint eval` options: method labels with parameters, --limit, and the note for a method the server
answered differently."""

from __future__ import annotations

import json

import pytest

from counterpoint.clients.eval.cli import method_specs
from counterpoint.clients.eval.report import notes, summarize
from counterpoint.clients.eval.runner import ItemResult, MethodRun, MethodSpec
from counterpoint.server.cli import main as counterpoint


def test_methods_and_their_parameters():
    specs = method_specs("plain, cd,dola-high", ['cd={"amateur": "layer:4", "beta": 0.5}',
                                                 'dola-high={"method": "dola", "layers": "high"}'])
    assert [(s.label, s.decoding) for s in specs] == [
        ("plain", {"method": "plain"}), ("cd", {"method": "cd", "amateur": "layer:4", "beta": 0.5}),
        ("dola-high", {"method": "dola", "layers": "high"})]
    with pytest.raises(SystemExit, match="not JSON"):
        method_specs("cd", ["cd={amateur}"])
    with pytest.raises(SystemExit, match="JSON-object"):
        method_specs("cd", ["cd=[1]"])
    with pytest.raises(SystemExit, match="empty"):
        method_specs(" , ", [])


def test_a_method_answered_as_another_is_noted():
    def run(label, resolved):
        return MethodRun(MethodSpec(label, {"method": label}), [ItemResult("0", {"mc1": 1.0})], 1, 1.0, resolved)
    summary = summarize([run("plain", {"method": "plain"}), run("cd", {"method": "plain"}), run("dola", None),
                         run("lqcd", {"method": "lqcd", "rewrite": "automatic"})])
    assert notes(summary) == ["note: cd was answered with method 'plain', not 'cd'",
                              "note: dola was answered with method 'plain', not 'dola'"]


def test_limit_and_resolved_decoding(tiny_gateway, tmp_path, capsys):
    task = tmp_path / "t.jsonl"
    task.write_text("\n".join(json.dumps({"type": "generate", "prompt": f"Say {w}.", "answers": [w]})
                              for w in ("yes", "no", "maybe")))
    out = tmp_path / "r.json"
    with pytest.raises(SystemExit) as exit_:
        counterpoint(["eval", "--url", tiny_gateway.url, "--task", str(task), "--limit", "2", "--max-tokens", "2",
                      "--model", "tiny", "--json", str(out), "--no-progress"])
    assert exit_.value.code == 0 and "2 items" in capsys.readouterr().out
    (plain,) = json.loads(out.read_text())["methods"]
    assert plain["items"] == 2 and plain["metrics"]["accuracy"]["n"] == 2
    assert plain["resolved_decoding"]["method"] == "plain"
