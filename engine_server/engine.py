"""The synchronous engine: requests in, one scheduled+executed step at a time, deltas out."""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from triage_router.policies.catalog import make_admission, make_ordering
from triage_router.policies.cost_model import CostModel
from triage_router.policies.request import DEFAULT_PRIORITY

from triage_router.engine_server import cpu_ops
from triage_router.engine_server.attention import make_attention_backend
from triage_router.engine_server.checkpoint import load_model, load_tokenizer, resolve_model_dir
from triage_router.engine_server.config import EngineConfig, ModelConfig
from triage_router.engine_server.cpu_linear import packing_applies
from triage_router.engine_server.detokenizer import IncrementalDetokenizer
from triage_router.engine_server.kv_cache import KVCacheManager, bytes_per_block
from triage_router.engine_server.kv_event_publisher import ZmqEventPublisher
from triage_router.engine_server.model import LlamaForCausalLM
from triage_router.engine_server.model_runner import ModelRunner
from triage_router.engine_server.scheduler import Scheduler, SchedulerOutput
from triage_router.engine_server.sequence import FinishReason, SamplingParams, Sequence, TokenLogprob

log = logging.getLogger("engine_server")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# Seconds per token for SmolLM2-135M on two CPU cores, measured roughly: the orderings only
# need the right proportions (prefill vs decode vs a host copy of KV).
CPU_COST_MODEL = CostModel(dc1=2e-7, dc2=2e-3, pc1=1e-7, pc2=8e-4, swap_s_per_token=5e-6)


class RequestRejected(ValueError):
    """The request can never run on this engine (too long for the model or the KV pool)."""


