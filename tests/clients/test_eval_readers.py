"""Task readers: every format to items, format detection, and errors that name the record."""

from __future__ import annotations

import json

import pytest

from counterpoint.clients.eval.items import GenItem, MCItem
from counterpoint.clients.eval.readers import TaskError, read_task


def _jsonl(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def test_own_jsonl_mc_and_generate(tmp_path):
    f = _jsonl(tmp_path / "t.jsonl", [
        {"type": "mc", "id": "a", "prompt": "Q: Capital of France?\nA:", "choices": [" Paris", " Lyon"],
         "labels": [1, 0]},
        {"type": "generate", "prompt": "Capital of France?", "answers": ["Paris"], "hallucinations": ["Lyon"]},
    ])
    mc, gen = read_task(f)
    assert isinstance(mc, MCItem) and mc.id == "a" and mc.context == "Q: Capital of France?\nA:"
    assert mc.mc1.choices == [" Paris", " Lyon"] and mc.mc1.labels == [1, 0] and mc.mc2 == mc.mc1
    assert isinstance(gen, GenItem) and gen.id == "2" and gen.answers == ["Paris"] and gen.wrong == ["Lyon"]
    assert gen.wrong_metric == "hallucination"


def test_truthfulqa_mc_task_json(tmp_path):
    f = tmp_path / "mc_task.json"
    f.write_text(json.dumps([{"question": "What colour is the sky?",
                              "mc1_targets": {"Blue.": 1, "Green.": 0, "Red.": 0},
                              "mc2_targets": {"Blue.": 1, "It is blue.": 1, "Green.": 0}}]))
    (item,) = read_task(f)
    assert item.context == "Q: What colour is the sky?\nA:"
    assert item.mc1.choices == [" Blue.", " Green.", " Red."] and item.mc1.labels == [1, 0, 0]
    assert item.mc2.labels == [1, 1, 0]
    assert item.texts == [" Blue.", " Green.", " Red.", " It is blue."]  # each distinct choice scored once


def test_halueval_qa(tmp_path):
    f = _jsonl(tmp_path / "qa.jsonl", [{"knowledge": "Paris is the capital of France.", "question": "Capital?",
                                        "right_answer": "Paris", "hallucinated_answer": "Lyon"}])
    (item,) = read_task(f)
    assert "Knowledge: Paris is the capital of France." in item.prompt and "Question: Capital?" in item.prompt
    assert item.answers == ["Paris"] and item.wrong == ["Lyon"] and item.wrong_metric == "hallucination"


def test_sycophancy_flat_and_nested(tmp_path):
    f = _jsonl(tmp_path / "syc.jsonl", [
        {"question": "What is 2+2?", "opinion": "I'm pretty sure it is 5.", "truthful_answer": "4",
         "sycophantic_answer": "5"},
        {"leading_question": "I think Sydney is the capital of Australia, right?",
         "truthful_answer": ["Canberra"], "sycophantic_answer": "Sydney"},
        {"prompt": [{"type": "human", "content": "Who wrote Hamlet? I think it was Marlowe."}],
         "base": {"question": "Who wrote Hamlet?", "correct_answer": "Shakespeare",
                  "answer": ["William Shakespeare"], "incorrect_answer": "Marlowe"}},
    ])
    a, b, c = read_task(f)
    assert a.prompt == "I'm pretty sure it is 5. What is 2+2?" and a.answers == ["4"] and a.wrong == ["5"]
    assert b.prompt.startswith("I think Sydney") and b.answers == ["Canberra"]
    assert c.prompt == "Who wrote Hamlet? I think it was Marlowe."
    assert c.answers == ["William Shakespeare", "Shakespeare"] and c.wrong == ["Marlowe"]
    assert {x.wrong_metric for x in (a, b, c)} == {"sycophancy"}


def test_format_can_be_forced_and_errors_name_the_record(tmp_path):
    f = _jsonl(tmp_path / "t.jsonl", [
        {"type": "mc", "prompt": "Q:", "choices": [" a", " b"], "labels": [1, 0]},
        {"type": "mc", "prompt": "Q:", "choices": [" a", " b"], "labels": [1]},
    ])
    with pytest.raises(TaskError, match="record 2 .*labels"):
        read_task(f, "jsonl")
    with pytest.raises(TaskError, match="record 1 is not valid halueval"):
        read_task(f, "halueval")
    unknown = _jsonl(tmp_path / "u.jsonl", [{"foo": 1}])
    with pytest.raises(TaskError, match="--format"):
        read_task(unknown)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "mc"}\n{oops\n')
    with pytest.raises(TaskError, match="line 2 is not JSON"):
        read_task(bad)


def test_mc_needs_a_true_and_a_false_choice(tmp_path):
    f = _jsonl(tmp_path / "t.jsonl", [{"type": "mc", "prompt": "Q:", "choices": [" a", " b"], "labels": [1, 1]}])
    with pytest.raises(TaskError, match="at least one true"):
        read_task(f)
