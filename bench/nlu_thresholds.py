"""Choose the NLU pipeline and its FallbackClassifier thresholds on held-out folds of
our own training data.

    .venv/bin/python bench/nlu_thresholds.py              # 5 folds, writes the results
    .venv/bin/python bench/nlu_thresholds.py --folds 3    # quicker
    .venv/bin/python bench/nlu_thresholds.py --config bench/configs/sparse.yml \
        --config bench/configs/embeddings.yml             # compare pipelines

The eval sets in ../shared/eval are never read here: thresholds chosen on them would
be tuned to the test. Instead the examples of data/nlu are split into ``--folds``
stratified folds (per intent, seeded shuffle). For each fold a model is trained
(``rasa train nlu``, config.yml without its FallbackClassifier, so the classifier's
raw ranking is seen) on the other folds and parses the held-out one; every example
thus gets exactly one held-out prediction. The held-out `out_of_scope` examples (our
own: other businesses' questions, chitchat, spam, gibberish) measure rejection, all
the other examples measure in-scope accuracy.

The FallbackClassifier is then replayed on those rankings for a grid of
``threshold`` x ``ambiguity_threshold`` (the top intent falls back when its
confidence is below ``threshold`` or it leads the second by less than
``ambiguity_threshold``, as in Rasa). A held-out in-scope example is right when its
intent is predicted (a fallback is a miss); an out-of-scope one is rejected when the
prediction is `out_of_scope` or `nlu_fallback`.

Rule: the pair with the highest rejection whose in-scope accuracy is at most
``--max-accuracy-loss`` (default 1 point) below the accuracy without a fallback;
ties go to the lower thresholds. With several ``--config``, each gets its own pair
and the pipeline chosen is the one whose pair has the highest mean of held-out
in-scope accuracy and out-of-scope rejection (the two things issue 16 asks to raise
together). The tables and the choice are printed and written to
``bench/results/nlu_thresholds.md``; config.yml is not edited (copy the choice).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bot.tools.nlu_report import (  # noqa: E402
    DEFAULT_NLU_DIR,
    FALLBACK_INTENT,
    OUT_OF_SCOPE_INTENT,
    Parser,
    base_intent,
    load_agent,
)

RESULTS_FILE = REPO_ROOT / "bench" / "results" / "nlu_thresholds.md"
RASA = Path(sys.executable).with_name("rasa")
THRESHOLDS = [round(0.05 * i, 2) for i in range(0, 13)]  # 0.00 .. 0.60
AMBIGUITIES = [0.0, 0.01, 0.02, 0.03, 0.05, 0.08, 0.1]


@dataclass(frozen=True)
class HeldOut:
    """One held-out example and the top two intents of its raw ranking."""

    intent: str
    text: str
    fold: int
    top: str
    top_confidence: float
    second_confidence: float


@dataclass(frozen=True)
class GridPoint:
    threshold: float
    ambiguity: float
    in_scope_accuracy: float
    in_scope_fallback: float
    oos_rejected: float

    @property
    def balance(self) -> float:
        return (self.in_scope_accuracy + self.oos_rejected) / 2


@dataclass(frozen=True)
class Candidate:
    """One pipeline's held-out predictions, threshold grid and chosen pair."""

    config: Path
    held: list[HeldOut]
    grid: list[GridPoint]
    chosen: GridPoint
    train_seconds: float  # mean per fold

    @property
    def base(self) -> GridPoint:
        return next(p for p in self.grid if p.threshold == 0 and p.ambiguity == 0)


def stratified_folds(intents: list[str], folds: int, seed: int) -> list[int]:
    """A fold number per example; each intent's examples spread evenly over the folds."""
    by_intent: dict[str, list[int]] = defaultdict(list)
    for i, intent in enumerate(intents):
        by_intent[intent].append(i)
    rng = random.Random(seed)
    fold_of = [0] * len(intents)
    offset = 0
    for intent in sorted(by_intent):
        members = by_intent[intent]
        rng.shuffle(members)
        for j, i in enumerate(members):
            fold_of[i] = (offset + j) % folds
        offset += len(members)  # so small intents do not all start in fold 0
    return fold_of


def config_without_fallback(config: Path, out: Path) -> None:
    from rasa.shared.utils.io import read_yaml_file, write_yaml

    content = read_yaml_file(config)
    assert isinstance(content, dict)
    content["pipeline"] = [c for c in content["pipeline"] if c.get("name") != "FallbackClassifier"]
    write_yaml(content, out)


def acted_intent(threshold: float, ambiguity: float, h: HeldOut) -> str:
    """The intent the bot acts on under these thresholds."""
    if h.top_confidence < threshold:
        return FALLBACK_INTENT
    if h.top_confidence - h.second_confidence < ambiguity:
        return FALLBACK_INTENT
    return h.top


