"""KV cache block accounting: which cache blocks each view owns, shared prefixes, and free space.

Blocks are reference counted. Only full blocks are shared and shared blocks are never written again, so no
copy-on-write is needed. Two kinds of sharing:
- within a group: when a group is admitted, each view shares the full blocks of the prompt prefix it has in
  common with an earlier view of the same group (written by that view in the same forward);
- across requests (prefix caching): once a full block is computed its content is known by a chain hash of
  every token up to its end (and the view's routing), and a later view whose prompt starts the same way
  reuses it instead of recomputing it. A freed block that holds a known prefix stays cached (still counted
  free) until a new block is needed and it is the least recently used one.
`KVPools` holds one `BlockManager` per model and routes each view to its own.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from ..sequence import Sequence, SequenceGroup


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_caching: bool = True):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_caching = enable_caching
        self.free_blocks: deque[int] = deque(range(num_blocks))  # blocks holding nothing worth keeping
        self.cached: OrderedDict[int, None] = OrderedDict()  # free blocks holding a known prefix, LRU first
        self.ref_counts = [0] * num_blocks
        self.hash_of: dict[int, int] = {}  # block -> chain hash of the prefix it ends
        self.block_of: dict[int, int] = {}  # chain hash -> the block holding it
        self.num_cached_tokens = 0  # prompt tokens taken from the cache instead of computed (metrics, tests)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_blocks) + len(self.cached)

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
            common = min(_common_prefix(seq.token_ids, other.token_ids), _shareable(seq))
            common = common if other.max_shared is None else min(common, other.max_shared)
            num_blocks = common // self.block_size
            if num_blocks > best_blocks:
                best, best_blocks = other, num_blocks
        return best, best_blocks

    def _block_hash(self, seq: Sequence, i: int, parent: int | None) -> int:
        bs = self.block_size
        return hash((parent, seq.weak_rank, tuple(seq.token_ids[i * bs:(i + 1) * bs])))

    def _cached_prefix(self, seq: Sequence, use_cache: bool = True) -> tuple[list[int], list[int]]:
        """The cached blocks (and their hashes) that hold the start of `seq`'s tokens."""
        blocks, hashes = [], []
        if not (self.enable_caching and use_cache):
            return blocks, hashes
        for i in range(_shareable(seq) // self.block_size):
            h = self._block_hash(seq, i, hashes[-1] if hashes else None)
            block = self.block_of.get(h)
            if block is None:
                break
            blocks.append(block)
            hashes.append(h)
        return blocks, hashes

    def num_blocks_to_allocate(self, seqs: list[Sequence], use_cache: bool = True) -> int:
        """Free blocks admission takes: new ones, plus cached free ones it revives."""
        needed, revived = 0, set()
        for i, seq in enumerate(seqs):
            _, shared = self._shared_prefix(seq, seqs[:i])
            hits = self._cached_prefix(seq, use_cache)[0]
            if len(hits) >= shared:
                shared = len(hits)
                revived.update(b for b in hits if self.ref_counts[b] == 0)
            needed += self._blocks_for(len(seq.token_ids) + seq.lookahead) - shared
        return needed + len(revived)

    def allocate(self, seqs: list[Sequence], use_cache: bool = True) -> None:
        """Give every view of a newly admitted group the blocks for its whole current token list
        (`use_cache` False: compute every position, even one a cached block holds)."""
        for i, seq in enumerate(seqs):
            assert not seq.block_table
            source, shared = self._shared_prefix(seq, seqs[:i])
            hits, hashes = self._cached_prefix(seq, use_cache)
            if len(hits) >= shared and hits:  # computed before: nothing to recompute
                blocks, seq.block_hashes = hits, hashes
                self.num_cached_tokens += len(hits) * self.block_size
            else:  # written by `source` in the same forward, before this view reads it
                blocks = source.block_table[:shared] if source else []
            for block in blocks:
                self._ref(block)
                seq.block_table.append(block)
            seq.num_computed_tokens = len(blocks) * self.block_size
            self._grow(seq, len(seq.token_ids) + seq.lookahead)

    def register(self, seq: Sequence) -> None:
        """After a forward: the full blocks `seq` has computed become findable by their prefix hash."""
        if not self.enable_caching or seq.scratch_slot is not None:
            return
        for i in range(len(seq.block_hashes), min(seq.num_computed_tokens, _shareable(seq)) // self.block_size):
            h = self._block_hash(seq, i, seq.block_hashes[-1] if seq.block_hashes else None)
            block = seq.block_table[i]
            if h not in self.block_of and block not in self.hash_of:
                self.block_of[h], self.hash_of[block] = block, h
            seq.block_hashes.append(h)

    def _ref(self, block: int) -> None:
        if self.ref_counts[block] == 0:
            self.cached.pop(block, None)
        self.ref_counts[block] += 1

    def _new_block(self) -> int:
        if self.free_blocks:
            block = self.free_blocks.popleft()
        else:  # evict the least recently used cached prefix block
            block, _ = self.cached.popitem(last=False)
            del self.block_of[self.hash_of.pop(block)]
        self.ref_counts[block] = 1
        return block

    def _unref(self, block: int) -> None:
        self.ref_counts[block] -= 1
        if self.ref_counts[block] == 0:
            if block in self.hash_of:
                self.cached[block] = None
            else:
                self.free_blocks.append(block)

    def _grow(self, seq: Sequence, num_tokens: int) -> None:
        while len(seq.block_table) * self.block_size < num_tokens:
            seq.block_table.append(self._new_block())

    def num_blocks_to_append(self, seqs: list[Sequence]) -> int:
        return sum(self._blocks_for(len(s.token_ids) + s.lookahead) - len(s.block_table) for s in seqs)

    def append(self, seqs: list[Sequence]) -> None:
        """Make room for the tokens appended since the last step (one per view while decoding)."""
        for seq in seqs:
            self._grow(seq, len(seq.token_ids) + seq.lookahead)

    def take(self, n: int) -> list[int]:
        """n blocks outside any view (scratch space), each with one reference."""
        return [self._new_block() for _ in range(n)]

    def release(self, blocks: list[int]) -> None:
        for b in blocks:
            self._unref(b)

    def free(self, seqs: list[Sequence]) -> None:
        for seq in seqs:
            for block in seq.block_table:
                self._unref(block)
            seq.block_table = []
            seq.block_hashes = []
            seq.num_computed_tokens = 0


def _shareable(seq: Sequence) -> int:
    """Tokens of `seq` whose blocks may be shared: all but the last (its logits are needed), none from the
    first image token on (the image's features differ between views)."""
    n = len(seq.token_ids) - 1
    return n if seq.max_shared is None else min(n, seq.max_shared)


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
        use = not group.reads_every_prompt_position
        return all(self.managers[m].num_blocks_to_allocate(seqs, use) + (group.num_scratch_blocks if m == "main" else 0)
                   <= self.managers[m].num_free_blocks for m, seqs in self._by_model(group).items())

    def allocate(self, group: SequenceGroup) -> None:
        for m, seqs in self._by_model(group).items():
            self.managers[m].allocate(seqs, not group.reads_every_prompt_position)
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

    def register(self, seqs: list[Sequence], model: str) -> None:
        for seq in seqs:
            self.managers[model].register(seq)

    @property
    def usage(self) -> float:
        return self.managers["main"].usage
