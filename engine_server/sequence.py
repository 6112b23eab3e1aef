"""A request inside the engine: its tokens, sampling parameters, KV blocks and state."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from triage_router.policies.request import DEFAULT_PRIORITY

from triage_router.engine_server.block_pool import Block


class SequenceStatus(enum.Enum):
    WAITING = "waiting"  # new, or preempted by recompute (no KV blocks)
    RUNNING = "running"
    SWAPPED = "swapped"  # preempted; its KV lives in host blocks
    FINISHED = "finished"


class FinishReason(str, enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"


@dataclass
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: disabled
    seed: int | None = None
    max_tokens: int = 16
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: bool = False
    top_logprobs: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature < 1e-5


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]  # (token id, logprob), best first


class Sequence:
    def __init__(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        *,
        priority: int = DEFAULT_PRIORITY,
        arrival_time: float = 0.0,
        predicted_output_len: int | None = None,
        tenant: str = "",
    ) -> None:
        self.request_id = request_id
        self.tenant = tenant  # fair share (vtc) charges it
        self.token_ids = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.params = params
        self.priority = priority
        # Kept across preemptions: a resumed sequence keeps its place among its peers.
        self.arrival_time = arrival_time
        self.predicted_output_len = predicted_output_len
        self.status = SequenceStatus.WAITING
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0  # prompt tokens served from the prefix cache
        self.block_table: list[Block] = []
        self.block_hashes: list[int] = []  # hashes of the leading full blocks, chained
        self.num_published_blocks = 0  # leading blocks of block_table already in the prefix cache
        self.host_blocks: list[int] = []  # swap space, while SWAPPED
        self.logprobs: list[TokenLogprob] = []
        self.finish_reason: FinishReason | None = None
        self.num_preemptions = 0
        self.first_scheduled_time: float | None = None
        # Engine step counters: TTFT in steps, independent of machine speed and load.
        self.arrival_step = 0
        self.first_token_step: int | None = None
        self.first_token_time: float | None = None
        self.generator: torch.Generator | None = None
        if params.seed is not None:
            self.generator = torch.Generator().manual_seed(params.seed)

    def __repr__(self) -> str:
        return f"Sequence({self.request_id!r}, {self.status.value}, p{self.priority}, {self.num_computed_tokens}/{len(self.token_ids)})"

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status == SequenceStatus.FINISHED

    # --- triage_router.policies.request.RequestState: what orderings and victim choice read -------------

    @property
    def arrival(self) -> float:
        return self.arrival_time

    @property
    def prompt_tokens(self) -> int:
        return self.num_prompt_tokens

    @property
    def predicted_output_tokens(self) -> int:
        # Without a prediction from the router, max_tokens is the only bound we know.
        return self.predicted_output_len if self.predicted_output_len is not None else self.params.max_tokens

    @property
    def output_tokens(self) -> int:
        return self.num_output_tokens

    @property
    def computed_tokens(self) -> int:
        return self.num_computed_tokens

    @property
    def swapped_tokens(self) -> int:
        return self.num_computed_tokens if self.status == SequenceStatus.SWAPPED else 0

    app: str = ""
