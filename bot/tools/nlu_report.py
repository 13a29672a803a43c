"""Score a trained Rasa model on the public evaluation sets (``bot nlu-report``).

The sets live outside the repository (``../shared/eval`` by default) and are for
measuring only; `intent_map.csv` maps their labels to this bot's intents.

- Bitext: every row whose intent is in the map; its ``{{Placeholders}}`` are filled
  with realistic values, chosen deterministically per row.
- HINT3: rows of ``split=test`` whose intent is in the map. Its out-of-scope rows
  (``NO_NODES_DETECTED``) are not in the map; they are parsed for one extra,
  informational figure: how many the bot rejects (``out_of_scope`` or ``nlu_fallback``).

A row is correct when the predicted intent is one of its ``accepted`` intents.
``nlu_fallback`` counts as a miss; the classifier's top non-fallback intent is scored
as well, so the cost of the fallback threshold is visible.

With ``--against OLD_MODEL`` both models parse the same rows and the report says,
row by row, how many the new model got right that the old one missed and the other
way round, with McNemar's exact test: on 237 HINT3 rows a change of a few rows is
within chance, and this says how far.

This module also holds the helpers for reading the training data
(`load_training_data`, `overlap_key`, `find_near_copies`), shared with the data tests.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import logging
import math
import random
import re
import string
import sys
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.paths import REPO_ROOT

if TYPE_CHECKING:
    from rasa.core.agent import Agent

DEFAULT_EVAL_DIR = REPO_ROOT.parent / "shared" / "eval"
DEFAULT_NLU_DIR = REPO_ROOT / "data" / "nlu"

FALLBACK_INTENT = "nlu_fallback"
OUT_OF_SCOPE_INTENT = "out_of_scope"
HINT3_OOS_LABEL = "NO_NODES_DETECTED"
OOS_SET = "hint3_oos"  # HINT3's out-of-scope rows, scored by rejection
BITEXT_FILE = "bitext_ecommerce.csv"
HINT3_FILE = "hint3_ecommerce.csv"
INTENT_MAP_FILE = "intent_map.csv"

# The intents DESIGN.md requires, plus the two this bot adds for its dialogues.
CANONICAL_INTENTS: tuple[str, ...] = (
    "greet", "goodbye", "thank_you", "affirm", "deny", "bot_challenge", "out_of_scope",
    "order_status", "delivery_problem", "not_received", "damaged_item", "wrong_item",
    "return_item", "return_status", "refund_request", "refund_status", "cancel_order",
    "change_address", "change_order", "payment_issue", "human_handoff", "complaint",
    "return_policy", "delivery_options", "delivery_time", "payment_methods",
    "cancellation_fee", "invoice", "account_help", "product_question",
)  # fmt: skip
EXTRA_INTENTS: tuple[str, ...] = ("inform", "choose_remedy")
REMEDY_VALUES: frozenset[str] = frozenset({"replacement", "refund", "store_credit"})

# ---------------------------------------------------------------------------
# Bitext placeholders
# ---------------------------------------------------------------------------

PLACEHOLDER_VALUES: dict[str, tuple[str, ...]] = {
    "Order Number": ("A1007", "A1012", "B2045", "#A1003", "a1009", "C3318", "A1015", "D4402"),
    "Person Name": ("Maria Lopez", "John Smith", "Aisha Khan", "Wei Chen", "Olga Petrova",
                    "Rahul Mehta", "Emma Brown", "Kwame Mensah"),
    "Invoice Number": ("INV-20931", "INV-58213", "INV-77310", "INV-10442"),
    "Refund Amount": ("45.00", "120.50", "19.99", "300.00", "8.75", "64.20"),
    "Currency Symbol": ("$", "€", "£", "$", "₹"),
    "Delivery City": ("Berlin", "Austin", "Manchester", "Pune", "Lyon", "Toronto"),
    "Delivery Country": ("Germany", "Canada", "Australia", "India", "France", "Spain"),
    "Account Type": ("premium", "business", "standard", "gold", "platinum", "free"),
    "Account Category": ("premium", "business", "personal", "family", "pro", "basic"),
}  # fmt: skip
PLACEHOLDER_RE = re.compile(r"\{\{\s*([^}]+?)\s*\}\}")


def fill_placeholders(text: str) -> str:
    """Replace Bitext ``{{Slot}}`` placeholders with realistic values.

    The choice depends only on the text and the placeholder's position, so a report
    is reproducible; unknown placeholders are removed.
    """
    seed = zlib.crc32(text.encode("utf-8"))
    position = 0

    def _value(match: re.Match[str]) -> str:
        nonlocal position
        values = PLACEHOLDER_VALUES.get(match.group(1))
        position += 1
        if not values:
            return ""
        return values[(seed + 7 * position) % len(values)]

    return re.sub(r"\s{2,}", " ", PLACEHOLDER_RE.sub(_value, text)).strip()


# ---------------------------------------------------------------------------
# Evaluation rows
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalRow:
    dataset: str
    source_intent: str
    text: str
    accepted: tuple[str, ...]  # empty for rows that are not in the map


@dataclass
class EvalSets:
    bitext: list[EvalRow]
    hint3: list[EvalRow]
    hint3_oos: list[EvalRow]

    def all_rows(self) -> list[EvalRow]:
        return [*self.bitext, *self.hint3, *self.hint3_oos]


def load_intent_map(path: Path) -> dict[tuple[str, str], tuple[str, ...]]:
    """``(dataset, source_intent) -> accepted intents`` from intent_map.csv."""
    with path.open(newline="", encoding="utf-8") as handle:
        return {
            (row["dataset"].strip(), row["source_intent"].strip()): tuple(
                name.strip() for name in row["accepted"].split("|") if name.strip()
            )
            for row in csv.DictReader(handle)
        }


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def load_eval_sets(eval_dir: Path) -> EvalSets:
    """The mapped Bitext rows (placeholders filled), HINT3 test rows, HINT3 test OOS."""
    intent_map = load_intent_map(eval_dir / INTENT_MAP_FILE)
    bitext = [
        EvalRow("bitext", row["intent"], fill_placeholders(row["text"]), accepted)
        for row in _read_csv(eval_dir / BITEXT_FILE)
        if (accepted := intent_map.get(("bitext", row["intent"])))
    ]
    hint3: list[EvalRow] = []
    hint3_oos: list[EvalRow] = []
    for row in _read_csv(eval_dir / HINT3_FILE):
        if row.get("split") != "test":
            continue
        accepted = intent_map.get(("hint3", row["intent"]))
        if accepted:
            hint3.append(EvalRow("hint3", row["intent"], row["text"], accepted))
        elif row["intent"] == HINT3_OOS_LABEL:
            hint3_oos.append(EvalRow(OOS_SET, row["intent"], row["text"], ()))
    return EvalSets(bitext=bitext, hint3=hint3, hint3_oos=hint3_oos)


def sample_rows(rows: Sequence[EvalRow], limit: int | None, seed: int = 13) -> list[EvalRow]:
    """At most ``limit`` rows, a reproducible random sample (all rows if no limit)."""
    if limit is None or limit >= len(rows):
        return list(rows)
    return random.Random(seed).sample(list(rows), limit)


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    intent: str  # what the bot acts on, possibly nlu_fallback
    confidence: float
    classifier_intent: str  # the top intent that is not nlu_fallback
    classifier_confidence: float


def base_intent(name: str) -> str:
    """``faq/return_policy`` (a retrieval intent) counts as ``return_policy``."""
    return name.rsplit("/", 1)[-1]


def prediction_from_parse(parse: dict[str, Any]) -> Prediction:
    intent = parse.get("intent") or {}
    name = base_intent(str(intent.get("name") or ""))
    confidence = float(intent.get("confidence") or 0.0)
    classifier_name, classifier_confidence = name, confidence
    if name == FALLBACK_INTENT:
        classifier_name, classifier_confidence = "", 0.0
        for ranked in parse.get("intent_ranking") or []:
            if ranked.get("name") != FALLBACK_INTENT:
                classifier_name = base_intent(str(ranked.get("name")))
                classifier_confidence = float(ranked.get("confidence") or 0.0)
                break
    return Prediction(name, confidence, classifier_name, classifier_confidence)


def quiet_rasa_logging() -> None:
    """Rasa logs every parse at debug level through structlog; keep it quiet."""
    import structlog

    logging.getLogger("rasa").setLevel(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def load_agent(model_path: Path) -> Agent:
    """Load a trained model (NLU-only or full) in-process."""
    if str(REPO_ROOT) not in sys.path:  # the pipeline's custom components live there
        sys.path.insert(0, str(REPO_ROOT))
    quiet_rasa_logging()
    from rasa.core.agent import Agent

    agent = Agent.load(str(model_path))
    if not agent.is_ready():
        raise RuntimeError(f"could not load a model from {model_path}")
    return agent


def _full_retrieval_intent(parse: dict[str, Any]) -> None:
    """Name a retrieval intent by its full key, as Rasa's processor does."""
    intent = parse.get("intent") or {}
    selector = (parse.get("response_selector") or {}).get(intent.get("name"))
    key = ((selector or {}).get("response") or {}).get("intent_response_key")
    if key:
        intent["full_retrieval_intent_name"] = key
        intent["name"] = key


