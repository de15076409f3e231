"""KV cache block accounting: which cache blocks each view owns, shared prefixes, and free space.

Blocks are reference counted. When a group is admitted, each view shares the full blocks of the prompt
prefix it has in common with an earlier view of the same group, so that prefix is stored and computed once.
Only full blocks are shared and shared blocks are never written again, so no copy-on-write is needed.
"""

from __future__ import annotations

from collections import deque

from .sequence import Sequence, SequenceGroup


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.free_blocks: deque[int] = deque(range(num_blocks))
        self.ref_counts = [0] * num_blocks

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_blocks)

    @property
    def usage(self) -> float:
        return 1.0 - self.num_free_blocks / self.num_blocks

    def _blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _shared_prefix(self, seq: Sequence, earlier: list[Sequence]) -> tuple[Sequence | None, int]:
        """The earlier view with which `seq` shares the most full blocks, and how many."""
        best, best_blocks = None, 0
        for other in earlier:
            common = _common_prefix(seq.token_ids, other.token_ids)
            common = min(common, len(seq.token_ids) - 1)  # keep one token to compute: its logits are needed
            num_blocks = common // self.block_size
            if num_blocks > best_blocks:
                best, best_blocks = other, num_blocks
        return best, best_blocks

    def num_blocks_to_allocate(self, group: SequenceGroup) -> int:
        needed = 0
        for i, seq in enumerate(group.seqs):
            _, shared = self._shared_prefix(seq, group.seqs[:i])
            needed += self._blocks_for(len(seq.token_ids)) - shared
        return needed

    def can_allocate(self, group: SequenceGroup) -> bool:
        return self.num_blocks_to_allocate(group) <= self.num_free_blocks

    def allocate(self, group: SequenceGroup) -> None:
        """Give every view of a newly admitted group the blocks for its whole current token list."""
        for i, seq in enumerate(group.seqs):
            assert not seq.block_table
            source, shared = self._shared_prefix(seq, group.seqs[:i])
            for block in (source.block_table[:shared] if source else []):
                self.ref_counts[block] += 1
                seq.block_table.append(block)
            # The shared prefix is written by `source` in the same forward, before this view reads it.
            seq.num_computed_tokens = shared * self.block_size
            self._grow(seq, len(seq.token_ids))

    def _grow(self, seq: Sequence, num_tokens: int) -> None:
        while len(seq.block_table) * self.block_size < num_tokens:
            block = self.free_blocks.popleft()
            self.ref_counts[block] = 1
            seq.block_table.append(block)

    def num_blocks_to_append(self, group: SequenceGroup) -> int:
        return sum(self._blocks_for(len(s.token_ids)) - len(s.block_table) for s in group.seqs)

    def can_append(self, group: SequenceGroup) -> bool:
        return self.num_blocks_to_append(group) <= self.num_free_blocks

    def append(self, group: SequenceGroup) -> None:
        """Make room for the tokens appended since the last step (one per view while decoding)."""
        for seq in group.seqs:
            self._grow(seq, len(seq.token_ids))

    def free(self, group: SequenceGroup) -> None:
        for seq in group.seqs:
            for block in seq.block_table:
                self.ref_counts[block] -= 1
                if self.ref_counts[block] == 0:
                    self.free_blocks.append(block)
            seq.block_table = []
            seq.num_computed_tokens = 0
