"""Engine configuration and the model architecture read from a checkpoint's config.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import msgspec

DType = Literal["float32", "bfloat16"]
KV_EVENT_PUBLISHERS = ("null", "zmq")


class KVEventsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`--kv-events-config`: vLLM's option of the same name, with its keys and defaults."""

    enable_kv_cache_events: bool = False
    publisher: str | None = None  # None: "zmq" when enabled, else "null" (as in vLLM)
    # A PUB address: `*`, `::`, ipc:// and inproc:// addresses are bound, others connected to.
    endpoint: str = "tcp://*:5557"
    replay_endpoint: str | None = None  # a ROUTER address (always bound) for missed batches
    buffer_steps: int = 10_000  # batches kept for replay
    hwm: int = 100_000  # the PUB socket's send high-water mark
    max_queue_size: int = 100_000  # batches waiting for the publisher thread before drops
    topic: str = ""

    @property
    def enabled(self) -> bool:
        return self.enable_kv_cache_events and self.publisher != "null"

    @classmethod
    def parse(cls, text: str) -> KVEventsConfig:
        """Decode the option's JSON; anything vLLM would not accept is a ValueError saying why."""
        try:
            config = msgspec.json.decode(text, type=cls)
        except msgspec.DecodeError as e:
            raise ValueError(f"not a valid KV events config: {e}") from None
        if config.publisher is None:
            config.publisher = "zmq" if config.enable_kv_cache_events else "null"
        if config.publisher not in KV_EVENT_PUBLISHERS:
            raise ValueError(f"unknown KV events publisher {config.publisher!r}: expected 'zmq' or 'null'")
        if config.buffer_steps < 0 or config.hwm < 0:
            raise ValueError("KV events config: buffer_steps and hwm must be >= 0")
        if config.max_queue_size < 1:  # a queue.Queue of size 0 would be unbounded
            raise ValueError("KV events config: max_queue_size must be >= 1")
        return config


class EngineConfig(msgspec.Struct, kw_only=True):
    """Everything the engine needs to start. Every option has a default except the model."""

    model: str = "default"
    served_model_name: str | None = None
    dtype: DType = "float32"
    device: str = "cpu"
    attention_backend: str = "auto"  # auto: Triton kernels on CUDA, torch on the CPU
    block_size: int = 16
    # CPU has no "free memory" to measure, so the KV pool is a configured budget.
    kv_cache_gib: float = 1.0
    # Host memory for swapped-out sequences.
    swap_space_gib: float = 0.5
    num_gpu_blocks: int | None = None  # override the computed pool size (tests, benchmarks)
    num_swap_blocks: int | None = None
    max_num_seqs: int = 64
    # Token budget per step shared by decodes and prefill chunks (chunked prefill).
    max_num_batched_tokens: int = 512
    max_model_len: int | None = None
    enable_prefix_caching: bool = True
    # Waiting-queue ordering and preemption come from policies/.
    ordering: str = "default"  # policies.catalog.DEFAULT_POLICY, as in the router and the simulator
    # Preempt a running sequence when a more urgent one waits and the batch is full.
    priority_preemption: bool = True
    embedding_model: str | None = "default"
    # bf16 embeds a short prompt in ~6 ms instead of ~10 ms on this CPU (AMX), cosine >= 0.9999
    # to fp32: plenty for the tagger's nearest centroid. fp32 stays the portable default.
    embedding_dtype: DType = "float32"
    # KV-cache events in vLLM's wire format (publisher built where the block pool lives).
    kv_events: KVEventsConfig | None = None
    cache_dir: str | None = None
    num_threads: int | None = None
    seed: int = 0


class ModelConfig(msgspec.Struct, kw_only=True, frozen=True):
    """The Llama-family architecture: Llama, SmolLM2, Mistral, Qwen2 (QKV bias)."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]

    @classmethod
    def from_hf_dict(cls, cfg: dict[str, Any]) -> ModelConfig:
        model_type = cfg.get("model_type", "llama")
        if model_type not in ("llama", "mistral", "qwen2"):
            raise ValueError(f"unsupported model_type {model_type!r}: expected llama, mistral or qwen2")
        heads = cfg["num_attention_heads"]
        # transformers >= 5 nests rope settings in rope_parameters; older checkpoints use
        # rope_theta + rope_scaling.
        rope = dict(cfg.get("rope_parameters") or {})
        theta = float(rope.pop("rope_theta", cfg.get("rope_theta", 10000.0)))
        scaling = rope or cfg.get("rope_scaling") or None
        if scaling is not None:
            scaling = dict(scaling)
            kind = scaling.get("rope_type", scaling.get("type", "default"))
            scaling["rope_type"] = kind
            if kind == "default":
                scaling = None
        eos = cfg.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
        attention_bias = bool(cfg.get("attention_bias", False))
        return cls(
            model_type=model_type,
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=cfg["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            max_position_embeddings=cfg.get("max_position_embeddings", 4096),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            # Qwen2 has a bias on q/k/v only; Llama's attention_bias covers o_proj too.
            qkv_bias=attention_bias or model_type == "qwen2",
            o_bias=attention_bias and model_type != "qwen2",
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            rope_theta=theta,
            rope_scaling=scaling,
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_ids=eos_ids,
        )

    @classmethod
    def from_dir(cls, path: str | Path) -> ModelConfig:
        with open(Path(path) / "config.json") as f:
            return cls.from_hf_dict(json.load(f))
