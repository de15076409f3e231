"""The scheduler driven by fabricated model outputs: admission, budgets, join/leave, preemption."""

from counterpoint.server.worker.torch.block_manager import BlockManager, KVPools
from counterpoint.server.worker.torch.scheduler import Scheduler, SchedulerConfig
from counterpoint.server.worker.sequence import GroupStatus, Sequence, SequenceGroup
from counterpoint.server.worker_protocol import SamplingParams


def group(name: str, prompt_len: int, views: int = 1) -> SequenceGroup:
    seqs = [Sequence(f"v{i}", list(range(prompt_len)), prompt_len) for i in range(views)]
    return SequenceGroup(name, 0, seqs, SamplingParams(), None, frozenset(), 100)


def pools(num_blocks: int, block_size: int) -> KVPools:
    return KVPools({"main": BlockManager(num_blocks, block_size)})


def fake_step(groups: list[SequenceGroup]) -> None:
    """What the engine does after a forward: every view's tokens are computed, one token appended."""
    for g in groups:
        for s in g.seqs:
            s.num_computed_tokens = len(s.token_ids)
        g.append_token(7)


def test_groups_are_scheduled_whole_and_join_a_running_batch():
    sched = Scheduler(SchedulerConfig(), pools(100, 4))
    a = group("a", 5, views=2)
    sched.add(a)
    assert sched.schedule() == [a] and a.status is GroupStatus.RUNNING
    fake_step([a])
    b = group("b", 3)
    sched.add(b)
    assert sched.schedule() == [a, b]  # a decodes while b prefills, in one step
    assert [s.num_new_tokens for s in a.seqs] == [1, 1] and b.seqs[0].num_new_tokens == 3


def test_token_and_row_budgets():
    sched = Scheduler(SchedulerConfig(max_num_seqs=3, max_num_batched_tokens=10), pools(100, 4))
    for name, n in (("a", 6), ("b", 6), ("c", 1), ("d", 1)):
        sched.add(group(name, n))
    assert [g.group_id for g in sched.schedule()] == ["a"]  # b would exceed 10 tokens
    fake_step(sched.running)
    assert [g.group_id for g in sched.schedule()] == ["a", "b", "c"]  # 3 rows at most
    huge = Scheduler(SchedulerConfig(max_num_batched_tokens=16), pools(100, 4))
    huge.add(group("long", 40))
    assert len(huge.schedule()) == 1  # a lone prompt over the budget still runs


def test_admission_waits_for_free_blocks():
    sched = Scheduler(SchedulerConfig(), pools(4, 4))
    sched.add(group("a", 12))  # 3 blocks
    sched.add(group("b", 8))  # 2 blocks: does not fit beside a
    assert [g.group_id for g in sched.schedule()] == ["a"]
    sched.finish(sched.running[0])
    assert [g.group_id for g in sched.schedule()] == ["b"]


def test_preempts_newest_when_out_of_blocks():
    sched = Scheduler(SchedulerConfig(), pools(4, 4))
    a, b = group("a", 8), group("b", 8)  # 2 blocks each: the cache is full
    sched.add(a)
    sched.add(b)
    assert sched.schedule() == [a, b]
    fake_step([a, b])  # both need a third block now
    assert sched.schedule() == [a]
    assert b.status is GroupStatus.WAITING and sched.waiting[0] is b and sched.num_preemptions == 1
    assert b.seqs[0].num_computed_tokens == 0 and len(b.seqs[0].token_ids) == 9  # recomputed with its output
    sched.finish(a)
    assert sched.schedule() == [b] and b.seqs[0].num_new_tokens == 9
