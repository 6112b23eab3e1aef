"""Priority-tagging accuracy and latency on tests/data/priority_prompts.jsonl.

Runs the router's own resolution pipeline (triage_router.router.tagging.priority, triage_router.router.tagging.rules, triage_router.router.tagging.model_tagger)
over every labelled prompt, as a non-streamed chat request with no header, and reports per
pipeline: accuracy, mean absolute level error, the share of distance >= 2 errors, the
confusion matrix, fallbacks, and the per-request tagging latency (p50/p99).

Pipelines: rules alone (then the default), the embedding classifier alone, rules + embedding
classifier (the embedded default), the generative tagger alone, rules + generative tagger.
Model pipelines need an OpenAI-compatible server: our engine serves both endpoints:

    python -m triage_router.engine_server --model default --port 8311 &
    python bench/tagging/evaluate.py --embeddings-url http://127.0.0.1:8311 \
        --llm-url http://127.0.0.1:8311 --llm-model SmolLM2-135M-Instruct

Requests go one at a time (latency of one request, cache cold: every prompt is distinct), then
the embedded default once more with CONCURRENCY requests in flight, where the classifier
batches them into shared /v1/embeddings calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from triage_router.router.api_types import ChatCompletionRequest, ChatMessage  # noqa: E402
from triage_router.router.config import EmbeddingTaggerConfig, LlmTaggerConfig, load_config  # noqa: E402
from triage_router.router.context import RequestContext  # noqa: E402
from triage_router.router.tagging.embedding_tagger import EmbeddingClassifier, EmbeddingsClient  # noqa: E402
from triage_router.router.tagging.llm_tagger import LlmClassifier  # noqa: E402
from triage_router.router.metrics import RouterMetrics  # noqa: E402
from triage_router.router.tagging.model_tagger import ModelTagger  # noqa: E402
from triage_router.router.tagging.priority import DefaultPriority, PriorityResolver, PriorityStep  # noqa: E402
from triage_router.router.tagging.rules import RulePriority, RuleSet  # noqa: E402

DATA = ROOT / "tests" / "data" / "priority_prompts.jsonl"
CONCURRENCY = 16


@dataclass
class Outcome:
    pipeline: str
    predicted: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    fallbacks: dict[str, float] = field(default_factory=dict)

    def report(self, truth: list[int], categories: list[str]) -> dict[str, Any]:
        n = len(truth)
        errors = [abs(p - t) for p, t in zip(self.predicted, truth)]
        wrong = sum(1 for e in errors if e)
        far = sum(1 for e in errors if e >= 2)
        confusion = [[0] * 5 for _ in range(5)]
        for p, t in zip(self.predicted, truth):
            confusion[t][p] += 1
        lat = sorted(self.latencies_s)
        adversarial = [i for i, c in enumerate(categories) if c == "adversarial"]
        return {
            "pipeline": self.pipeline,
            "n": n,
            "accuracy": round(1 - wrong / n, 4),
            "mae": round(sum(errors) / n, 4),
            "far_errors_share_of_all": round(far / n, 4),
            "far_errors_share_of_errors": round(far / wrong, 4) if wrong else 0.0,
            "adversarial_promoted": sum(1 for i in adversarial if self.predicted[i] < truth[i]),
            "adversarial_n": len(adversarial),
            "confusion_true_by_predicted": confusion,
            "sources": dict(Counter(s.split(":")[0] for s in self.sources)),
            "latency_ms_p50": round(1000 * lat[len(lat) // 2], 3),
            "latency_ms_p99": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 3),
            "latency_ms_mean": round(1000 * statistics.fmean(lat), 3),
            "fallbacks": self.fallbacks,
            "decisions": [[level, source] for level, source in zip(self.predicted, self.sources)],
        }


def _ctx(i: int, text: str) -> RequestContext:
    request = ChatCompletionRequest("smol", [ChatMessage("user", text)])
    return RequestContext(f"r{i}", "chat", {}, b"{}", request, None, 0.0)


def _fallbacks(metrics: RouterMetrics) -> dict[str, float]:
    found = {}
    for family in metrics.tagger_fallbacks.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.value:
                found[f"{sample.labels['tagger']}:{sample.labels['reason']}"] = sample.value
    return found


async def run(name: str, steps: list[PriorityStep], metrics: RouterMetrics, texts: list[str], concurrency: int = 1) -> Outcome:
    resolver = PriorityResolver(steps, DefaultPriority(2))
    outcome = Outcome(name)
    results: list[tuple[int, str, float]] = [(0, "", 0.0)] * len(texts)

    async def one(i: int) -> None:
        started = time.perf_counter()
        decision = await resolver.resolve(_ctx(i, texts[i]))
        results[i] = (decision.priority, decision.source, time.perf_counter() - started)

    for start in range(0, len(texts), concurrency):
        await asyncio.gather(*(one(i) for i in range(start, min(start + concurrency, len(texts)))))
    outcome.predicted = [r[0] for r in results]
    outcome.sources = [r[1] for r in results]
    outcome.latencies_s = [r[2] for r in results]
    outcome.fallbacks = _fallbacks(metrics)
    return outcome


async def router_overhead(config: Any, texts: list[str]) -> dict[str, float]:
    """What the router itself spends per request (rules, cache, request and answer encoding,
    the nearest-centroid step), with the embeddings service replaced by an instant stub."""
    vector = [((i * 7919) % 384) / 384 - 0.5 for i in range(384)]

    def answer(request: httpx.Request) -> httpx.Response:
        count = len(json.loads(request.content)["input"])
        return httpx.Response(200, json={"data": [{"index": i, "embedding": vector} for i in range(count)]})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        settings = EmbeddingTaggerConfig(enabled=True, url="http://stub", model="stub")
        classifier = EmbeddingClassifier(EmbeddingsClient(http, "http://stub", "stub", ""), settings)
        await classifier.fit()
        m = RouterMetrics()
        steps: list[PriorityStep] = [RulePriority(RuleSet(config.rules, config.tagging, m)), ModelTagger(classifier, settings, m)]
        outcome = await run("overhead", steps, m, texts * 4)
    lat = sorted(outcome.latencies_s)
    return {"p50_ms": round(1000 * lat[len(lat) // 2], 3), "p99_ms": round(1000 * lat[int(0.99 * len(lat))], 3)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "config.toml"), help="rules are taken from here")
    parser.add_argument("--embeddings-url")
    parser.add_argument("--embedding-model", default="all-MiniLM-L6-v2")
    parser.add_argument("--embedding-timeout-ms", type=float, default=150.0)
    parser.add_argument("--llm-url")
    parser.add_argument("--llm-model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--llm-timeout-ms", type=float, default=150.0)
    parser.add_argument("--out", default=None, help="JSON results file")
    args = parser.parse_args()

    records = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    texts = [r["text"] for r in records]
    truth = [r["priority"] for r in records]
    categories = [r["category"] for r in records]
    config = load_config(args.config)

    def rules(metrics: RouterMetrics) -> RulePriority:
        return RulePriority(RuleSet(config.rules, config.tagging, metrics))

    outcomes: list[Outcome] = []
    m = RouterMetrics()
    outcomes.append(await run("rules", [rules(m)], m, texts))
    async with httpx.AsyncClient(timeout=60) as http:
        if args.embeddings_url:
            settings = EmbeddingTaggerConfig(enabled=True, url=args.embeddings_url, model=args.embedding_model,
                                             timeout_ms=args.embedding_timeout_ms)
            classifier = EmbeddingClassifier(EmbeddingsClient(http, args.embeddings_url, args.embedding_model, ""), settings)
            await classifier.fit()
            # Warm the server and the connection pool; these prompts are not in the set.
            for warm in ("hello", "warm-up request", "another warm-up"):
                await classifier.classify(warm)
            for name, with_rules, concurrency in (("embedding", False, 1), ("rules+embedding", True, 1),
                                                  (f"rules+embedding, {CONCURRENCY} concurrent", True, CONCURRENCY)):
                m = RouterMetrics()
                tagger = ModelTagger(classifier, settings, m)  # a fresh cache each run
                steps: list[PriorityStep] = [rules(m), tagger] if with_rules else [tagger]
                outcomes.append(await run(name, steps, m, texts, concurrency))
        if args.llm_url:
            settings_llm = LlmTaggerConfig(enabled=True, url=args.llm_url, model=args.llm_model, timeout_ms=args.llm_timeout_ms)
            llm = LlmClassifier(http, args.llm_url, settings_llm, "")
            await llm.classify("warm-up")
            for name, with_rules in (("llm", False), ("rules+llm", True)):
                m = RouterMetrics()
                tagger = ModelTagger(llm, settings_llm, m)
                steps = [rules(m), tagger] if with_rules else [tagger]
                outcomes.append(await run(f"{name} ({args.llm_model}, {args.llm_timeout_ms:g} ms)", steps, m, texts))

    reports = [o.report(truth, categories) for o in outcomes]
    overhead = await router_overhead(config, texts)

    print("| pipeline | accuracy | MAE | dist>=2 (all) | dist>=2 (of errors) | adversarial promoted | p50 ms | p99 ms | fallbacks |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in reports:
        print(f"| {r['pipeline']} | {r['accuracy']:.1%} | {r['mae']:.3f} | {r['far_errors_share_of_all']:.1%} | "
              f"{r['far_errors_share_of_errors']:.1%} | {r['adversarial_promoted']}/{r['adversarial_n']} | "
              f"{r['latency_ms_p50']:.2f} | {r['latency_ms_p99']:.2f} | {r['fallbacks'] or '-'} |")
    for r in reports:
        print(f"\n{r['pipeline']}: confusion (rows = true 0..4, columns = predicted 0..4), sources {r['sources']}")
        for level, row in enumerate(r["confusion_true_by_predicted"]):
            print(f"  {level}: {row}")
    print(f"\nrouter's own cost, rules + embedding step with an instant in-process embeddings stub: "
          f"p50 {overhead['p50_ms']:.3f} ms, p99 {overhead['p99_ms']:.3f} ms")
    if args.out:
        Path(args.out).write_text(json.dumps({"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                              "args": vars(args), "reports": reports, "router_overhead": overhead},
                                             indent=1))


if __name__ == "__main__":
    asyncio.run(main())
