"""Benchmark NLU pipelines: train from scratch, time parses, score on the eval sets.

    .venv/bin/python bench/bench_nlu.py                 # config.yml only
    .venv/bin/python bench/bench_nlu.py --config config.yml --config bench/configs/diet.yml
    .venv/bin/python bench/bench_nlu.py --limit 2000    # quicker: a sample of each set

For every ``--config`` it trains an NLU model into a temporary directory
(``rasa train nlu``, in a child process, so training seconds and peak RSS are that
model's alone), then, in a second child process, loads the model, times
``Agent.parse_message`` on a few hundred utterances (median and p95, after a warm-up)
and scores it with `bot.tools.nlu_report`. It prints a table and writes
``bench/results/nlu.md`` (rows also in ``nlu.json``; a run replaces the rows of the
configs it ran and keeps the others, ``--fresh`` drops them). Run one benchmark at a
time: the timings assume the machine is otherwise idle. This is a benchmark, not a
test. Alternative configs live in ``bench/configs/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bot.tools.nlu_report import (  # noqa: E402
    DEFAULT_EVAL_DIR,
    DEFAULT_NLU_DIR,
    chosen_rows,
    load_agent,
    load_eval_sets,
    predict,
    score_sets,
)

if TYPE_CHECKING:
    from rasa.core.agent import Agent

RESULTS_FILE = REPO_ROOT / "bench" / "results" / "nlu.md"
RASA = Path(sys.executable).with_name("rasa")


@dataclass
class BenchResult:
    config: str
    train_seconds: float
    train_peak_rss_mb: float
    load_seconds: float
    parse_median_ms: float
    parse_p95_ms: float
    eval_peak_rss_mb: float
    bitext_accuracy: float
    bitext_macro_f1: float
    bitext_fallback: float
    hint3_accuracy: float
    hint3_macro_f1: float
    hint3_fallback: float
    hint3_oos_rejected: float
    report_seconds: float
    date: str = ""
    scored: str = "all"  # "all" mapped rows, or "N per set"
    latency_samples: int = 0


def _run_child(cmd: list[str], log: Path) -> tuple[float, float]:
    """Run ``cmd``; return (wall seconds, peak RSS in MB of that child).

    Rasa's training cache is switched off, so every component really trains.
    """
    env = {**os.environ, "RASA_MAX_CACHE_SIZE": "0", "RASA_CACHE_DIRECTORY": str(log.parent)}
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}")
    return seconds, usage.ru_maxrss / 1024  # Linux reports KiB


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def _time_parses(agent: Agent, texts: list[str]) -> list[float]:
    for text in texts[:20]:  # warm-up
        await agent.parse_message(text)
    timings: list[float] = []
    for text in texts:
        t0 = time.perf_counter()
        await agent.parse_message(text)
        timings.append((time.perf_counter() - t0) * 1000)
    return timings


def evaluate_model(
    model: Path, eval_dir: Path, limit: int | None, n_latency: int
) -> dict[str, Any]:
    """Child-process part: latency and scores of one trained model, as a dict."""
    sets = load_eval_sets(eval_dir)
    pool = [row.text for row in sets.all_rows()]
    texts = random.Random(7).sample(pool, min(n_latency, len(pool)))
    started = time.perf_counter()
    agent = load_agent(model)
    load_seconds = time.perf_counter() - started
    timings = asyncio.run(_time_parses(agent, texts))
    started = time.perf_counter()
    chosen = chosen_rows(sets, limit)
    datasets, oos = score_sets(chosen, asyncio.run(predict(agent, chosen)))
    scores = {d.name: d for d in datasets}
    bitext, hint3 = scores["bitext"], scores["hint3"]
    return {
        "load_seconds": load_seconds,
        "parse_median_ms": statistics.median(timings),
        "parse_p95_ms": percentile(timings, 0.95),
        "bitext_accuracy": bitext.with_fallback.accuracy,
        "bitext_macro_f1": bitext.with_fallback.macro_f1,
        "bitext_fallback": bitext.fallback_rate,
        "hint3_accuracy": hint3.with_fallback.accuracy,
        "hint3_macro_f1": hint3.with_fallback.macro_f1,
        "hint3_fallback": hint3.fallback_rate,
        "hint3_oos_rejected": oos.rejected / oos.rows if oos else 0.0,
        "report_seconds": time.perf_counter() - started,
    }


def bench_config(
    config: Path, nlu_dir: Path, eval_dir: Path, limit: int | None, n_latency: int, work: Path
) -> BenchResult:
    name = config.stem
    model_dir = work / name
    print(f"[{name}] training from scratch ...", flush=True)
    train_seconds, train_rss = _run_child(
        [
            str(RASA),
            "train",
            "nlu",
            "--config",
            str(config),
            "--nlu",
            str(nlu_dir),
            "--out",
            str(model_dir),
            "--fixed-model-name",
            name,
        ],
        work / f"{name}.train.log",
    )
    print(f"[{name}] trained in {train_seconds:.0f} s; timing and scoring ...", flush=True)
    scores_file = work / f"{name}.json"
    cmd = [
        sys.executable,
        __file__,
        "--evaluate-model",
        str(model_dir / f"{name}.tar.gz"),
        "--eval-dir",
        str(eval_dir),
        "--latency-samples",
        str(n_latency),
        "--json",
        str(scores_file),
    ]
    if limit:
        cmd += ["--limit", str(limit)]
    _, serve_rss = _run_child(cmd, work / f"{name}.eval.log")
    scores = json.loads(scores_file.read_text())
    return BenchResult(
        config=str(config.resolve().relative_to(REPO_ROOT))
        if config.resolve().is_relative_to(REPO_ROOT)
        else str(config),
        train_seconds=train_seconds,
        train_peak_rss_mb=train_rss,
        eval_peak_rss_mb=serve_rss,
        **scores,
    )


def render(results: list[BenchResult]) -> str:
    pct = "{:.1%}".format
    lines = [
        "# NLU benchmark",
        "",
        f"Written by `bench/bench_nlu.py` on {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}. Each config is trained from scratch "
        "(`rasa train nlu`, peak RSS of that process); parse latency is "
        "`Agent.parse_message` on eval utterances, one at a time after a warm-up; scores "
        "come from `bot.tools.nlu_report` (`nlu_fallback` counts as a miss; HINT3 OOS rejected = "
        "share of its out-of-scope test rows answered with `out_of_scope` or `nlu_fallback`).",
        "",
        "| config | run | train s | train RSS MB | parse median ms | parse p95 ms "
        "| eval-process RSS MB | Bitext acc | Bitext macro-F1 | Bitext fallback | HINT3 acc "
        "| HINT3 fallback | HINT3 OOS rejected | rows scored / latency samples |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| `{r.config}` | {r.date} | {r.train_seconds:.0f} | {r.train_peak_rss_mb:.0f} "
            f"| {r.parse_median_ms:.1f} | {r.parse_p95_ms:.1f} | {r.eval_peak_rss_mb:.0f} "
            f"| {pct(r.bitext_accuracy)} | {r.bitext_macro_f1:.3f} | {pct(r.bitext_fallback)} "
            f"| {pct(r.hint3_accuracy)} | {pct(r.hint3_fallback)} "
            f"| {pct(r.hint3_oos_rejected)} | {r.scored} / {r.latency_samples} |"
        )
    return "\n".join(lines) + "\n"


def merge(previous: list[BenchResult], new: list[BenchResult]) -> list[BenchResult]:
    """Earlier rows of other configs first, then this run's rows."""
    ran = {r.config for r in new}
    return [r for r in previous if r.config not in ran] + new


