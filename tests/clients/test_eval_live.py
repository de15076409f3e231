"""`counterpoint eval` against the live tiny gateway: scores match an independent transformers reference,
the CLI prints one table and writes JSON, and a method the server refuses becomes an error row."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM

from counterpoint.clients.eval.items import ChoiceSet, MCItem
from counterpoint.clients.eval.runner import Client, MethodSpec, Options, run_method
from counterpoint.clients.eval.scoring import mc2
from counterpoint.server.cli import main as counterpoint

CONTEXT = "Q: What is the capital of France?\nA:"
CHOICES = [" Paris", " Lyon", " The capital is Marseille", " Berlin"]


@pytest.fixture(scope="module")
def reference(tiny_llama_dir, tokenizer):
    """log P(choice | context) by transformers on the same weights: the independent reference."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()

    def logprob(context: str, choice: str) -> float:
        ctx = tokenizer(context, add_special_tokens=False).input_ids
        ids = tokenizer(context + choice, add_special_tokens=False).input_ids
        assert ids[:len(ctx)] == ctx  # the boundary is a token boundary for these strings
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)  # [T, V]
        return sum(lp[i - 1, ids[i]].item() for i in range(len(ctx), len(ids)))
    return logprob


def test_mc_scores_match_transformers(tiny_gateway, reference):
    labels = [1, 0, 0, 1]
    item = MCItem(id="q", context=CONTEXT, mc1=ChoiceSet(choices=CHOICES, labels=labels),
                  mc2=ChoiceSet(choices=CHOICES, labels=labels))

    async def go():
        async with httpx.AsyncClient(base_url=tiny_gateway.url, timeout=60) as http:
            return await run_method(Client(http), [item], MethodSpec("plain", {"method": "plain"}),
                                    Options(model="tiny"), progress=False)
    run = asyncio.run(go())
    (result,) = run.results
    assert result.error is None
    ref = [reference(CONTEXT, c) for c in CHOICES]
    best = max(range(4), key=ref.__getitem__)
    assert result.scores["mc1"] == float(labels[best] == 1)
    assert result.scores["mc2"] == pytest.approx(mc2(ref, labels), abs=1e-4)
    assert run.tokens > 0


def test_characters_split_across_tokens(tiny_gateway, reference):
    """Multi-byte characters split over tokens (U+FFFD parts) in the context, in the choices, or in both still
    score right: the server's text_offset follows the text."""
    cases = [("Q: Wö ünïcode 日本語?\nA:", [" Paris", " Lyon"]), ("Q: Capital of Japan?\nA:", [" 東京", " Tōkyō"]),
             ("Q: ünïcode?\nA:", [" 日本", " Lyon"])]
    items = [MCItem(id=str(i), context=ctx, mc2=ChoiceSet(choices=ch, labels=[1, 0]))
             for i, (ctx, ch) in enumerate(cases)]

    async def go():
        async with httpx.AsyncClient(base_url=tiny_gateway.url, timeout=60) as http:
            return await run_method(Client(http), items, MethodSpec("plain", {"method": "plain"}),
                                    Options(model="tiny"), progress=False)
    results = asyncio.run(go()).results
    for (context, choices), result in zip(cases, results):
        assert result.error is None
        for c in choices:
            assert result.logprobs[c] == pytest.approx(reference(context, c), abs=1e-3)


def test_cli_prints_one_table_and_writes_json(tiny_gateway, gateway_client, tmp_path, capsys):
    task = tmp_path / "task.jsonl"
    records = [{"type": "mc", "id": f"m{i}", "prompt": CONTEXT, "choices": CHOICES[i:] + CHOICES[:i],
                "labels": [1, 0, 0, 0]} for i in range(3)]
    records += [{"type": "generate", "id": "g1", "prompt": "Name a colour.", "answers": ["blue"],
                 "hallucinations": ["purple"]},
                {"type": "generate", "id": "g2", "prompt": "Say hello.", "answers": ["hello"]}]
    task.write_text("\n".join(json.dumps(r) for r in records))
    out = tmp_path / "result.json"
    with pytest.raises(SystemExit) as exit_:
        counterpoint(["eval", "--url", tiny_gateway.url + "/v1", "--task", str(task), "--methods", "plain,scmoe",
                      "--json", str(out), "--concurrency", "3", "--max-tokens", "6", "--no-progress"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "model tiny" in text and "5 items" in text
    rows = [line.split() for line in text.splitlines()[3:]]  # rows after the first of a method: no method cell
    assert rows[0][:3] == ["plain", "mc1", "3"] and rows[1][:2] == ["mc2", "3"]
    assert rows[2][:2] == ["accuracy", "2"] and rows[3][:2] == ["hallucination", "1"]
    assert rows[4][:2] == ["scmoe", "error"] and "Mixture-of-Experts" in text and len(rows) == 5  # dense model

    doc = json.loads(out.read_text())
    plain, scmoe = doc["methods"]
    assert doc["model"] == "tiny" and plain["failed"] == 0 and plain["tokens_per_s"] > 0
    assert scmoe["error"].startswith("HTTP 400") and scmoe["failed"] == 5
    answers = {r["id"]: r["answer"] for r in doc["results"]["plain"] if r["answer"] is not None}
    direct = gateway_client.post("/v1/chat/completions", json={
        "model": "tiny", "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 6,
        "temperature": 0}).json()
    assert answers["g1"] == direct["choices"][0]["message"]["content"]  # the same greedy answer, scored


def test_cli_reports_an_unreachable_server(tmp_path, capsys):
    task = tmp_path / "t.jsonl"
    task.write_text(json.dumps({"type": "generate", "prompt": "hi", "answers": ["x"]}))
    with pytest.raises(SystemExit) as exit_:
        counterpoint(["eval", "--url", "http://127.0.0.1:9", "--task", str(task), "--no-progress"])
    assert exit_.value.code == 2 and "cannot reach" in capsys.readouterr().err
