"""True answer lengths for the evaluation prompts, from SmolLM2-135M-Instruct through transformers.

The same greedy answers our engine gives (its tests check greedy output against transformers),
produced with batched `generate`, which is much faster on a busy 2-core CPU than one request at
a time. Output: the same JSON lines as collect_lengths.py.

    python bench/tagging/generate_lengths_hf.py --out bench/results/lengths-smollm2.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

# Two cores shared with other work: one thread is faster than two fighting (measured here).
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "priority_prompts.jsonl"


def model_dir() -> Path:
    """The safetensors directory our engine converts the shipped GGUF into on first start."""
    from triage_router.engine_server.checkpoint import cache_root

    found = sorted((cache_root() / "models").glob("SmolLM2-135M-Instruct*"))
    if not found:
        raise SystemExit("start `python -m triage_router.engine_server --model default` once to convert the model")
    return found[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--batch", type=int, default=26)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, args.dtype)).eval()
    records = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": r["text"]}], tokenize=False,
                                             add_generation_prompt=True) for r in records]
    eos = {tokenizer.eos_token_id, *([model.generation_config.eos_token_id] if isinstance(
        model.generation_config.eos_token_id, int) else model.generation_config.eos_token_id or [])}
    results: list[dict[str, object]] = [{}] * len(records)
    order = sorted(range(len(records)), key=lambda i: len(prompts[i]))
    started = time.perf_counter()
    for start in range(0, len(order), args.batch):
        batch = order[start : start + args.batch]
        encoded = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**encoded, max_new_tokens=args.max_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        for row, i in zip(out[:, encoded["input_ids"].shape[1] :].tolist(), batch):
            length = next((k + 1 for k, token in enumerate(row) if token in eos), len(row))
            results[i] = {"index": i, "priority": records[i]["priority"], "category": records[i]["category"],
                          "prompt_tokens": int(encoded["attention_mask"][batch.index(i)].sum()),
                          "completion_tokens": length, "finish_reason": "stop" if length < len(row) or row[-1] in eos else "length",
                          "max_tokens": args.max_tokens}
        print(f"{start + len(batch)}/{len(order)} after {time.perf_counter() - started:.0f}s", flush=True)
    Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in results))


if __name__ == "__main__":
    main()
