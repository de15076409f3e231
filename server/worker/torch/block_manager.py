"""KV cache block accounting: which cache blocks each view owns, shared prefixes, and free space.

Blocks are reference counted. When a group is admitted, each view shares the full blocks of the prompt
prefix it has in common with an earlier view of the same group on the same model, so that prefix is stored
and computed once. Only full blocks are shared and shared blocks are never written again, so no
copy-on-write is needed. `KVPools` holds one `BlockManager` per model and routes each view to its own.
"""

from __future__ import annotations

from collections import deque

from ..sequence import Sequence, SequenceGroup


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
            if other.weak_rank != seq.weak_rank:  # different routing: the same tokens give other keys/values
                continue
            common = _common_prefix(seq.token_ids, other.token_ids)
            common = min(common, len(seq.token_ids) - 1)  # keep one token to compute: its logits are needed
            for limit in (seq.max_shared, other.max_shared):
                common = common if limit is None else min(common, limit)
            num_blocks = common // self.block_size
            if num_blocks > best_blocks:
                best, best_blocks = other, num_blocks
        return best, best_blocks

    def num_blocks_to_allocate(self, seqs: list[Sequence]) -> int:
        needed = 0
        for i, seq in enumerate(seqs):
            _, shared = self._shared_prefix(seq, seqs[:i])
            needed += self._blocks_for(len(seq.token_ids) + seq.lookahead) - shared
        return needed

    def allocate(self, seqs: list[Sequence]) -> None:
        """Give every view of a newly admitted group the blocks for its whole current token list."""
        for i, seq in enumerate(seqs):
            assert not seq.block_table
            source, shared = self._shared_prefix(seq, seqs[:i])
            for block in (source.block_table[:shared] if source else []):
                self.ref_counts[block] += 1
                seq.block_table.append(block)
            # The shared prefix is written by `source` in the same forward, before this view reads it.
            seq.num_computed_tokens = shared * self.block_size
            self._grow(seq, len(seq.token_ids) + seq.lookahead)

    def _grow(self, seq: Sequence, num_tokens: int) -> None:
        while len(seq.block_table) * self.block_size < num_tokens:
            block = self.free_blocks.popleft()
            self.ref_counts[block] = 1
            seq.block_table.append(block)

    def num_blocks_to_append(self, seqs: list[Sequence]) -> int:
        return sum(self._blocks_for(len(s.token_ids) + s.lookahead) - len(s.block_table) for s in seqs)

    def append(self, seqs: list[Sequence]) -> None:
        """Make room for the tokens appended since the last step (one per view while decoding)."""
        for seq in seqs:
            self._grow(seq, len(seq.token_ids) + seq.lookahead)

    def take(self, n: int) -> list[int]:
        """n blocks outside any view (scratch space), each with one reference."""
        blocks = [self.free_blocks.popleft() for _ in range(n)]
        for b in blocks:
            self.ref_counts[b] = 1
        return blocks

    def release(self, blocks: list[int]) -> None:
        for b in blocks:
            self.ref_counts[b] -= 1
            if self.ref_counts[b] == 0:
                self.free_blocks.append(b)

    def free(self, seqs: list[Sequence]) -> None:
        for seq in seqs:
            for block in seq.block_table:
                self.ref_counts[block] -= 1
                if self.ref_counts[block] == 0:
                    self.free_blocks.append(block)
            seq.block_table = []
            seq.num_computed_tokens = 0


class KVPools:
    """The block managers of all the worker's models, with group-level operations over them."""

    def __init__(self, managers: dict[str, BlockManager]):
        self.managers = managers

    def _by_model(self, group: SequenceGroup) -> dict[str, list[Sequence]]:
        split: dict[str, list[Sequence]] = {}
        for seq in group.seqs:
            split.setdefault(seq.model, []).append(seq)
        return split

    def can_allocate(self, group: SequenceGroup) -> bool:
        return all(self.managers[m].num_blocks_to_allocate(seqs) + (group.num_scratch_blocks if m == "main" else 0)
                   <= self.managers[m].num_free_blocks for m, seqs in self._by_model(group).items())

    def allocate(self, group: SequenceGroup) -> None:
        for m, seqs in self._by_model(group).items():
            self.managers[m].allocate(seqs)
        group.scratch_blocks = self.managers["main"].take(group.num_scratch_blocks)

    def can_append(self, group: SequenceGroup) -> bool:
        return all(self.managers[m].num_blocks_to_append(seqs) <= self.managers[m].num_free_blocks
                   for m, seqs in self._by_model(group).items())

    def append(self, group: SequenceGroup) -> None:
        for m, seqs in self._by_model(group).items():
            self.managers[m].append(seqs)

    def free(self, group: SequenceGroup, seqs: list[Sequence] | None = None) -> None:
        """Free some views of a group, or (seqs None) the whole group with its scratch blocks."""
        for seq in group.seqs if seqs is None else seqs:
            self.managers[seq.model].free([seq])
        if seqs is None:
            self.managers["main"].release(group.scratch_blocks)
            group.scratch_blocks = []

    @property
    def usage(self) -> float:
        return self.managers["main"].usage
