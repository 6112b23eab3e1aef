"""Output-length prediction against real answer lengths.

Reads the true completion lengths recorded by collect_lengths.py and the priority decisions of
a tagging run (evaluate.py --out), then replays the prompts through triage_router.router.prediction.length's
LengthPredictor the way the router would: features from the request and its priority decision,
a prediction before dispatch, then the observed length. Reports, over several shuffled orders:

- online: predict, then learn, prompt after prompt from an empty predictor (the prior);
- held out: learn from 60% of the prompts, predict the other 40% without learning.

Figures: mean absolute error (tokens), Kendall's tau-b between predicted medians and true lengths,
and bucket accuracy (buckets by powers of two: <32, 32-63, ..., 256-511, >=512).

    python bench/tagging/evaluate_length.py --lengths bench/results/lengths-smollm2-20261122.jsonl \
        --tagging bench/results/tagging-20261122T1705Z-bf16.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from triage_router.router.api_types import ChatCompletionRequest, ChatMessage  # noqa: E402
from triage_router.router.config import LengthConfig  # noqa: E402
from triage_router.router.context import PriorityDecision, RequestContext  # noqa: E402
from triage_router.router.routing.fingerprint import fingerprint  # noqa: E402
from triage_router.router.prediction.length import LengthPredictor  # noqa: E402
from triage_router.router.prediction.features import features_of  # noqa: E402

DATA = ROOT / "tests" / "data" / "priority_prompts.jsonl"
PIPELINE = "rules+embedding"
SEEDS = range(5)


def kendall_tau_b(x: list[float], y: list[float]) -> float:
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denominator if denominator else 0.0


def bucket(tokens: float) -> int:
    return min(5, max(0, math.floor(math.log2(max(tokens, 1))) - 4))


def scores(predicted: list[float], true: list[int]) -> dict[str, float]:
    return {
        "mae": statistics.fmean(abs(p - t) for p, t in zip(predicted, true)),
        "tau": kendall_tau_b(predicted, [float(t) for t in true]),
        "bucket_accuracy": statistics.fmean(bucket(p) == bucket(t) for p, t in zip(predicted, true)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", required=True)
    parser.add_argument("--tagging", required=True, help="evaluate.py --out file; its rules+embedding decisions are used")
    args = parser.parse_args()
    prompts = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    lengths = [json.loads(line) for line in Path(args.lengths).read_text().splitlines() if line.strip()]
    reports = json.loads(Path(args.tagging).read_text())["reports"]
    decisions = next(r["decisions"] for r in reports if r["pipeline"] == PIPELINE)
    max_tokens = lengths[0]["max_tokens"]
    true = [int(r["completion_tokens"]) for r in lengths]

    features = []
    for i, prompt in enumerate(prompts):
        request = ChatCompletionRequest("smol", [ChatMessage("user", prompt["text"])], max_tokens=max_tokens)
        ctx = RequestContext(f"r{i}", "chat", {}, b"{}", request, None, 0.0, PriorityDecision(*decisions[i]))
        features.append(features_of(ctx, fingerprint(request, 256, 512).prompt_tokens))

    rows: dict[str, list[dict[str, float]]] = {"online": [], "online, ranked by mean": [], "held out": [],
                                               "held out, ranked by mean": [], "prior only": [],
                                               "held out, true priority, no cue": []}
    for seed in SEEDS:
        order = list(range(len(prompts)))
        random.Random(seed).shuffle(order)
        predictor = LengthPredictor(LengthConfig())
        online, online_mean = [], []
        for i in order:
            prediction = predictor.predict(features[i])
            online.append(prediction.median)
            online_mean.append(prediction.mean)
            predictor.observe(features[i], true[i])
        rows["online"].append(scores(online, [true[i] for i in order]))
        rows["online, ranked by mean"].append(scores(online_mean, [true[i] for i in order]))
        split = int(0.6 * len(order))
        learn, test = order[:split], order[split:]
        predictor = LengthPredictor(LengthConfig())
        for i in learn:
            predictor.observe(features[i], true[i])
        rows["held out"].append(scores([predictor.predict(features[i]).median for i in test], [true[i] for i in test]))
        rows["held out, ranked by mean"].append(
            scores([predictor.predict(features[i]).mean for i in test], [true[i] for i in test]))
        prior = LengthPredictor(LengthConfig())
        rows["prior only"].append(scores([prior.predict(features[i]).median for i in test], [true[i] for i in test]))
        # Ablation: the true label as the priority, without the text's verbosity cue.
        bare = [f.__class__(f.model, f.kind, prompts[k]["priority"], "label", f.tenant, f.prompt_tokens, f.max_tokens, "")
                for k, f in enumerate(features)]
        predictor = LengthPredictor(LengthConfig())
        for i in learn:
            predictor.observe(bare[i], true[i])
        rows["held out, true priority, no cue"].append(
            scores([predictor.predict(bare[i]).median for i in test], [true[i] for i in test]))

    print(f"{len(true)} answers, max_tokens {max_tokens}: median {statistics.median(true)}, mean {statistics.fmean(true):.0f}, "
          f"{sum(t >= max_tokens for t in true)} hit the cap")
    print("| protocol | MAE (tokens) | Kendall tau-b | bucket accuracy |")
    print("|---|---|---|---|")
    for name, runs in rows.items():
        mean = {k: statistics.fmean(r[k] for r in runs) for k in runs[0]}
        print(f"| {name} ({len(runs)} orders) | {mean['mae']:.0f} | {mean['tau']:.3f} | {mean['bucket_accuracy']:.1%} |")


if __name__ == "__main__":
    main()
