from __future__ import annotations

import json
import shutil

import pytest
import torch

from triage_router.engine_server.checkpoint import ModelLoadError, load_model, resolve_model_dir
from triage_router.engine_server.config import ModelConfig


def test_default_resolves_to_the_cached_conversion(smollm2_dir):
    assert resolve_model_dir("default") == smollm2_dir  # the second call reuses the cache
    cfg = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["num_hidden_layers"] == 30
    assert (smollm2_dir / "tokenizer.json").exists() and (smollm2_dir / "model.safetensors").exists()


def test_missing_paths_and_directories_without_config_fail_clearly(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        resolve_model_dir(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match="config.json"):
        resolve_model_dir(str(tmp_path))


def test_missing_weights_are_named(tiny_llama, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(tiny_llama, broken)
    state = load_file(str(broken / "model.safetensors"))
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, str(broken / "model.safetensors"))
    cfg = ModelConfig.from_dir(broken)
    with pytest.raises(ModelLoadError, match="layers.1.mlp.gate_up_proj"):
        load_model(broken, cfg, torch.float32, torch.device("cpu"), 64)