def score(held_out: list[HeldOut], threshold: float, ambiguity: float) -> GridPoint:
    in_scope = [h for h in held_out if h.intent != OUT_OF_SCOPE_INTENT]
    oos = [h for h in held_out if h.intent == OUT_OF_SCOPE_INTENT]
    acted_in = [acted_intent(threshold, ambiguity, h) for h in in_scope]
    acted_oos = [acted_intent(threshold, ambiguity, h) for h in oos]
    return GridPoint(
        threshold,
        ambiguity,
        in_scope_accuracy=sum(a == h.intent for a, h in zip(acted_in, in_scope, strict=True))
        / len(in_scope),
        in_scope_fallback=sum(a == FALLBACK_INTENT for a in acted_in) / len(in_scope),
        oos_rejected=sum(a in (OUT_OF_SCOPE_INTENT, FALLBACK_INTENT) for a in acted_oos)
        / max(1, len(oos)),
    )


def choose(grid: list[GridPoint], max_loss: float) -> GridPoint:
    base = next(p for p in grid if p.threshold == 0 and p.ambiguity == 0)
    allowed = [p for p in grid if p.in_scope_accuracy >= base.in_scope_accuracy - max_loss]
    return max(allowed, key=lambda p: (p.oos_rejected, -p.threshold, -p.ambiguity))


def _train(config: Path, nlu_file: Path, out_dir: Path, name: str, log: Path) -> Path:
    env = {**os.environ, "RASA_MAX_CACHE_SIZE": "0"}
    cmd = [str(RASA), "train", "nlu", "--config", str(config), "--nlu", str(nlu_file)]
    cmd += ["--out", str(out_dir), "--fixed-model-name", name]
    with log.open("w") as handle:
        done = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"training failed, see {log}")
    return out_dir / f"{name}.tar.gz"


def _ranking_top_two(parse: dict[str, Any]) -> tuple[str, float, float]:
    ranking = [r for r in parse.get("intent_ranking") or [] if r.get("name") != FALLBACK_INTENT]
    intent = parse.get("intent") or {}
    top = base_intent(str(intent.get("name") or (ranking[0]["name"] if ranking else "")))
    top_confidence = float(intent.get("confidence") or 0.0)
    others = [float(r.get("confidence") or 0.0) for r in ranking if base_intent(r["name"]) != top]
    return top, top_confidence, max(others, default=0.0)


