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
