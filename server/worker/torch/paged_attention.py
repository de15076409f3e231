"""Paged KV cache and the attention function that reads and writes it.

transformers' model code stays untouched: we register `counterpoint_paged` in its `AttentionInterface`,
run the model with `cache=None`, and pass a `PagedBatch` through the forward's kwargs. Each attention call
(1) writes the step's new keys/values into their cache slots, then (2) gathers every row's whole context
from the slots and runs transformers' own sdpa attention on the padded rows. Writing before gathering lets
a row read prefix blocks that another view of the same request fills in the same forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

ATTN_IMPLEMENTATION = "counterpoint_paged"


class KVCache:
    """One slot pool per layer: `keys[layer]` is `[num_blocks * block_size, num_kv_heads, head_dim]`."""

    def __init__(self, num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int,
                 head_dim: int, dtype: torch.dtype, device: torch.device):
        self.num_blocks = num_blocks
        self.block_size = block_size
        shape = (num_layers, num_blocks * block_size, num_kv_heads, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)  # [layers, slots, kv_heads, head_dim]
        self.values = torch.zeros(shape, dtype=dtype, device=device)  # [layers, slots, kv_heads, head_dim]

    @staticmethod
    def bytes_per_block(num_layers: int, block_size: int, num_kv_heads: int, head_dim: int,
                        dtype: torch.dtype) -> int:
        itemsize = torch.empty((), dtype=dtype).element_size()
        return 2 * num_layers * block_size * num_kv_heads * head_dim * itemsize


@dataclass
class PagedBatch:
    """Where one forward's packed tokens live in the cache. T packed tokens, B rows (views)."""

    cache: KVCache
    slot_mapping: torch.Tensor  # [T] cache slot that each new token's key/value is written to
    kv_slots: torch.Tensor  # [B, K] slots of each row's whole context, padded with slot 0
    query_index: torch.Tensor | None  # [B, Q] packed index of each row's queries (padded); None if Q == 1
    output_index: torch.Tensor | None  # [T] index into the flattened [B * Q] output; None if Q == 1
    mask: torch.Tensor | None  # [B, 1, Q, K] True where a query may attend; None when no mask is needed
    is_plain_prefill: bool  # one row with no cached context: attend causally to the new tokens only


def paged_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                            value: torch.Tensor, attention_mask: torch.Tensor | None,
                            scaling: float | None = None, dropout: float = 0.0,
                            paged: PagedBatch | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """query `[1, H, T, D]`, key/value `[1, KV, T, D]` -> output `[1, T, H, D]` (transformers' layout)."""
    assert paged is not None, "counterpoint_paged attention needs the `paged` forward kwarg"
    layer = module.layer_idx
    keys, values = paged.cache.keys[layer], paged.cache.values[layer]  # [slots, KV, D]
    keys.index_copy_(0, paged.slot_mapping, key[0].transpose(0, 1))  # [T, KV, D] into their slots
    values.index_copy_(0, paged.slot_mapping, value[0].transpose(0, 1))
    if paged.is_plain_prefill:
        return sdpa_attention_forward(module, query, key, value, None, scaling=scaling)  # [1, T, H, D]

    ctx_k = keys[paged.kv_slots].transpose(1, 2)  # [B, KV, K, D]
    ctx_v = values[paged.kv_slots].transpose(1, 2)  # [B, KV, K, D]
    num_rows, num_heads, head_dim = paged.kv_slots.shape[0], query.shape[1], query.shape[3]
    q = query[0].transpose(0, 1)  # [T, H, D]
    if paged.query_index is None:
        q = q.reshape(num_rows, 1, num_heads, head_dim)  # [B, 1, H, D]: one query per row
    else:
        q = q[paged.query_index]  # [B, Q, H, D]
    out, _ = sdpa_attention_forward(module, q.transpose(1, 2), ctx_k, ctx_v, paged.mask,
                                    scaling=scaling, is_causal=False)  # [B, Q, H, D]
    if paged.output_index is None:
        return out.reshape(1, num_rows, num_heads, head_dim), None  # [1, T, H, D]
    out = out.reshape(-1, num_heads, head_dim)[paged.output_index]  # [T, H, D]
    return out.unsqueeze(0), None  # [1, T, H, D]


AttentionInterface.register(ATTN_IMPLEMENTATION, paged_attention_forward)
