"""A/B arm choice: stable per user, random without one, shares that follow the weights; config checks."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from counterpoint.server.errors import APIError
from counterpoint.server.experiments import Arm, Experiment, check, choose_arm, enrol, unit_point
from counterpoint.server.protocol.chat import ChatCompletionRequest

EXP = Experiment(arms=[Arm(name="control", weight=1, decoding="plain"),
                       Arm(name="treatment", weight=3, decoding={"method": "plain"})])


POINT_ALICE = 0.27596905139464095  # first 8 bytes of sha256(b"exp\x00alice") / 2**64


def test_same_user_same_arm_and_known_hash():
    assert len({choose_arm("exp", EXP, "user-7").name for _ in range(5)}) == 1
    # SHA-256 of "exp\0alice": fixed for every process, replica and release (Python's hash() is salted)
    assert unit_point("exp", "alice") == POINT_ALICE
    assert unit_point("exp", "alice") != unit_point("other-exp", "alice")


def test_assignment_is_stable_across_processes():
    import subprocess
    import sys
    code = ("from counterpoint.server.experiments import unit_point; "
            "print(repr([unit_point('exp', f'u{i}') for i in range(20)]))")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout for seed in ("1", "2")}
    assert len(runs) == 1
    assert eval(runs.pop()) == [unit_point("exp", f"u{i}") for i in range(20)]


def test_weights_are_respected_for_users_and_anonymous():
    by_user = Counter(choose_arm("exp", EXP, f"user-{i}").name for i in range(4000))
    rng = random.Random(0)
    anon = Counter(choose_arm("exp", EXP, None, rng).name for _ in range(4000))
    for counts in (by_user, anon):
        share = counts["treatment"] / 4000
        assert 0.72 < share < 0.78  # 0.75 expected; 4000 draws give a std of about 0.007


def test_single_arm_and_zero_weight_refused():
    one = Experiment(arms=[Arm(name="only")])
    assert choose_arm("x", one, "anyone").name == "only"
    with pytest.raises(ValueError):
        Arm(name="bad", weight=0)
    with pytest.raises(ValueError):
        Experiment(arms=[])


def test_enrol_rewrites_decoding():
    req = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], user="bob",
                                decoding={"experiment": "exp", "diagnostics": True})
    experiment, arm = enrol(req, {"exp": EXP})
    assert experiment == "exp" and arm == choose_arm("exp", EXP, "bob").name
    gen = req.to_worker("id")
    assert gen.decoding.method == "plain" and gen.decoding.diagnostics is True


@pytest.mark.parametrize("decoding, param", [({"experiment": "nope"}, "decoding.experiment"),
                                             ({"experiment": "exp", "method": "plain"}, "decoding")])
def test_enrol_errors(decoding, param):
    req = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], decoding=decoding)
    with pytest.raises(APIError) as err:
        enrol(req, {"exp": EXP})
    assert err.value.status == 400 and err.value.param == param


def test_check_refuses_unknown_methods():
    check({"exp": EXP})
    with pytest.raises(ValueError, match="arm 'b'"):
        check({"exp": Experiment(arms=[Arm(name="b", decoding="no-such-method")])})