@dataclass(frozen=True)
class EngineLimits:
    """The fixed sizes a request is checked against. They never change after start-up, so the
    HTTP side (another thread or process) checks requests without asking the engine."""

    max_model_len: int
    vocab_size: int
    block_size: int
    num_kv_blocks: int

    def validate(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        """Reject what can never run; clamp max_tokens to the context."""
        n = len(prompt_token_ids)
        if n == 0:
            raise RequestRejected("the prompt is empty")
        if n >= self.max_model_len:
            raise RequestRejected(f"the prompt has {n} tokens; this model's context is {self.max_model_len}")
        params.max_tokens = min(params.max_tokens, self.max_model_len - n)
        if -(-(n + params.max_tokens) // self.block_size) > self.num_kv_blocks:
            raise RequestRejected(
                f"{n} prompt + {params.max_tokens} output tokens exceed the KV cache "
                f"({self.num_kv_blocks * self.block_size} tokens)"
            )


@dataclass
class RequestOutput:
    """What one step produced for one request: only the new part."""

    request_id: str
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finished: bool = False
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


@dataclass
class StepTimes:
    """Where step time goes: scheduling, the model runner (inputs, forward, sampling), and
    bookkeeping after it (token append, stop checks, detokenization)."""

    schedule_s: float = 0.0
    execute_s: float = 0.0
    postprocess_s: float = 0.0

    def add(self, schedule: float, execute: float, postprocess: float) -> None:
        self.schedule_s += schedule
        self.execute_s += execute
        self.postprocess_s += postprocess


class LLMEngine:
    def __init__(
        self, config: EngineConfig, model_config: ModelConfig, model: LlamaForCausalLM, tokenizer: Any,
        *, max_model_len: int,
    ) -> None:
        self.config = config
        self.model_config = model_config
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        device = torch.device(config.device)
        dtype = DTYPES[config.dtype]
        per_block = bytes_per_block(
            model_config.num_hidden_layers, model_config.num_key_value_heads, model_config.head_dim, config.block_size, dtype
        )
        num_blocks = config.num_gpu_blocks or self._device_blocks(device, per_block)
        num_swap = config.num_swap_blocks if config.num_swap_blocks is not None else int(config.swap_space_gib * 2**30 // per_block)
        events_config = config.kv_events if config.kv_events is not None and config.kv_events.enabled else None
        self.kv = KVCacheManager(
            num_layers=model_config.num_hidden_layers, kv_heads=model_config.num_key_value_heads,
            head_dim=model_config.head_dim, block_size=config.block_size, num_blocks=num_blocks,
            num_swap_blocks=num_swap, dtype=dtype, device=device, enable_caching=config.enable_prefix_caching,
            kv_events=events_config is not None,
        )
        # kv-wsjf weighs each request's share of the KV pool and of the batch slots.
        ordering = make_ordering(
            config.ordering, CPU_COST_MODEL, kv_capacity_tokens=num_blocks * config.block_size,
            batch_limit=config.max_num_seqs,
        )
        self.scheduler = Scheduler(
            self.kv, ordering, CPU_COST_MODEL,  # type: ignore[arg-type]
            max_num_seqs=config.max_num_seqs, max_num_batched_tokens=config.max_num_batched_tokens,
            priority_preemption=config.priority_preemption,
            # Prefill chunks ride along with decodes here, so prefills need no grouping.
            admission=make_admission(config.ordering, prefill_stalls_decode=False),
        )
        # A sequence must fit the KV pool on its own, or preemption could never make room for it.
        self.max_model_len = min(max_model_len, num_blocks * config.block_size)
        self.limits = EngineLimits(self.max_model_len, model_config.vocab_size, config.block_size, num_blocks)
        self.runner = ModelRunner(model, self.kv, make_attention_backend(device, config.attention_backend), device)
        self.eos_ids = set(model_config.eos_token_ids)
        if tokenizer is not None and tokenizer.eos_token_id is not None:
            self.eos_ids.add(tokenizer.eos_token_id)
        self.seqs: dict[str, Sequence] = {}
        self.detokenizers: dict[str, IncrementalDetokenizer] = {}
        self.num_steps = 0
        self.step_times = StepTimes()
        self.last_schedule: SchedulerOutput | None = None
        self._offline_ids = itertools.count()
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        # Last: it binds sockets and starts a thread, which nothing above may leak by failing.
        self.kv_event_publisher = ZmqEventPublisher(events_config) if events_config is not None else None

    def _device_blocks(self, device: torch.device, per_block: int) -> int:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            return int(free * 0.85 // per_block)  # leave room for activations
        return int(self.config.kv_cache_gib * 2**30 // per_block)

    @classmethod
    def from_config(cls, config: EngineConfig) -> LLMEngine:
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        torch.manual_seed(config.seed)
        path = resolve_model_dir(config.model, config.cache_dir)
        model_config = ModelConfig.from_dir(path)
        max_len = min(config.max_model_len or model_config.max_position_embeddings, model_config.max_position_embeddings)
        model = load_model(path, model_config, DTYPES[config.dtype], torch.device(config.device), max_len)
        if packing_applies(torch.device(config.device), DTYPES[config.dtype]):
            cpu_ops.ops()  # build (or load) the C++ ops now: a first build takes ~30 s, not a request's
        engine = cls(config, model_config, model, load_tokenizer(path), max_model_len=max_len)
        log.info("loaded %s from %s: %d KV blocks of %d tokens", config.model, path, engine.kv.pool.num_blocks, config.block_size)
        return engine

    # --- requests -----------------------------------------------------------------------

    def add_request(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams, *, priority: int = DEFAULT_PRIORITY,
        arrival_time: float | None = None, predicted_output_len: int | None = None, tenant: str = "",
    ) -> Sequence:
        if request_id in self.seqs:
            raise RequestRejected(f"duplicate request id {request_id!r}")
        self.limits.validate(prompt_token_ids, params)
        n = len(prompt_token_ids)
        now = time.monotonic()
        seq = Sequence(
            request_id, prompt_token_ids, params, priority=priority,
            arrival_time=now if arrival_time is None else arrival_time, predicted_output_len=predicted_output_len,
            tenant=tenant,
        )
        seq.arrival_step = self.num_steps
        self.seqs[request_id] = seq
        if self.tokenizer is not None:
            self.detokenizers[request_id] = IncrementalDetokenizer(self.tokenizer, prompt_token_ids, params.stop)
        self.scheduler.add(seq, now)
        self.prompt_tokens_total += n
        return seq

    def abort(self, request_id: str) -> RequestOutput | None:
        seq = self.seqs.get(request_id)
        if seq is None:
            return None
        self.scheduler.abort(seq)
        return self._output(seq, [], [])

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    # --- the step -----------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        try:
            return self._step()
        finally:  # a step that raised still changed the cache: say so
            self._publish_kv_events()

    def _step(self) -> list[RequestOutput]:
        t0 = time.perf_counter()
        sched = self.scheduler.schedule(time.monotonic())
        self.last_schedule = sched
        t1 = time.perf_counter()
        sampled = self.runner.execute(sched.scheduled)
        t2 = time.perf_counter()
        self.num_steps += 1
        for s in sched.scheduled:
            s.seq.num_computed_tokens += s.num_tokens
            self.kv.cache_full_blocks(s.seq)
        outputs = []
        for st in sampled:
            seq = st.seq
            seq.token_ids.append(st.token_id)
            if seq.first_token_step is None:
                seq.first_token_step, seq.first_token_time = self.num_steps, time.monotonic()
            self.generation_tokens_total += 1
            if st.logprob is not None:
                seq.logprobs.append(st.logprob)
            reason = self._stop_reason(seq, st.token_id)
            if reason is not None:
                self.scheduler.finish(seq, reason)
            outputs.append(self._output(seq, [st.token_id], [st.logprob] if st.logprob else []))
        self.step_times.add(t1 - t0, t2 - t1, time.perf_counter() - t2)
        return outputs

    def _publish_kv_events(self) -> None:
        if self.kv_event_publisher is not None:
            assert self.kv.events is not None
            events = self.kv.events.take()
            if events:
                self.kv_event_publisher.publish(events)

    def reset_prefix_cache(self) -> bool:
        """Forget every cached block (only while no request holds one); False if some do."""
        done = self.kv.pool.reset_prefix_cache()
        self._publish_kv_events()
        return done

    def close(self) -> None:
        """Release what outlives a step: the KV-cache event publisher's thread and sockets."""
        if self.kv_event_publisher is not None:
            self.kv_event_publisher.close()
            self.kv_event_publisher = None

    def _stop_reason(self, seq: Sequence, token: int) -> FinishReason | None:
        p = seq.params
        if (token in self.eos_ids and not p.ignore_eos) or token in p.stop_token_ids:
            return FinishReason.STOP
        detok = self.detokenizers.get(seq.request_id)
        if detok is not None and detok.append(token):
            return FinishReason.STOP
        if seq.num_output_tokens >= p.max_tokens or len(seq.token_ids) >= self.max_model_len:
            return FinishReason.LENGTH
        return None

    def _output(self, seq: Sequence, token_ids: list[int], logprobs: list[TokenLogprob]) -> RequestOutput:
        finished = seq.is_finished
        detok = self.detokenizers.get(seq.request_id)
        text = detok.take(final=finished) if detok is not None else ""
        if finished:
            self.seqs.pop(seq.request_id, None)
            self.detokenizers.pop(seq.request_id, None)
        return RequestOutput(
            request_id=seq.request_id, text=text, token_ids=token_ids, logprobs=logprobs, finished=finished,
            finish_reason=seq.finish_reason.value if seq.finish_reason else None,
            prompt_tokens=seq.num_prompt_tokens, completion_tokens=seq.num_output_tokens,
            cached_tokens=seq.num_cached_tokens,
        )

    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams]) -> list[list[int]]:
        """Offline helper: run prompts to completion, return each one's output token ids."""
        plist = params if isinstance(params, list) else [SamplingParams(**vars(params)) for _ in prompts]
        seqs = [self.add_request(f"offline-{next(self._offline_ids)}", p, sp) for i, (p, sp) in enumerate(zip(prompts, plist))]
        while self.has_work():
            self.step()
        return [s.output_token_ids for s in seqs]
