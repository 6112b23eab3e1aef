"""How a batch's shared prefixes are described to ``shared_prefix_attention``.

A *prefix group* is a set of sequences whose first ``prefix_len`` tokens are the same tokens
stored in the same KV-cache blocks (a prefix cache hands out shared blocks, so the block-table
rows of the members agree on their first ``ceil(prefix_len / block_size)`` entries). A batch
may hold several groups; a sequence belongs to at most one; sequences in none are fine.

The engine builds a ``PrefixGroups`` once per step on the host, from plain lists, with
``describe_prefix_groups``; ``group_by_shared_blocks`` finds the groups from the block tables
when the engine has no better source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PrefixGroups:
    """Device tensors for the kernels plus the host-side sizes that pick their launch shape."""

    prefix_lens: torch.Tensor  # int32 [G]: shared tokens of each group
    leaders: torch.Tensor  # int32 [G]: a member whose block-table row holds the shared blocks
    query_rows: torch.Tensor  # int32 [R]: rows of q belonging to members, grouped by group
    query_positions: torch.Tensor  # int32 [R]: each of those rows' position in its sequence
    row_starts: torch.Tensor  # int32 [G + 1]: group g owns query_rows[row_starts[g]:row_starts[g + 1]]
    suffix_starts: torch.Tensor  # int32 [num_seqs]: first key of each sequence's own (suffix) part
    max_prefix_len: int
    max_rows_per_group: int

    @property
    def num_groups(self) -> int:
        return int(self.prefix_lens.shape[0])


def describe_prefix_groups(
    groups: Sequence[tuple[Sequence[int], int]],
    query_start_loc: Sequence[int],
    seq_lens: Sequence[int],
    device: torch.device | str = "cpu",
    *,
    block_tables: torch.Tensor | None = None,
    block_size: int | None = None,
) -> PrefixGroups:
    """Build ``PrefixGroups`` from ``(member sequence indices, prefix_len)`` pairs.

    ``query_start_loc`` and ``seq_lens`` are the host copies of the tensors the attention call
    gets. Pass ``block_tables`` (CPU) and ``block_size`` to check that members really share
    their prefix blocks; a mismatch raises ``ValueError``.
    """
    num_seqs = len(seq_lens)
    if len(query_start_loc) != num_seqs + 1:
        raise ValueError(f"query_start_loc needs {num_seqs + 1} entries, has {len(query_start_loc)}")
    seen: set[int] = set()
    prefix_lens, leaders, rows, positions, starts = [], [], [], [], [0]
    suffix_starts = [0] * num_seqs
    for members, prefix_len in groups:
        if not members:
            raise ValueError("a prefix group needs at least one member")
        for s in members:
            if not 0 <= s < num_seqs or s in seen:
                raise ValueError(f"sequence {s} is out of range or in two prefix groups")
            if not 0 <= prefix_len <= seq_lens[s]:
                raise ValueError(f"prefix_len {prefix_len} exceeds sequence {s}'s length {seq_lens[s]}")
            seen.add(s)
            suffix_starts[s] = prefix_len
            q_start, q_end = query_start_loc[s], query_start_loc[s + 1]
            context = seq_lens[s] - (q_end - q_start)
            rows.extend(range(q_start, q_end))
            positions.extend(range(context, seq_lens[s]))
        if block_tables is not None and block_size is not None and prefix_len > 0:
            shared = -(-prefix_len // block_size)
            lead_row = block_tables[members[0], :shared]
            for s in members[1:]:
                if not torch.equal(block_tables[s, :shared], lead_row):
                    raise ValueError(f"sequence {s} does not share the first {shared} blocks of {members[0]}")
        prefix_lens.append(prefix_len)
        leaders.append(members[0])
        starts.append(len(rows))

    def int32(values: Sequence[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.int32, device=device)

    return PrefixGroups(
        prefix_lens=int32(prefix_lens),
        leaders=int32(leaders),
        query_rows=int32(rows),
        query_positions=int32(positions),
        row_starts=int32(starts),
        suffix_starts=int32(suffix_starts),
        max_prefix_len=max(prefix_lens, default=0),
        max_rows_per_group=max((b - a for a, b in zip(starts, starts[1:])), default=0),
    )


def group_by_shared_blocks(
    block_tables: Sequence[Sequence[int]],
    seq_lens: Sequence[int],
    block_size: int,
    *,
    min_shared_blocks: int = 1,
) -> list[tuple[list[int], int]]:
    """Group sequences whose block-table rows start with the same block ids.

    Sequences are grouped by their first block; a group's prefix is the longest run of leading
    blocks all members share, capped at the shortest member's length. Groups of one and groups
    sharing fewer than ``min_shared_blocks`` blocks are left out: the plain kernel serves them.
    Returns ``(members, prefix_len)`` pairs for ``describe_prefix_groups``.
    """
    by_first: dict[int, list[int]] = {}
    for s, length in enumerate(seq_lens):
        if length > 0:
            by_first.setdefault(block_tables[s][0], []).append(s)
    groups = []
    for members in by_first.values():
        if len(members) < 2:
            continue
        rows = [block_tables[s][: -(-seq_lens[s] // block_size)] for s in members]
        shared = 0
        while all(len(r) > shared for r in rows) and len({r[shared] for r in rows}) == 1:
            shared += 1
        if shared >= min_shared_blocks:
            groups.append((members, min([shared * block_size] + [seq_lens[s] for s in members])))
    return groups
