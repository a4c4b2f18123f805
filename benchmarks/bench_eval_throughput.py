"""Evaluation throughput of whisper-tiny.en: batched against one utterance at a time.

Every mode decodes and scores the same N utterances (audio read into memory beforehand,
so file decoding is not timed); rounds interleave the modes (single, batch 8, batch 16,
single, ...) so that machine-load drift hits all of them alike.

As a script (prints utterances/s per mode and the ratios)::

    python benchmarks/bench_eval_throughput.py --n 16 --rounds 2 [--data PATH --split NAME]

Under pytest-benchmark (one row per mode; the ratio is the inverse ratio of the means)::

    pytest benchmarks --benchmark-only
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import pytest
import torch

from mpqbench.timing import device_label
from mpqbench.workloads.adapter import SpeechModel
from mpqbench.workloads.data.embedded import EMBEDDED, open_split
from mpqbench.workloads.data.types import Utterance
from mpqbench.workloads.evaluate import evaluate
from mpqbench.workloads.models.registry import load_model

MODEL = "whisper-tiny.en"
BATCH_SIZES = (1, 8, 16)


def load_utterances(data: str, split: str, n: int, seed: int = 0) -> list[Utterance]:
    """``n`` utterances of a split (seeded subset, id order), audio read into memory."""
    return list(open_split(data, split).subset(n, seed=seed))


def run_once(model: SpeechModel, utterances: Sequence[Utterance], batch_size: int) -> float:
    """Seconds to evaluate ``utterances`` at ``batch_size`` (decode + score)."""
    start = time.perf_counter()
    evaluate(model, utterances, batch_size=batch_size, progress=False)
    return time.perf_counter() - start


def measure(
    model: SpeechModel,
    utterances: Sequence[Utterance],
    batch_sizes: Sequence[int] = BATCH_SIZES,
    rounds: int = 2,
) -> dict[int, list[float]]:
    """Interleaved timings: batch size -> seconds per round (after one warm-up batch)."""
    evaluate(model, utterances[: min(2, len(utterances))], batch_size=2, progress=False)
    times: dict[int, list[float]] = {b: [] for b in batch_sizes}
    for _ in range(rounds):
        for b in batch_sizes:
            times[b].append(run_once(model, utterances, b))
    return times


def report(times: dict[int, list[float]], n: int) -> str:
    """A table of utterances/s per batch size and the ratio to batch size 1."""
    base = n / statistics.median(times[min(times)])
    lines = [f"{'batch':>5} {'median s':>9} {'utt/s':>7} {'x vs batch ' + str(min(times)):>14}"]
    for b, ts in times.items():
        rate = n / statistics.median(ts)
        lines.append(f"{b:>5} {statistics.median(ts):>9.2f} {rate:>7.2f} {rate / base:>14.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=EMBEDDED)
    parser.add_argument("--split", default="test-clean")
    parser.add_argument("--n", type=int, default=16, help="utterances per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    utterances = load_utterances(args.data, args.split, args.n)
    model = load_model(MODEL, device=args.device)
    times = measure(model, utterances, args.batch_sizes, args.rounds)
    print(
        f"{MODEL} on {args.data}/{args.split}, {len(utterances)} utterances, "
        f"{args.rounds} interleaved rounds, {device_label(args.device)}"
    )
    print(report(times, len(utterances)))
    return 0


# ------------------------------------------------------------------ pytest-benchmark


@pytest.fixture(scope="module")
def whisper_and_utterances():
    try:
        utterances = load_utterances(EMBEDDED, "test-clean", 16)
    except FileNotFoundError as exc:
        pytest.skip(f"embedded corpus not available: {exc}")
    model = load_model(MODEL)
    evaluate(model, utterances[:2], batch_size=2, progress=False)  # warm-up
    return model, utterances


@pytest.mark.parametrize("batch_size", BATCH_SIZES, ids=lambda b: f"batch-{b}")
def test_eval_throughput(benchmark, whisper_and_utterances, batch_size):
    model, utterances = whisper_and_utterances
    benchmark.group = f"evaluate {MODEL}, {len(utterances)} utterances"
    benchmark.extra_info["utterances"] = len(utterances)
    result = benchmark.pedantic(
        evaluate, args=(model, utterances),
        kwargs={"batch_size": batch_size, "progress": False}, rounds=2, iterations=1,
    )
    benchmark.extra_info["utterances_per_s"] = len(utterances) / benchmark.stats.stats.mean
    assert len(result.rows) == len(utterances)


if __name__ == "__main__":
    raise SystemExit(main())
