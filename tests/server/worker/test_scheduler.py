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
    """What the engine does after a forward: the scheduled tokens are computed; a group whose prompt is
    complete gets one token appended."""
    for g in groups:
        for s in g.seqs:
            s.num_computed_tokens += s.num_new_tokens
            s.num_scheduled = None
        if not g.is_partial:
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


def test_token_and_row_budgets_with_chunked_prefill():
    sched = Scheduler(SchedulerConfig(max_num_seqs=3, max_num_batched_tokens=10), pools(100, 4))
    a, b, c, d = (group(name, n) for name, n in (("a", 6), ("b", 6), ("c", 1), ("d", 1)))
    for g in (a, b, c, d):
        sched.add(g)
    assert sched.schedule() == [a, b]  # b gets what is left of the 10 tokens: a 4-token chunk
    assert b.is_partial and not a.is_partial and b.seqs[0].num_new_tokens == 4
    fake_step(sched.running)
    assert sched.schedule() == [a, b, c]  # 3 rows at most; b finishes its prompt (2 tokens) with a's decode row
    assert not b.is_partial and b.seqs[0].num_new_tokens == 2 and a.seqs[0].num_new_tokens == 1


def test_a_long_prompt_is_computed_in_chunks_and_decoding_rows_go_first():
    sched = Scheduler(SchedulerConfig(max_num_batched_tokens=16), pools(100, 4))
    running = group("running", 3)
    sched.add(running)
    sched.schedule()
    fake_step([running])
    long = group("long", 40)
    sched.add(long)
    chunks = []
    while not long.output_token_ids:
        assert sched.schedule() == [running, long] and running.seqs[0].num_new_tokens == 1  # never stalled
        chunks.append(long.seqs[0].num_new_tokens)
        fake_step([running, long])
    assert chunks == [15, 15, 10]  # 15 + the decode row fill each step; the rest fits the third


def test_groups_that_need_every_position_at_once_are_not_chunked():
    sched = Scheduler(SchedulerConfig(max_num_batched_tokens=16), pools(100, 4))
    scoring = group("scoring", 40)
    scoring.wants_prompt_logprobs = True
    sched.add(scoring)
    assert sched.schedule() == [scoring] and scoring.seqs[0].num_new_tokens == 40  # a lone prompt still runs


def test_a_view_sharing_a_prefix_waits_for_the_view_that_computes_it():
    sched = Scheduler(SchedulerConfig(max_num_batched_tokens=10), pools(100, 4))
    g = group("two", 20, views=2)  # identical prompts: view 1 shares view 0's first 4 full blocks
    sched.add(g)
    steps = []
    while not g.output_token_ids:
        sched.schedule()
        steps.append([s.num_new_tokens for s in g.seqs])
        fake_step([g])
    # view 1 starts at position 16 once view 0 has computed that far; each stays one token short until the
    # last chunk, where both compute their last token in the same forward
    assert steps == [[10, 0], [9, 1], [1, 3]]


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
