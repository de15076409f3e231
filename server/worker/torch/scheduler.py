"""Continuous batching: which sequence groups run in the next step, and how many tokens of each view.

Every step the scheduler keeps all running groups (one decode row per view), preempting the newest ones by
recomputation when the cache has no room for their next token, then admits waiting groups first come
first served while the token budget, the row budget and the free KV blocks allow. Prefill and decode rows
run in the same step. A group is always scheduled whole: its views are rows of the same forward.

Chunked prefill: a prompt longer than what is left of the step's token budget is computed over several
steps (`SequenceGroup.is_partial`: computed, not fused, nothing sampled), so a long prompt never stalls
the running streams. Each view stops one token short of its prompt until the group's last chunk, where
every view computes its last token in the same forward and the group is fused as usual. A view that shares
prefix blocks with an earlier view starts only once that view has computed them. Groups that need every
prompt position in one forward (prompt scoring, contrastive search, images) are not chunked.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..sequence import GroupStatus, SequenceGroup
from .block_manager import KVPools


@dataclass
class SchedulerConfig:
    max_num_seqs: int = 64  # rows (views) in one forward at most
    max_num_batched_tokens: int = 512  # new tokens in one forward at most (longer prompts are chunked)


class Scheduler:
    def __init__(self, config: SchedulerConfig, pools: KVPools):
        self.config = config
        self.pools = pools
        self.waiting: deque[SequenceGroup] = deque()
        self.running: list[SequenceGroup] = []
        self.num_preemptions = 0

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, group: SequenceGroup) -> None:
        self.waiting.append(group)

    def finish(self, group: SequenceGroup) -> None:
        """Take a group out of the scheduler (finished or aborted) and free its blocks at once."""
        if group in self.running:
            self.running.remove(group)
        elif group in self.waiting:
            self.waiting.remove(group)
        self.pools.free(group)
        group.status = GroupStatus.FINISHED

    def schedule(self) -> list[SequenceGroup]:
        scheduled = self._schedule_running()
        budget = self.config.max_num_batched_tokens
        for group in sorted(scheduled, key=_is_prefilling):  # decode rows first, then prefills in progress
            budget -= self._plan(group, budget)
        num_rows = sum(len(g.seqs) for g in scheduled)
        while self.waiting:
            group = self.waiting[0]
            if scheduled and num_rows + len(group.seqs) > self.config.max_num_seqs:
                break
            if scheduled and (budget <= 0 if _is_chunkable(group) else _num_remaining(group) > budget):
                break
            if not self.pools.can_allocate(group):
                break
            self.waiting.popleft()
            self.pools.allocate(group)
            group.status = GroupStatus.RUNNING
            self.running.append(group)
            scheduled.append(group)
            num_rows += len(group.seqs)
            budget -= self._plan(group, budget)
        return scheduled

    @staticmethod
    def _plan(group: SequenceGroup, budget: int) -> int:
        """Set how many tokens each view computes this step (`Sequence.num_scheduled`); returns the total."""
        remaining = [len(s.token_ids) - s.num_computed_tokens for s in group.seqs]
        group.is_partial = False
        if sum(remaining) <= budget or not _is_chunkable(group):
            for seq, n in zip(group.seqs, remaining):
                seq.num_scheduled = n
            return sum(remaining)
        left, ready = max(budget, 0), True
        for i, seq in enumerate(group.seqs):
            earlier = group.seqs[:i]
            ready = ready and all(e.num_computed_tokens + (e.num_scheduled or 0) >= seq.num_computed_tokens
                                  and e.num_computed_tokens + e.num_scheduled == len(e.token_ids) - 1
                                  for e in earlier)
            seq.num_scheduled = min(remaining[i] - 1, left) if ready else 0
            left -= seq.num_scheduled
        if left == max(budget, 0):  # nothing could advance: compute everything now (a lone long prompt)
            for seq, n in zip(group.seqs, remaining):
                seq.num_scheduled = n
            return sum(remaining)
        group.is_partial = True
        return max(budget, 0) - left

    def schedule_only(self, group: SequenceGroup) -> list[SequenceGroup]:
        """Schedule one group alone (after a failed step), admitting it if it waits and fits."""
        if group in self.running:
            if not self.pools.can_append(group):
                return []
            self.pools.append(group)
        elif group in self.waiting and self.pools.can_allocate(group):
            self.waiting.remove(group)
            self.pools.allocate(group)
            group.status = GroupStatus.RUNNING
            self.running.append(group)
        else:
            return []
        self._plan(group, self.config.max_num_batched_tokens)
        return [group]

    def _schedule_running(self) -> list[SequenceGroup]:
        scheduled: list[SequenceGroup] = []
        queue = list(self.running)
        while queue:
            group = queue.pop(0)
            while not self.pools.can_append(group):
                victim = queue.pop() if queue else group
                self.preempt(victim)
                if victim is group:
                    break
            else:
                self.pools.append(group)
                scheduled.append(group)
        return scheduled

    def preempt(self, group: SequenceGroup) -> None:
        """Free a running group's blocks and queue it first; it is recomputed when readmitted."""
        self.running.remove(group)
        self.pools.free(group)
        group.status = GroupStatus.WAITING
        self.waiting.appendleft(group)
        self.num_preemptions += 1


def _num_remaining(group: SequenceGroup) -> int:
    return sum(len(s.token_ids) - s.num_computed_tokens for s in group.seqs)


def _is_prefilling(group: SequenceGroup) -> bool:
    return any(len(s.token_ids) - s.num_computed_tokens > 1 for s in group.seqs)


def _is_chunkable(group: SequenceGroup) -> bool:
    """Prompt scoring, candidate rows and image tokens need every prompt position in one forward."""
    return not (group.reads_every_prompt_position or any(s.images is not None for s in group.seqs))