def held_out_predictions(
    nlu_dir: Path, config: Path, folds: int, seed: int, work: Path
) -> tuple[list[HeldOut], float]:
    """Every example's held-out prediction, and the mean seconds to train a fold."""
    from rasa.shared.nlu.training_data.loading import load_data
    from rasa.shared.nlu.training_data.training_data import TrainingData

    data = load_data(str(nlu_dir))
    examples = list(data.intent_examples)
    intents = [str(m.get("intent")) for m in examples]
    fold_of = stratified_folds(intents, folds, seed)
    config_file = work / "config-no-fallback.yml"
    config_without_fallback(config, config_file)
    held: list[HeldOut] = []
    train_seconds = 0.0
    for fold in range(folds):
        train = TrainingData(
            training_examples=[m for m, f in zip(examples, fold_of, strict=True) if f != fold],
            entity_synonyms=data.entity_synonyms,
            regex_features=data.regex_features,
            lookup_tables=data.lookup_tables,
        )
        nlu_file = work / f"fold{fold}.yml"
        nlu_file.write_text(train.nlu_as_yaml(), encoding="utf-8")
        started = time.perf_counter()
        model = _train(config_file, nlu_file, work, f"fold{fold}", work / f"fold{fold}.log")
        train_seconds += time.perf_counter() - started
        test = [(m, i) for m, i, f in zip(examples, intents, fold_of, strict=True) if f == fold]
        agent = load_agent(model)
        parses = asyncio.run(Parser(agent).parse_many([str(m.get("text")) for m, _ in test]))
        for (message, intent), parse in zip(test, parses, strict=True):
            top, first, second = _ranking_top_two(parse)
            held.append(HeldOut(intent, str(message.get("text")), fold, top, first, second))
        print(
            f"fold {fold + 1}/{folds}: trained on {len(train.intent_examples)}, "
            f"held out {len(test)} ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    return held, train_seconds / folds


def render(candidates: list[Candidate], best: Candidate, args: argparse.Namespace) -> str:
    pct = "{:.1%}".format
    n_oos = sum(h.intent == OUT_OF_SCOPE_INTENT for h in best.held)
    chosen = best.chosen
    lines = [
        "# NLU pipeline and fallback thresholds, chosen on held-out folds of our own data",
        "",
        f"Written by `bench/nlu_thresholds.py` ({time.strftime('%Y-%m-%d %H:%M')}): "
        f"{args.folds} stratified folds (seed {args.seed}) of `data/nlu`, "
        f"{len(best.held) - n_oos} in-scope and {n_oos} `out_of_scope` examples, each "
        "predicted once by a model that did not train on it (each config without its "
        "FallbackClassifier; the fallback is replayed on the rankings). The eval sets "
        "are not used. In-scope accuracy counts a fallback as a miss; rejected = "
        "`out_of_scope` or `nlu_fallback`.",
        "",
        "Each pipeline gets the threshold pair with the most rejection for at most "
        f"{args.max_accuracy_loss:.1%} less in-scope accuracy than without a fallback; "
        "the pipeline chosen has the highest mean of in-scope accuracy and rejection "
        "at its pair.",
        "",
        "| config | train s per fold | no fallback: in-scope acc | OOS rejected "
        "| threshold / ambiguity | in-scope acc | in-scope fallback | OOS rejected | mean |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in candidates:
        mark = " **←**" if c is best else ""
        lines.append(
            f"| `{_shown(c.config)}`{mark} | {c.train_seconds:.0f} "
            f"| {pct(c.base.in_scope_accuracy)} | {pct(c.base.oos_rejected)} "
            f"| {c.chosen.threshold:.2f} / {c.chosen.ambiguity:.2f} "
            f"| {pct(c.chosen.in_scope_accuracy)} | {pct(c.chosen.in_scope_fallback)} "
            f"| {pct(c.chosen.oos_rejected)} | {pct(c.chosen.balance)} |"
        )
    lines += [
        "",
        f"**Chosen: `{_shown(best.config)}`, threshold {chosen.threshold:.2f}, "
        f"ambiguity_threshold {chosen.ambiguity:.2f}**: in-scope accuracy "
        f"{pct(chosen.in_scope_accuracy)} ({pct(chosen.in_scope_fallback)} fall back), "
        f"out-of-scope rejected {pct(chosen.oos_rejected)}.",
        "",
        f"Its grid (`{_shown(best.config)}`):",
        "",
        "| threshold | ambiguity | in-scope accuracy | in-scope fallback | OOS rejected |",
        "|---:|---:|---:|---:|---:|",
    ]
    shown = [p for p in best.grid if p.ambiguity in (0.0, chosen.ambiguity) or p == chosen]
    for p in sorted(set(shown), key=lambda p: (p.ambiguity, p.threshold)):
        mark = " **←**" if p == chosen else ""
        lines.append(
            f"| {p.threshold:.2f} | {p.ambiguity:.2f} | {pct(p.in_scope_accuracy)} "
            f"| {pct(p.in_scope_fallback)} | {pct(p.oos_rejected)}{mark} |"
        )
    missed = [
        h
        for h in best.held
        if h.intent == OUT_OF_SCOPE_INTENT
        and acted_intent(chosen.threshold, chosen.ambiguity, h)
        not in (OUT_OF_SCOPE_INTENT, FALLBACK_INTENT)
    ]
    lines += ["", f"Held-out out-of-scope examples still answered ({len(missed)}):", ""]
    lines += [f"- {h.text!r} → {h.top} ({h.top_confidence:.2f})" for h in missed[:40]]
    return "\n".join(lines) + "\n"


def _shown(config: Path) -> str:
    return str(config.resolve().relative_to(REPO_ROOT)) if config.resolve().is_relative_to(
        REPO_ROOT) else str(config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nlu", type=Path, default=DEFAULT_NLU_DIR)
    parser.add_argument(
        "--config", type=Path, action="append", help="a pipeline to try (repeatable; "
        "default config.yml)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--max-accuracy-loss", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=RESULTS_FILE)
    parser.add_argument("--keep", type=Path, help="keep fold models and logs in this folder")
    return parser


def evaluate(config: Path, args: argparse.Namespace) -> Candidate:
    with tempfile.TemporaryDirectory(prefix="nlu-thresholds-") as tmp:
        work = args.keep / config.stem if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        held, train_seconds = held_out_predictions(args.nlu, config, args.folds, args.seed, work)
    grid = [score(held, t, a) for a in AMBIGUITIES for t in THRESHOLDS]
    return Candidate(config, held, grid, choose(grid, args.max_accuracy_loss), train_seconds)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    candidates = [evaluate(config, args) for config in args.config or [REPO_ROOT / "config.yml"]]
    best = max(candidates, key=lambda c: c.chosen.balance)
    text = render(candidates, best, args)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
