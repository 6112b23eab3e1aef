"""Triton kernels for the engine's CUDA path, each beside its torch reference.

The layout they expect (paged cache, block tables, packed queries) and the invariants the
engine must keep are in docs/design/kernels.md. Everything runs on CPU tensors too, through
Triton's interpreter (``TRITON_INTERPRET=1``, set before importing this package), which is how
the tests check them; that is slow, so the engine's CPU path stays on torch.

Attention (all return ``(out, lse)``; ``lse`` is the natural-log log-sum-exp per row):
    paged_attention          prefill, chunked prefill and decode over block tables
    split_kv_decode          decode with each sequence's keys split across programs
    shared_prefix_attention  cascade attention for requests sharing prefix blocks
Building blocks:
    merge_states             merge partial states by LSE
    write_kv_cache           store a step's new K/V rows at their slots
    describe_prefix_groups, group_by_shared_blocks, PrefixGroups
"""

from kernels.kv_cache_write import write_kv_cache, write_kv_cache_reference
from kernels.merge_states import merge_states, merge_states_reference
from kernels.paged_attention import paged_attention, paged_attention_reference
from kernels.prefix_groups import PrefixGroups, describe_prefix_groups, group_by_shared_blocks
from kernels.shared_prefix_attention import shared_prefix_attention
from kernels.split_kv_decode import num_kv_splits, split_kv_decode

__all__ = [
    "PrefixGroups",
    "describe_prefix_groups",
    "group_by_shared_blocks",
    "merge_states",
    "merge_states_reference",
    "num_kv_splits",
    "paged_attention",
    "paged_attention_reference",
    "shared_prefix_attention",
    "split_kv_decode",
    "write_kv_cache",
    "write_kv_cache_reference",
]
