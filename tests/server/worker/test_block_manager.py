"""Block accounting with fabricated sequences: allocation, shared prefixes, growth, freeing."""

from counterpoint.server.worker.torch.block_manager import BlockManager
from counterpoint.server.worker.sequence import Sequence, SequenceGroup
from counterpoint.server.worker_protocol import SamplingParams


def group(*prompts: list[int]) -> SequenceGroup:
    seqs = [Sequence(f"v{i}", list(p), len(p)) for i, p in enumerate(prompts)]
    return SequenceGroup("g", 0, seqs, SamplingParams(), None, frozenset(), 100)


def test_allocate_and_free():
    bm = BlockManager(num_blocks=10, block_size=4)
    g = group(list(range(9)))  # 9 tokens -> 3 blocks
    assert bm.num_blocks_to_allocate(g.seqs) == 3
    bm.allocate(g.seqs)
    assert len(g.seqs[0].block_table) == 3 and bm.num_free_blocks == 7
    bm.free(g.seqs)
    assert bm.num_free_blocks == 10 and g.seqs[0].block_table == []


def test_views_share_full_prefix_blocks_only():
    bm = BlockManager(num_blocks=20, block_size=4)
    common = list(range(10))  # 2 full blocks + 2 tokens
    g = group(common + [100, 101], common + [200])
    assert bm.num_blocks_to_allocate(g.seqs) == 3 + (3 - 2)
    bm.allocate(g.seqs)
    a, b = g.seqs
    assert a.block_table[:2] == b.block_table[:2] and a.block_table[2] != b.block_table[2]
    assert b.num_computed_tokens == 8 and a.num_computed_tokens == 0
    assert bm.ref_counts[a.block_table[0]] == 2
    bm.free(g.seqs)
    assert bm.num_free_blocks == 20 and all(c == 0 for c in bm.ref_counts)


def test_identical_views_keep_their_last_token_to_compute():
    bm = BlockManager(num_blocks=20, block_size=4)
    g = group(list(range(8)), list(range(8)))  # identical, block-aligned
    bm.allocate(g.seqs)
    # Only the first block is shared: the second view must compute its last token to get logits.
    assert g.seqs[1].num_computed_tokens == 4 and g.seqs[1].num_new_tokens == 4


def test_append_grows_one_block_at_boundaries():
    bm = BlockManager(num_blocks=3, block_size=2)
    g = group([1, 2])
    bm.allocate(g.seqs)
    g.append_token(3)
    assert bm.num_blocks_to_append(g.seqs) == 1
    bm.append(g.seqs)
    g.append_token(4)
    assert bm.num_blocks_to_append(g.seqs) == 0
    g.append_token(5)
    g.append_token(6)  # needs a 3rd block... and 7 would need a 4th
    bm.append(g.seqs)
    g.append_token(7)
    assert bm.num_blocks_to_append(g.seqs) > bm.num_free_blocks


def test_views_with_different_routing_never_share():
    bm = BlockManager(num_blocks=20, block_size=4)
    g = group(list(range(10)), list(range(10)))
    g.seqs[1].weak_rank = 1  # scmoe's weak view: same tokens, other keys/values
    bm.allocate(g.seqs)
    assert not set(g.seqs[0].block_table) & set(g.seqs[1].block_table)


def test_kv_pools_route_views_to_their_model():
    from counterpoint.server.worker.torch.block_manager import KVPools
    pools = KVPools({"main": BlockManager(4, 4), "amateur": BlockManager(2, 4)})
    g = group(list(range(8)), list(range(8)))
    g.seqs[1].model = "amateur"
    assert pools.can_allocate(g)
    pools.allocate(g)
    assert pools.managers["main"].num_free_blocks == 2 and pools.managers["amateur"].num_free_blocks == 0
    pools.free(g)
    assert pools.managers["amateur"].num_free_blocks == 2


def computed(bm: BlockManager, g: SequenceGroup) -> None:
    """What a forward does: every view's tokens are computed, and its full blocks are registered."""
    for s in g.seqs:
        s.num_computed_tokens = len(s.token_ids)
        bm.register(s)


def test_a_later_request_reuses_the_cached_prefix_blocks():
    bm = BlockManager(num_blocks=10, block_size=4)
    first = group(list(range(10)))  # 2 full blocks + 2 tokens
    bm.allocate(first.seqs)
    computed(bm, first)
    kept = first.seqs[0].block_table[:2]
    bm.free(first.seqs)
    assert bm.num_free_blocks == 10 and bm.usage == 0.0  # cached blocks still count as free
    second = group(list(range(8)) + [50, 51, 52])  # the same first 8 tokens
    assert bm.num_blocks_to_allocate(second.seqs) == 3  # 1 new + 2 revived from the cache
    bm.allocate(second.seqs)
    assert second.seqs[0].block_table[:2] == kept and second.seqs[0].num_computed_tokens == 8
    assert bm.num_cached_tokens == 8
    other = group([9] + list(range(1, 8)))  # differs in its first token: no block matches
    bm.allocate(other.seqs)
    assert other.seqs[0].num_computed_tokens == 0


def test_cached_blocks_are_evicted_least_recently_used_first():
    bm = BlockManager(num_blocks=4, block_size=4)
    a, b = group(list(range(5))), group(list(range(100, 105)))  # one full block each (+1 token)
    for g in (a, b):
        bm.allocate(g.seqs)
        computed(bm, g)
        bm.free(g.seqs)
    assert len(bm.cached) == 2
    big = group(list(range(200, 211)))  # needs 3 blocks: 2 never used, then the oldest cached one (a's)
    bm.allocate(big.seqs)
    again_b, again_a = group(list(range(100, 105))), group(list(range(5)))
    bm.free(big.seqs)
    bm.allocate(again_b.seqs)
    assert again_b.seqs[0].num_computed_tokens == 4  # b's block survived
    bm.allocate(again_a.seqs)
    assert again_a.seqs[0].num_computed_tokens == 0  # a's was evicted


def test_different_routing_or_images_do_not_share_cached_blocks():
    bm = BlockManager(num_blocks=20, block_size=4)
    strong = group(list(range(9)))
    bm.allocate(strong.seqs)
    computed(bm, strong)
    weak = group(list(range(9)))
    weak.seqs[0].weak_rank = 1
    bm.allocate(weak.seqs)
    assert weak.seqs[0].num_computed_tokens == 0
    image = group(list(range(9)))
    image.seqs[0].max_shared = 5  # its first image token at position 5: only the first block may be shared
    bm.allocate(image.seqs)
    assert image.seqs[0].num_computed_tokens == 4
