"""`counterpoint ab-report` on an outcome log written by the real writer."""

from __future__ import annotations

import asyncio
import json

import pytest

from counterpoint.server.cli import main
from counterpoint.server.outcomes import Outcome, OutcomeLog
from tests.server.pg import running_postgres


def fill_log(url: str) -> None:
    """8 rated completions per arm: control is rated 0.25 on average, cd 0.875."""
    log = OutcomeLog(url)

    async def fill():
        for arm, scores in (("control", [0, 0, 1, 0, 0, 1, 0, 0]), ("cd", [1, 1, 1, 0, 1, 1, 1, 1])):
            for i, score in enumerate(scores):
                cid = f"{arm}-{i}"
                log.record(Outcome(id=cid, model="m", method="plain" if arm == "control" else "cd", latency=0.1 * i,
                                   prompt_tokens=5, completion_tokens=7, ttft=0.01, experiment="exp", arm=arm))
                await log.feedback(cid, score, None)
        log.record(Outcome(id="outside", model="m", method="plain", latency=1))  # not in an experiment
    asyncio.run(fill())
    log.close()


@pytest.fixture()
def log_path(tmp_path):
    fill_log(str(tmp_path / "o.db"))
    return tmp_path / "o.db"


def test_json_report(log_path, capsys):
    check_json_report(str(log_path), capsys)


def test_json_report_from_postgres(capsys):
    with running_postgres() as url:
        fill_log(url)
        check_json_report(url, capsys)


def check_json_report(url: str, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["ab-report", "--log", url, "--json"])
    assert done.value.code == 0
    out = json.loads(capsys.readouterr().out)
    exp = out["experiments"]["exp"]
    assert exp["control"] == "control" and set(exp["arms"]) == {"control", "cd"}
    assert exp["arms"]["cd"]["requests"] == 8 and exp["arms"]["cd"]["completion_tokens"] == 56
    assert exp["arms"]["cd"]["feedback"]["mean"] == 0.875 and exp["arms"]["control"]["feedback"]["mean"] == 0.25
    (cmp,) = exp["comparisons"]
    assert cmp["arm"] == "cd" and cmp["difference"] == 0.625 and cmp["significant"] is True


def test_text_report_and_config(log_path, tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(f'outcome_log = "{log_path}"\n')
    with pytest.raises(SystemExit) as done:
        main(["ab-report", "--config", str(config)])
    text = capsys.readouterr().out
    assert done.value.code == 0
    assert "experiment exp (control: control)" in text and "cd vs control" in text and "SIGNIFICANT" in text


def test_missing_log(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["ab-report", "--log", str(tmp_path / "none.db")])
    assert done.value.code == 1 and "no outcome log" in capsys.readouterr().err
