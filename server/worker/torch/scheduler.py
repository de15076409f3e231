"""Continuous batching: which sequence groups run in the next step.

Every step the scheduler keeps all running groups (one decode row per view), preempting the newest ones by
recomputation when the cache has no room for their next token, then admits waiting groups first come
first served while the token budget, the row budget and the free KV blocks allow. Prefill and decode rows
run in the same step. A group is always scheduled whole: its views are rows of the same forward.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..sequence import GroupStatus, SequenceGroup
from .block_manager import KVPools


@dataclass
class SchedulerConfig:
    max_num_seqs: int = 64  # rows (views) in one forward at most
    max_num_batched_tokens: int = 4096  # new tokens in one forward at most (a lone longer prompt still runs)


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
        num_rows = sum(len(g.seqs) for g in scheduled)
        num_tokens = num_rows
        while self.waiting:
            group = self.waiting[0]
            new_tokens = sum(len(s.token_ids) for s in group.seqs)
            if scheduled and (num_rows + len(group.seqs) > self.config.max_num_seqs
                              or num_tokens + new_tokens > self.config.max_num_batched_tokens):
                break
            if not self.pools.can_allocate(group):
                break
            self.waiting.popleft()
            self.pools.allocate(group)
            group.status = GroupStatus.RUNNING
            self.running.append(group)
            scheduled.append(group)
            num_rows += len(group.seqs)
            num_tokens += new_tokens
        return scheduled

    def schedule_only(self, group: SequenceGroup) -> list[SequenceGroup]:
        """Schedule one group alone (after a failed step), admitting it if it waits and fits."""
        if group in self.running:
            if not self.pools.can_append(group):
                return []
            self.pools.append(group)
            return [group]
        if group not in self.waiting or not self.pools.can_allocate(group):
            return []
        self.waiting.remove(group)
        self.pools.allocate(group)
        group.status = GroupStatus.RUNNING
        self.running.append(group)
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