class Parser:
    """Parses texts with a loaded agent.

    ``batch_size > 1`` runs the model graph on many messages at once (the NLU
    components are vectorised over a list of messages), which is what makes a
    ~24k-row report take a couple of minutes; ``batch_size == 1`` goes through the
    public ``Agent.parse_message`` one text at a time.
    """

    def __init__(self, agent: Agent, batch_size: int = 128) -> None:
        self.agent = agent
        self.batch_size = max(1, batch_size)

    async def parse_one(self, text: str) -> dict[str, Any]:
        return await self.agent.parse_message(text)

    def _parse_batch(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        from rasa.core.channels.channel import UserMessage
        from rasa.engine.constants import PLACEHOLDER_MESSAGE, PLACEHOLDER_TRACKER
        from rasa.shared.core.trackers import DialogueStateTracker
        from rasa.shared.nlu.constants import ENTITIES, INTENT, TEXT

        processor = self.agent.processor
        assert processor is not None, "agent has no model"
        messages = [UserMessage(text, sender_id="nlu-report") for text in texts]
        tracker = DialogueStateTracker.from_events("nlu-report", [])
        results = processor.graph_runner.run(
            inputs={PLACEHOLDER_MESSAGE: messages, PLACEHOLDER_TRACKER: tracker},
            targets=[processor.model_metadata.nlu_target],
        )
        parses: list[dict[str, Any]] = []
        for message in results[processor.model_metadata.nlu_target]:
            parse: dict[str, Any] = {
                TEXT: "",
                INTENT: {"name": None, "confidence": 0.0},
                ENTITIES: [],
            }
            parse.update(message.as_dict(only_output_properties=True))
            _full_retrieval_intent(parse)
            parses.append(parse)
        return parses

    async def parse_many(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """Parse every text, each distinct text once, in input order."""
        unique = list(dict.fromkeys(texts))
        parsed: dict[str, dict[str, Any]] = {}
        if self.batch_size == 1:
            for text in unique:
                parsed[text] = await self.parse_one(text)
        else:
            for start in range(0, len(unique), self.batch_size):
                chunk = unique[start : start + self.batch_size]
                parsed.update(zip(chunk, self._parse_batch(chunk), strict=True))
                await asyncio.sleep(0)  # let other tasks run between batches
        return [parsed[text] for text in texts]


# ---------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IntentScore:
    intent: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class Score:
    rows: int
    accuracy: float
    macro_f1: float
    per_intent: list[IntentScore]
    confusions: list[tuple[str, str, int]]  # (source intent -> predicted, count)


@dataclass
class DatasetReport:
    name: str
    rows: int
    fallback_rate: float
    with_fallback: Score  # nlu_fallback counts as a miss
    classifier_only: Score  # the top non-fallback intent


def _gold(accepted: tuple[str, ...], predicted: str) -> str:
    return predicted if predicted in accepted else accepted[0]


def score_rows(
    rows: Sequence[EvalRow], predicted: Sequence[str], top_confusions: int = 15
) -> Score:
    """Accuracy, macro-F1 over the gold intents, per-intent P/R/F1 and top confusions.

    For a row with several accepted intents the gold label is the predicted intent
    when it is accepted, else the first accepted one.
    """
    golds = [_gold(row.accepted, pred) for row, pred in zip(rows, predicted, strict=True)]
    hits = [pred in row.accepted for row, pred in zip(rows, predicted, strict=True)]
    gold_count = Counter(golds)
    predicted_count = Counter(predicted)
    true_positive = Counter(g for g, p in zip(golds, predicted, strict=True) if g == p)
    per_intent: list[IntentScore] = []
    for intent in sorted(gold_count):
        tp = true_positive[intent]
        precision = tp / predicted_count[intent] if predicted_count[intent] else 0.0
        recall = tp / gold_count[intent]
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_intent.append(IntentScore(intent, precision, recall, f1, gold_count[intent]))
    confusions = Counter(
        (row.source_intent, pred)
        for row, pred, hit in zip(rows, predicted, hits, strict=True)
        if not hit
    )
    n = len(rows)
    return Score(
        rows=n,
        accuracy=sum(hits) / n if n else 0.0,
        macro_f1=sum(s.f1 for s in per_intent) / len(per_intent) if per_intent else 0.0,
        per_intent=per_intent,
        confusions=[(src, pred, c) for (src, pred), c in confusions.most_common(top_confusions)],
    )


def report_dataset(
    name: str,
    rows: Sequence[EvalRow],
    predictions: Sequence[Prediction],
    top_confusions: int = 15,
) -> DatasetReport:
    fallbacks = sum(p.intent == FALLBACK_INTENT for p in predictions)
    return DatasetReport(
        name=name,
        rows=len(rows),
        fallback_rate=fallbacks / len(rows) if rows else 0.0,
        with_fallback=score_rows(rows, [p.intent for p in predictions], top_confusions),
        classifier_only=score_rows(
            rows, [p.classifier_intent for p in predictions], top_confusions
        ),
    )


@dataclass
class OosReport:
    rows: int
    rejected: int  # predicted out_of_scope or nlu_fallback
    as_fallback: int
    top_predicted: list[tuple[str, int]]


def is_rejected(prediction: Prediction) -> bool:
    """The bot declined the message: out of scope, or asked to rephrase."""
    return prediction.intent in (OUT_OF_SCOPE_INTENT, FALLBACK_INTENT)


def report_oos(predictions: Sequence[Prediction]) -> OosReport:
    rejected = [is_rejected(p) for p in predictions]
    return OosReport(
        rows=len(predictions),
        rejected=sum(rejected),
        as_fallback=sum(p.intent == FALLBACK_INTENT for p in predictions),
        top_predicted=Counter(
            p.intent for p, r in zip(predictions, rejected, strict=True) if not r
        ).most_common(8),
    )


@dataclass(frozen=True)
class Paired:
    """Two models on the same rows: what each got right that the other did not."""

    name: str
    rows: int
    right_before: int
    right_now: int
    gained: int  # right now, wrong before
    lost: int  # right before, wrong now

    @property
    def p_value(self) -> float:
        """McNemar's exact test: two-sided binomial on the rows that changed."""
        changed = self.gained + self.lost
        if not changed:
            return 1.0
        tail = sum(math.comb(changed, i) for i in range(min(self.gained, self.lost) + 1))
        return min(1.0, 2 * tail / 2**changed)


def paired(name: str, before: Sequence[bool], now: Sequence[bool]) -> Paired:
    """``before``/``now``: per row, whether each model got it right."""
    pairs = list(zip(before, now, strict=True))
    return Paired(
        name=name,
        rows=len(pairs),
        right_before=sum(b for b, _ in pairs),
        right_now=sum(n for _, n in pairs),
        gained=sum(n and not b for b, n in pairs),
        lost=sum(b and not n for b, n in pairs),
    )


@dataclass
class NluReport:
    model: str
    eval_dir: str
    seconds: float
    datasets: list[DatasetReport]
    oos: OosReport | None
    against: str | None = None
    paired: list[Paired] | None = None

    def dataset(self, name: str) -> DatasetReport | None:
        return next((d for d in self.datasets if d.name == name), None)


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------


def chosen_rows(sets: EvalSets, limit: int | None = None) -> dict[str, list[EvalRow]]:
    return {
        "bitext": sample_rows(sets.bitext, limit),
        "hint3": sample_rows(sets.hint3, limit),
        OOS_SET: sample_rows(sets.hint3_oos, limit),
    }


async def predict(
    agent: Agent, chosen: dict[str, list[EvalRow]], batch_size: int = 128
) -> dict[str, list[Prediction]]:
    """The model's prediction for every row of every set."""
    everything = [row for rows in chosen.values() for row in rows]
    parses = await Parser(agent, batch_size).parse_many([row.text for row in everything])
    by_text = {
        row.text: prediction_from_parse(p) for row, p in zip(everything, parses, strict=True)
    }
    return {name: [by_text[row.text] for row in rows] for name, rows in chosen.items()}


def score_sets(
    chosen: dict[str, list[EvalRow]],
    predictions: dict[str, list[Prediction]],
    top_confusions: int = 15,
) -> tuple[list[DatasetReport], OosReport | None]:
    datasets = [
        report_dataset(name, rows, predictions[name], top_confusions)
        for name, rows in chosen.items()
        if name != OOS_SET and rows
    ]
    oos = report_oos(predictions[OOS_SET]) if chosen[OOS_SET] else None
    return datasets, oos


def compare(
    chosen: dict[str, list[EvalRow]],
    before: dict[str, list[Prediction]],
    now: dict[str, list[Prediction]],
) -> list[Paired]:
    """Row by row: in-scope rows right when accepted, out-of-scope rows when rejected."""
    def right(name: str, row: EvalRow, p: Prediction) -> bool:
        return is_rejected(p) if name == OOS_SET else p.intent in row.accepted

    return [
        paired(name, [right(name, r, p) for r, p in zip(rows, before[name], strict=True)],
               [right(name, r, p) for r, p in zip(rows, now[name], strict=True)])
        for name, rows in chosen.items()
        if rows
    ]


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def render_markdown(report: NluReport, per_intent: bool = True) -> str:
    lines = [
        "# NLU report",
        "",
        f"- model: `{report.model}`",
        f"- eval sets: `{report.eval_dir}`",
        f"- parse time: {report.seconds:.1f} s",
        "",
        "`nlu_fallback` counts as a miss; *classifier* scores the top non-fallback intent.",
        "",
        "| dataset | rows | accuracy | macro-F1 | fallback "
        "| classifier accuracy | classifier macro-F1 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for d in report.datasets:
        lines.append(
            f"| {d.name} | {d.rows} | {_pct(d.with_fallback.accuracy)} "
            f"| {d.with_fallback.macro_f1:.3f} | {_pct(d.fallback_rate)} "
            f"| {_pct(d.classifier_only.accuracy)} | {d.classifier_only.macro_f1:.3f} |"
        )
    if report.paired:
        lines += [
            "",
            f"Against `{report.against}`, row by row (out-of-scope rows: right = rejected):",
            "",
            "| dataset | rows | right before | right now | gained | lost "
            "| McNemar exact p |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {c.name} | {c.rows} | {c.right_before} | {c.right_now} | {c.gained} "
            f"| {c.lost} | {'< 0.001' if c.p_value < 0.001 else f'{c.p_value:.3f}'} |"
            for c in report.paired
        ]
    if report.oos:
        o = report.oos
        lines += [
            "",
            f"HINT3 out-of-scope test rows (`{HINT3_OOS_LABEL}`, not in the map, "
            f"informational): {o.rejected}/{o.rows} rejected ({_pct(o.rejected / o.rows)}; "
            f"{o.as_fallback} by `nlu_fallback`); most frequent other predictions: "
            + ", ".join(f"{name} {count}" for name, count in o.top_predicted),
        ]
    for d in report.datasets:
        lines += ["", f"## {d.name}", ""]
        if per_intent:
            lines += [
                "| intent | precision | recall | F1 | support |",
                "|---|---:|---:|---:|---:|",
            ]
            lines += [
                f"| {s.intent} | {s.precision:.3f} | {s.recall:.3f} | {s.f1:.3f} | {s.support} |"
                for s in d.with_fallback.per_intent
            ]
            lines.append("")
        lines += ["Top confusions (source label → predicted):", ""]
        lines += [f"- {src} → {pred}: {count}" for src, pred, count in d.with_fallback.confusions]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bot nlu-report",
        description="Score a trained model on the labelled public sets in ../shared/eval.",
    )
    parser.add_argument(
        "--model", type=Path, help="model archive (default: newest models/*.tar.gz)"
    )
    parser.add_argument(
        "--eval-dir",
        type=Path,
        default=DEFAULT_EVAL_DIR,
        help=f"folder with the eval CSVs (default: {DEFAULT_EVAL_DIR})",
    )
    parser.add_argument("--limit", type=int, help="score a random sample of N rows per set")
    parser.add_argument("--out", type=Path, help="also write the report as markdown to FILE")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=128,
        help="messages per model call; 1 uses Agent.parse_message (default 128)",
    )
    parser.add_argument("--no-per-intent", action="store_true", help="omit per-intent tables")
    parser.add_argument(
        "--confusions", type=int, default=15, help="confusions listed per set (default 15)"
    )
    parser.add_argument(
        "--against",
        type=Path,
        metavar="OLD_MODEL",
        help="also parse with this model and compare the two row by row",
    )
    return parser


def make_report(
    model: Path,
    eval_dir: Path,
    limit: int | None = None,
    batch_size: int = 128,
    top_confusions: int = 15,
    against: Path | None = None,
) -> NluReport:
    chosen = chosen_rows(load_eval_sets(eval_dir), limit)
    agent = load_agent(model)
    started = time.perf_counter()
    now = asyncio.run(predict(agent, chosen, batch_size))
    seconds = time.perf_counter() - started
    datasets, oos = score_sets(chosen, now, top_confusions)
    report = NluReport(str(model), str(eval_dir), seconds, datasets, oos)
    if against is not None:
        before = asyncio.run(predict(load_agent(against), chosen, batch_size))
        report.against, report.paired = str(against), compare(chosen, before, now)
    return report


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bot.tools.launcher import newest_model

    model = args.model or newest_model()
    if model is None or not Path(model).exists():
        print(
            "error: no model found; train one first (bot train) or pass --model", file=sys.stderr
        )
        return 2
    if not (args.eval_dir / INTENT_MAP_FILE).exists():
        print(f"error: no {INTENT_MAP_FILE} in {args.eval_dir}", file=sys.stderr)
        return 2
    if args.against is not None and not args.against.exists():
        print(f"error: no model at {args.against}", file=sys.stderr)
        return 2
    report = make_report(Path(model), args.eval_dir, args.limit, args.batch_size,
                         args.confusions, args.against)
    text = render_markdown(report, per_intent=not args.no_per_intent)
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


# ---------------------------------------------------------------------------
# Training data helpers (shared with tests/test_nlu_data.py)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AnnotatedEntity:
    entity: str
    value: str  # after the example's synonym mapping, e.g. "refund" for "money back"
    surface: str  # the annotated text


@dataclass(frozen=True)
class TrainingExample:
    intent: str
    text: str  # entity annotations removed
    entities: tuple[AnnotatedEntity, ...] = ()


@dataclass
class TrainingDataSummary:
    examples: list[TrainingExample]
    synonyms: dict[str, str]  # synonym (lower case) -> normalised value
    regexes: dict[str, str]  # name -> pattern


def load_training_data(nlu_dir: Path = DEFAULT_NLU_DIR) -> TrainingDataSummary:
    """Read the NLU training files with Rasa's own reader."""
    from rasa.shared.nlu.training_data.loading import load_data

    data = load_data(str(nlu_dir))
    examples = []
    for message in data.intent_examples:
        text = str(message.get("text"))
        entities = tuple(
            AnnotatedEntity(str(e["entity"]), str(e["value"]), text[e["start"] : e["end"]])
            for e in message.get("entities") or []
        )
        examples.append(TrainingExample(str(message.get("intent")), text, entities))
    return TrainingDataSummary(
        examples=examples,
        synonyms={str(k): str(v) for k, v in data.entity_synonyms.items()},
        regexes={str(r["name"]): str(r["pattern"]) for r in data.regex_features},
    )


_EMAIL_RE = re.compile(r"\S+@\S+\.\w+")
_ORDER_RE = re.compile(r"#?\s?\b[a-z]\s?-?\d{4,8}\b", re.IGNORECASE)
_NUMBER_RE = re.compile(r"[+$€£₹]?\d[\d\s().,-]*\d|\d")
_PUNCT = str.maketrans({c: " " for c in string.punctuation if c not in "<>"})


def overlap_key(text: str) -> str:
    """A normalised form for spotting the same utterance in two places.

    Lower case, placeholders and data (order ids, emails, numbers) reduced to one
    ``<x>`` marker, punctuation removed, whitespace collapsed. A text that is only
    data (``A1001``, an email, a pincode) has no words to compare: its key is ``""``.
    """
    text = PLACEHOLDER_RE.sub(" <x> ", text)
    text = _EMAIL_RE.sub(" <x> ", text)
    text = _ORDER_RE.sub(" <x> ", text)
    text = _NUMBER_RE.sub(" <x> ", text)
    text = text.lower().translate(_PUNCT)
    key = " ".join(re.sub(r"(<x>\s*)+", "<x> ", text).split())
    return key if key.replace("<x>", "").strip() else ""


# A training example is a near-copy of an eval row when their word sets (of
# `overlap_key`, data markers dropped) have a Jaccard similarity of at least this:
# at most one word in five differs ("i want to file a complaint" vs "I want to file a
# customer complaint" is 6/7 = 0.86). The data values (order numbers, pincodes,
# emails, Bitext's {{placeholders}}) are not words, so "cancel A1003" is a copy of
# "cancel".
NEAR_COPY_JACCARD = 0.8


def overlap_words(text: str) -> frozenset[str]:
    """The words of `overlap_key`, without the ``<x>`` data marker."""
    return frozenset(word for word in overlap_key(text).split() if word != "<x>")


@dataclass(frozen=True)
class NearCopy:
    training: str
    eval_text: str
    similarity: float  # Jaccard similarity of the two word sets


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def find_near_copies(
    training_texts: Iterable[str],
    eval_rows: Iterable[str],
    threshold: float = NEAR_COPY_JACCARD,
) -> list[NearCopy]:
    """Every training text whose word set is within ``threshold`` Jaccard of an eval
    row's, each with its most similar row.

    Prefix filtering keeps this fast (no all-pairs loop): with all words ranked
    rarest first, two sets of Jaccard >= t must share a word among the first
    ``n - ceil(t * n) + 1`` words of each, so only those prefixes are indexed and probed.
    """
    train_words = {text: overlap_words(text) for text in dict.fromkeys(training_texts)}
    eval_words = [
        (text, words) for text in dict.fromkeys(eval_rows) if (words := overlap_words(text))
    ]
    frequency = Counter(
        word for words in (*train_words.values(), *(w for _, w in eval_words)) for word in words
    )

    def prefix(words: frozenset[str]) -> list[str]:
        size = len(words) - math.ceil(threshold * len(words) - 1e-9) + 1
        return sorted(words, key=lambda word: (frequency[word], word))[:size]

    index: dict[str, list[int]] = defaultdict(list)
    for i, (_, words) in enumerate(eval_words):
        for word in prefix(words):
            index[word].append(i)
    found: list[NearCopy] = []
    for text, words in train_words.items():
        if not words:
            continue
        candidates = {i for word in prefix(words) for i in index.get(word, ())}
        best: NearCopy | None = None
        for i in sorted(candidates):
            similarity = jaccard(words, eval_words[i][1])
            if similarity >= threshold and (best is None or similarity > best.similarity):
                best = NearCopy(text, eval_words[i][0], similarity)
        if best is not None:
            found.append(best)
    return found


def eval_texts(eval_dir: Path) -> Iterable[str]:
    """Every text of every eval CSV (all splits, all labels)."""
    for name in (BITEXT_FILE, HINT3_FILE):
        path = eval_dir / name
        if path.exists():
            yield from (row["text"] for row in _read_csv(path))


if __name__ == "__main__":
    sys.exit(run())