def load_results(path: Path) -> list[BenchResult]:
    if not path.exists():
        return []
    return [BenchResult(**row) for row in json.loads(path.read_text())]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config",
        type=Path,
        action="append",
        help="config file to benchmark (repeatable; default config.yml)",
    )
    parser.add_argument("--nlu", type=Path, default=DEFAULT_NLU_DIR, help="NLU training data")
    parser.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL_DIR)
    parser.add_argument("--limit", type=int, help="score a sample of N rows per eval set")
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS_FILE,
        help="markdown results file (its rows are kept in FILE.json too)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="drop the rows of other configs (by default a run replaces only its own rows)",
    )
    parser.add_argument("--keep", type=Path, help="keep models and logs in this folder")
    # internal: the child process that times and scores one model
    parser.add_argument("--evaluate-model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.evaluate_model:
        scores = evaluate_model(
            args.evaluate_model, args.eval_dir, args.limit, args.latency_samples
        )
        args.json.write_text(json.dumps(scores))
        return 0
    configs: list[Path] = args.config or [REPO_ROOT / "config.yml"]
    results: list[BenchResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-nlu-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for config in configs:
            result = bench_config(
                config, args.nlu, args.eval_dir, args.limit, args.latency_samples, work
            )
            result.date = time.strftime("%Y-%m-%d %H:%M")
            result.scored = f"{args.limit} per set" if args.limit else "all"
            result.latency_samples = args.latency_samples
            results.append(result)
            print(json.dumps(asdict(result), indent=1), flush=True)
    json_file = args.out.with_suffix(".json")
    if not args.fresh:
        results = merge(load_results(json_file), results)
    text = render(results)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    json_file.write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")
    print(f"written to {args.out} and {json_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
