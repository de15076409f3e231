"""`counterpoint chat` and `counterpoint compare` against a live gateway; contrast marking on crafted chunks."""

from __future__ import annotations

import io
import json
import re

import pytest

from counterpoint.clients.chat import diagnostics_line, render_choice
from counterpoint.server.cli import main


def test_marks_tokens_the_contrast_changed():
    choice = {"delta": {"content": "Paris"}, "diagnostics": {"changed": [True], "divergence": [0.3]}}
    assert render_choice(choice, tty=False) == ("[[Paris]]", [True], [0.3])
    assert render_choice(choice, tty=True) == ("\x1b[7mParis\x1b[0m", [True], [0.3])
    kept = {"delta": {"content": " is"}, "diagnostics": {"changed": [False], "divergence": [0.01]}}
    assert render_choice(kept, tty=False) == (" is", [False], [0.01])
    assert render_choice({"delta": {"content": "Lyon"}}, tty=False) == ("Lyon", [], [])  # no diagnostics sent


def test_chat_marks_changed_tokens_live(tiny_gateway, monkeypatch, capsys):
    lines = iter(["I think it is 5. What is 2 + 2?", "/exit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    with pytest.raises(SystemExit):
        main(["chat", "--url", tiny_gateway.url, "--max-tokens", "6", "--temperature", "0", "--show-contrast",
              "--method", "cd:amateur=layer:0"])
    out = capsys.readouterr().out
    found = re.search(r"contrast changed (\d+) of (\d+) token\(s\), mean divergence ([0-9.]+)", out)
    assert found and int(found[1]) <= int(found[2]) <= 6 and int(found[2]) > 0 and float(found[3]) > 0


def test_diagnostics_summary():
    assert diagnostics_line([True, False, True], [0.1, 0.2, 0.3]) == \
        "contrast changed 2 of 3 token(s), mean divergence 0.2000"
    assert diagnostics_line([], []) == "contrast: the server returned no diagnostics"


def test_chat_session(tiny_gateway, monkeypatch, capsys):
    lines = iter(["Hello!", "/method plain", "/reset", "", "Again", "/exit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    with pytest.raises(SystemExit) as done:
        main(["chat", "--url", tiny_gateway.url, "--max-tokens", "4", "--temperature", "0", "--show-contrast"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.count("(contrast: the server returned no diagnostics)") == 2  # plain has no contrast to report


def test_chat_reply_streams_text(tiny_gateway):
    from argparse import Namespace

    from counterpoint.clients.chat import reply
    from counterpoint.clients.client import Client
    args = Namespace(model=None, temperature=0.0, max_tokens=5, show_contrast=False)
    out = io.StringIO()
    with Client(tiny_gateway.url) as c:
        text = reply(c, [{"role": "user", "content": "Hi"}], args, {"method": "plain"}, out)
        expected = c.chat([{"role": "user", "content": "Hi"}], max_tokens=5, temperature=0).text
    assert text == expected and out.getvalue() == text + "\n"


def test_compare_side_by_side(tiny_gateway, capsys):
    with pytest.raises(SystemExit) as done:
        main(["compare", "--url", tiny_gateway.url, "Hi", "-m", "plain", "-m", "plain:bogus=1", "--max-tokens", "4",
              "--width", "100"])
    out = capsys.readouterr().out
    assert done.value.code == 1  # one method was refused
    first = out.splitlines()[0]
    assert first.startswith("plain") and "| plain:bogus=1" in first
    assert "tok" in out and "ERROR: invalid plain parameters" in out


def test_compare_json(tiny_gateway, capsys):
    with pytest.raises(SystemExit) as done:
        main(["compare", "--url", tiny_gateway.url, "Hi", "-m", "plain", "--max-tokens", "3", "--json"])
    (result,) = json.loads(capsys.readouterr().out)
    assert done.value.code == 0 and result["decoding"]["method"] == "plain" and result["completion_tokens"] <= 3
    assert result["error"] is None and result["latency"] >= (result["ttft"] or 0)
