"""Shared fixtures: tiny random-weight checkpoints (fast) and the real SmolLM2 (loaded once)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from triage_router.engine_server.checkpoint import load_model, resolve_model_dir
from triage_router.engine_server.config import EngineConfig, ModelConfig
from triage_router.engine_server.engine import LLMEngine


@pytest.fixture(scope="package", autouse=True)
def one_compute_thread():
    """One torch thread: on this shared 2-core machine a 2-thread OpenMP pool stalls at every
    barrier while another job holds a core (5-10x slower steps); one thread never does.
    Package-scoped: other packages' tests get the default back."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def save_tiny_checkpoint(path: Path, **overrides) -> Path:
    """A 2-layer Llama-family checkpoint with peaked random weights (clear greedy choices)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    kind = overrides.pop("kind", "llama")
    base = dict(
        vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.3, rms_norm_eps=1e-5,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
    )
    base.update(overrides)
    torch.manual_seed(0)
    if kind == "qwen2":
        cfg, cls = Qwen2Config(**base), Qwen2ForCausalLM
    else:
        cfg, cls = LlamaConfig(**base), LlamaForCausalLM
    model = cls(cfg).float()
    if kind == "qwen2":  # biases are zero-initialised; make them matter
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.5)
    model.save_pretrained(path)
    return path


def tiny_engine(path: Path, **config) -> LLMEngine:
    cfg = EngineConfig(model=str(path), **config)
    mc = ModelConfig.from_dir(path)
    model = load_model(path, mc, torch.float32, torch.device("cpu"), mc.max_position_embeddings)
    return LLMEngine(cfg, mc, model, None, max_model_len=mc.max_position_embeddings)


def reference_greedy(hf_model, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding by full recomputation: the simplest possible reference."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits = hf_model(torch.tensor([ids])).logits[0, -1]
            ids.append(int(logits.argmax()))
    return ids[len(prompt):]


def reference_generate(hf_model, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding with transformers' own KV cache: cheaper for the real model. No EOS
    handling, so it runs n tokens like ignore_eos."""
    # transformers 5.25 renamed `past_key_values` to `cache`, in and out; the old name goes in 5.40.
    cache = "cache" if "cache" in inspect.signature(hf_model.forward).parameters else "past_key_values"
    out: list[int] = []
    with torch.no_grad():
        step = hf_model(torch.tensor([prompt]), use_cache=True)
        for _ in range(n):
            token = int(step.logits[0, -1].argmax())
            out.append(token)
            step = hf_model(torch.tensor([[token]]), **{cache: getattr(step, cache)}, use_cache=True)
    return out


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_hf(tiny_llama):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    return resolve_model_dir("default")


@pytest.fixture(scope="session")
def smollm2_engine(smollm2_dir) -> LLMEngine:
    """The real model, fp32, loaded once per session. Tests must leave it idle."""
    return LLMEngine.from_config(
        EngineConfig(model=str(smollm2_dir), kv_cache_gib=0.25, swap_space_gib=0.05, embedding_model=None)
    )


@pytest.fixture(scope="session")
def smollm2_hf(smollm2_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
