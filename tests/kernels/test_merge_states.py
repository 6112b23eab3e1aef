"""merge_states: exact recombination of attention over disjoint key sets, empty partials."""

from __future__ import annotations

import pytest
import torch

from triage_router.kernels.merge_states import merge_states, merge_states_reference
from tests.kernels.paged_batches import DEVICE, DTYPES, TOLERANCE


def chunked_states(
    scores: torch.Tensor, values: torch.Tensor, bounds: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """States of softmax(scores) @ values over key chunks [bounds[i], bounds[i+1]); empty chunks get NaN v."""
    vs, ss = [], []
    for lo, hi in zip(bounds, bounds[1:]):
        x = scores[..., lo:hi]
        if hi == lo:
            vs.append(torch.full(scores.shape[:2] + values.shape[-1:], float("nan")))
            ss.append(torch.full(scores.shape[:2], float("-inf")))
            continue
        vs.append(torch.einsum("thk,khd->thd", torch.softmax(x, dim=-1), values[lo:hi]))
        ss.append(torch.logsumexp(x, dim=-1))  # natural log, as documented
    return torch.stack(vs), torch.stack(ss)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("num_heads", "head_dim"), [(3, 64), (9, 96), (1, 16)])
def test_merge_recovers_full_attention(dtype: torch.dtype, num_heads: int, head_dim: int) -> None:
    gen = torch.Generator().manual_seed(num_heads * head_dim)
    tokens, keys = 5, 40
    scores = torch.randn(tokens, num_heads, keys, generator=gen) * 3
    values = torch.randn(keys, num_heads, head_dim, generator=gen)
    bounds = [0, 7, 7, 31, 40]  # includes one empty chunk
    v, s = chunked_states(scores, values, bounds)
    out, lse = merge_states(v.to(device=DEVICE, dtype=dtype), s.to(DEVICE))
    out, lse = out.cpu(), lse.cpu()
    full = torch.einsum("thk,khd->thd", torch.softmax(scores, dim=-1), values)
    tol = TOLERANCE[dtype]
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), full, atol=tol, rtol=tol)
    torch.testing.assert_close(lse, torch.logsumexp(scores, dim=-1), atol=1e-5, rtol=1e-5)
    ref_out, ref_lse = merge_states_reference(v, s)
    torch.testing.assert_close(ref_out, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ref_lse, lse, atol=1e-5, rtol=1e-5)


def test_all_empty_rows_give_zero_and_minus_inf() -> None:
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(3, 4, 2, 32, generator=gen)
    s = torch.randn(3, 4, 2, generator=gen)
    s[:, 1, :] = float("-inf")  # token 1: every partial empty
    v[:, 1, :] = float("nan")
    s[0, 2, 1] = float("-inf")  # token 2, head 1: one empty partial holding NaN
    v[0, 2, 1] = float("nan")
    out, lse = (t.cpu() for t in merge_states(v.to(DEVICE), s.to(DEVICE)))
    ref_out, ref_lse = merge_states_reference(v, s)
    assert (out[1] == 0).all() and torch.isneginf(lse[1]).all()
    assert not out.isnan().any()
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse, ref_lse, atol=1e-5, rtol=1e-5)


def test_single_state_is_identity_and_strided_inputs_work() -> None:
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(4, 3, 2, 16, generator=gen).to(DEVICE).transpose(1, 2)  # non-contiguous [n, tokens, heads, dim]
    s = torch.randn(4, 3, 2, generator=gen).to(DEVICE).transpose(1, 2)
    out, lse = merge_states(v[:1], s[:1])
    torch.testing.assert_close(out, v[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(lse, s[0])
    out, lse = merge_states(v, s, out_dtype=torch.float16)
    ref_out, ref_lse = merge_states_reference(v, s)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), ref_out, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(lse, ref_lse, atol=1e-5, rtol=1e-5)
