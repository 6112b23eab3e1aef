from __future__ import annotations

import pytest

from triage_router.engine_server.config import ModelConfig

BASE = dict(vocab_size=10, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2)


def test_transformers_5_rope_parameters_and_legacy_rope_scaling_read_alike():
    new = ModelConfig.from_hf_dict({**BASE, "rope_parameters": {"rope_theta": 5e5, "rope_type": "llama3", "factor": 8.0}})
    old = ModelConfig.from_hf_dict({**BASE, "rope_theta": 5e5, "rope_scaling": {"type": "llama3", "factor": 8.0}})
    assert new.rope_theta == old.rope_theta == 5e5
    assert new.rope_scaling is not None and new.rope_scaling["rope_type"] == old.rope_scaling["rope_type"] == "llama3"
    plain = ModelConfig.from_hf_dict({**BASE, "rope_parameters": {"rope_theta": 1e4, "rope_type": "default"}})
    assert plain.rope_scaling is None


def test_bias_flags_per_family():
    qwen = ModelConfig.from_hf_dict({**BASE, "model_type": "qwen2"})
    assert qwen.qkv_bias and not qwen.o_bias
    llama = ModelConfig.from_hf_dict({**BASE, "attention_bias": True})
    assert llama.qkv_bias and llama.o_bias


def test_defaults_and_lists():
    cfg = ModelConfig.from_hf_dict({**BASE, "eos_token_id": [2, 7]})
    assert cfg.num_key_value_heads == 2 and cfg.head_dim == 4 and cfg.eos_token_ids == (2, 7)


def test_unsupported_architecture_is_named():
    with pytest.raises(ValueError, match="gpt2"):
        ModelConfig.from_hf_dict({**BASE, "model_type": "gpt2"})
