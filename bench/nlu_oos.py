"""Choose the out-of-scope novelty rule (components/oos_novelty.py) and the
FallbackClassifier thresholds on held-out folds of our own data, on cached sentence
embeddings (no Rasa training per fold: minutes instead of an hour).

    .venv/bin/python bench/nlu_oos.py            # writes bench/results/nlu_oos.md

The eval sets in ../shared/eval are never read here.

What is simulated: config.yml's classifier, a LogisticRegression (lbfgs, C=1,
class_weight balanced, as Rasa's LogisticRegressionClassifier) on the all-MiniLM-L6-v2
embedding times the featurizer's scale (the regex features are left out), followed by
the novelty rule and the FallbackClassifier replayed on its ranking.

Two ways of holding out, each with ``--folds`` folds:

- *random*: every intent's examples, out_of_scope included, spread evenly over the
  folds (as bench/nlu_thresholds.py). A held-out out-of-scope question usually has a
  near twin in training, so this flatters any rejection rule.
- *topic*: in-scope examples as above, but the out_of_scope examples are first grouped
  into ``--topics`` topics (k-means on their embeddings) and whole topics are held
  out: the held-out out-of-scope questions are about things no training example of
  that fold talks about, as the questions of real users of other businesses are.
  The rule is chosen on this split.

The novelty score of a message is the mean cosine similarity of its ``k`` nearest
in-scope training examples (all intents but out_of_scope). Below ``min_similarity``
the message is taken as out_of_scope. Grid: min_similarity x FallbackClassifier
threshold x ambiguity. Rule (as bench/nlu_thresholds.py): the point with the most
out-of-scope rejection whose in-scope accuracy is at most ``--max-accuracy-loss``
below that of no rule at all (no novelty rule, no fallback); ties go to the lower
thresholds.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from nlu_thresholds import stratified_folds  # noqa: E402

from bot.tools.nlu_report import DEFAULT_NLU_DIR, OUT_OF_SCOPE_INTENT  # noqa: E402

RESULTS_FILE = REPO_ROOT / "bench" / "results" / "nlu_oos.md"
CACHE_DIR = Path("/tmp/nlu-oos-cache")
SIMILARITIES = [0.0] + [round(0.30 + 0.025 * i, 3) for i in range(15)]  # 0.30 .. 0.65
THRESHOLDS = [0.0, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6]
AMBIGUITIES = [0.0, 0.02, 0.05]
FALLBACK = "nlu_fallback"


@dataclass(frozen=True)
class Point:
    split: str
    k: int
    min_similarity: float
    threshold: float
    ambiguity: float
    in_scope_accuracy: float
    in_scope_fallback: float
    oos_rejected: float

    @property
    def balance(self) -> float:
        return (self.in_scope_accuracy + self.oos_rejected) / 2


def load_examples(nlu_dir: Path) -> tuple[list[str], list[str]]:
    from rasa.shared.nlu.training_data.loading import load_data

    data = load_data(str(nlu_dir))
    texts = [str(m.get("text")) for m in data.intent_examples]
    intents = [str(m.get("intent")) for m in data.intent_examples]
    return texts, intents


def embed_cached(texts: list[str]) -> np.ndarray:
    """The embeddings of each text, computed once per distinct text and kept in /tmp."""
    from components.minilm import load_minilm

    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    store = CACHE_DIR / "embeddings.npz"
    known: dict[str, np.ndarray] = {}
    if store.exists():
        saved = np.load(store, allow_pickle=False)
        known = dict(zip(saved["keys"].tolist(), saved["vectors"], strict=True))
    key = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
    missing = sorted({k: t for k, t in zip(key, texts, strict=True) if k not in known}.items())
    if missing:
        started = time.perf_counter()
        vectors = load_minilm().embed([t for _, t in missing])
        known.update({k: v for (k, _), v in zip(missing, vectors, strict=True)})
        print(f"embedded {len(missing)} texts in {time.perf_counter() - started:.0f} s")
        np.savez(store, keys=np.array(list(known)), vectors=np.stack(list(known.values())))
    return np.stack([known[k] for k in key])


def topic_folds(
    emb: np.ndarray, intents: list[str], folds: int, topics: int, seed: int
) -> list[int]:
    """In-scope examples stratified as usual; out_of_scope by whole k-means topics."""
    from sklearn.cluster import KMeans

    fold_of = stratified_folds(intents, folds, seed)
    oos = [i for i, intent in enumerate(intents) if intent == OUT_OF_SCOPE_INTENT]
    labels = KMeans(n_clusters=topics, n_init=10, random_state=seed).fit_predict(emb[oos])
    rng = np.random.default_rng(seed)
    order = rng.permutation(topics)
    # spread the topics so each fold holds out a similar number of examples
    sizes = np.bincount(labels, minlength=topics)
    load = [0] * folds
    fold_of_topic = {}
    for topic in sorted(order, key=lambda t: -sizes[t]):
        target = int(np.argmin(load))
        fold_of_topic[int(topic)] = target
        load[target] += int(sizes[topic])
    for i, label in zip(oos, labels, strict=True):
        fold_of[i] = fold_of_topic[int(label)]
    return fold_of


@dataclass
class HeldOut:
    gold: np.ndarray  # intent index
    proba: np.ndarray  # rows x classes
    knn: dict[int, np.ndarray]  # k -> mean similarity of k nearest in-scope examples


def held_out(
    emb: np.ndarray, y: np.ndarray, oos_class: int, fold_of: np.ndarray, scale: float,
    ks: list[int],
) -> HeldOut:
    from sklearn.linear_model import LogisticRegression

    n_classes = int(y.max()) + 1
    proba = np.zeros((len(y), n_classes))
    knn = {k: np.zeros(len(y)) for k in ks}
    for fold in sorted(set(fold_of.tolist())):
        train, test = fold_of != fold, fold_of == fold
        clf = LogisticRegression(solver="lbfgs", max_iter=1000, class_weight="balanced")
        clf.fit(emb[train] * scale, y[train])
        p = np.zeros((int(test.sum()), n_classes))
        p[:, clf.classes_] = clf.predict_proba(emb[test] * scale)
        proba[test] = p
        in_scope = emb[train & (y != oos_class)]
        sims = emb[test] @ in_scope.T
        top = -np.sort(-sims, axis=1)
        for k in ks:
            knn[k][test] = top[:, :k].mean(axis=1)
    return HeldOut(y, proba, knn)


@dataclass
class Ranking:
    top: np.ndarray  # the classifier's intent index
    first: np.ndarray  # its confidence
    margin: np.ndarray  # over the second intent

    @classmethod
    def of(cls, proba: np.ndarray) -> Ranking:
        order = np.argsort(-proba, axis=1)
        rows = np.arange(len(order))
        first = proba[rows, order[:, 0]]
        return cls(order[:, 0], first, first - proba[rows, order[:, 1]])


def outcomes(
    h: HeldOut, r: Ranking, k: int, s: float, t: float, a: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per held-out example: right, rejected as novel, fallen back."""
    novel = h.knn[k] < s
    fallback = ~novel & ((r.first < t) | (r.margin < a))
    return ~novel & ~fallback & (r.top == h.gold), novel, fallback


def grid(h: HeldOut, oos_class: int, split: str, ks: list[int]) -> list[Point]:
    r = Ranking.of(h.proba)
    is_oos = h.gold == oos_class
    points = []
    for k in ks:
        for s in SIMILARITIES:
            for t in THRESHOLDS:
                for a in AMBIGUITIES:
                    right, novel, fallback = outcomes(h, r, k, s, t, a)
                    rejected = novel | fallback | (r.top == oos_class)
                    points.append(Point(
                        split, k, s, t, a,
                        in_scope_accuracy=float(right[~is_oos].mean()),
                        in_scope_fallback=float((fallback | novel)[~is_oos].mean()),
                        oos_rejected=float(rejected[is_oos].mean()),
                    ))
    return points


def per_intent(h: HeldOut, oos_class: int, p: Point, names: list[str]) -> list[str]:
    """Where the chosen point loses in-scope examples, intent by intent, worst first:
    the intents whose wording our data covers least."""
    right, novel, fallback = outcomes(
        h, Ranking.of(h.proba), p.k, p.min_similarity, p.threshold, p.ambiguity)
    rows = []
    for c, name in enumerate(names):
        mine = h.gold == c
        if c == oos_class or not mine.any():
            continue
        rows.append((float(right[mine].mean()), name, int(mine.sum()),
                     float(novel[mine].mean()), float(fallback[mine].mean())))
    pct = "{:.1%}".format
    return [f"| {name} | {n} | {pct(acc)} | {pct(nov)} | {pct(fb)} |"
            for acc, name, n, nov, fb in sorted(rows)]


def choose(points: list[Point], max_loss: float, novelty: bool = True) -> Point:
    base = next(p for p in points if p.min_similarity == 0 and p.threshold == 0
                and p.ambiguity == 0)
    allowed = [p for p in points if p.in_scope_accuracy >= base.in_scope_accuracy - max_loss
               and (novelty or p.min_similarity == 0) and p.k == base.k]
    return max(allowed, key=lambda p: (p.oos_rejected, -p.min_similarity, -p.threshold,
                                       -p.ambiguity))


def at(points: list[Point], like: Point) -> Point:
    return next(p for p in points if (p.k, p.min_similarity, p.threshold, p.ambiguity)
                == (like.k, like.min_similarity, like.threshold, like.ambiguity))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nlu", type=Path, default=DEFAULT_NLU_DIR)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--topics", type=int, default=30)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--k", type=int, action="append", help="neighbours (repeatable)")
    parser.add_argument("--max-accuracy-loss", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=RESULTS_FILE)
    return parser


def row(p: Point, label: str) -> str:
    pct = "{:.1%}".format
    return (f"| {label} | {p.k} | {p.min_similarity:.3f} | {p.threshold:.2f} / "
            f"{p.ambiguity:.2f} | {pct(p.in_scope_accuracy)} | {pct(p.in_scope_fallback)} "
            f"| {pct(p.oos_rejected)} |")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ks = args.k or [1, 3, 5]
    texts, intents = load_examples(args.nlu)
    emb = embed_cached(texts)
    names = sorted(set(intents))
    y = np.array([names.index(i) for i in intents])
    oos_class = names.index(OUT_OF_SCOPE_INTENT)
    splits = {
        "random": np.array(stratified_folds(intents, args.folds, args.seed)),
        "topic": np.array(topic_folds(emb, intents, args.folds, args.topics, args.seed)),
    }
    results: dict[str, list[Point]] = {}
    held: dict[str, HeldOut] = {}
    for split, fold_of in splits.items():
        started = time.perf_counter()
        held[split] = h = held_out(emb, y, oos_class, fold_of, args.scale, ks)
        results[split] = grid(h, oos_class, split, ks)
        print(f"{split}: {time.perf_counter() - started:.0f} s", flush=True)

    topic, random_ = results["topic"], results["random"]
    lines = [
        "# Out-of-scope novelty rule and fallback thresholds, chosen on held-out own data",
        "",
        f"Written by `bench/nlu_oos.py` ({time.strftime('%Y-%m-%d %H:%M')}): "
        f"{len(texts)} examples of `data/nlu` ({sum(y == oos_class)} out_of_scope), "
        f"{args.folds} folds (seed {args.seed}); out_of_scope held out by whole topics "
        f"({args.topics} k-means topics) for the *topic* split. Simulated classifier: "
        f"LogisticRegression on the embedding x {args.scale:g}. The eval sets are not "
        "used. In-scope accuracy counts a fallback or novelty rejection as a miss; "
        "rejected = out_of_scope or nlu_fallback.",
        "",
        f"Rule: the most rejection for at most {args.max_accuracy_loss:.1%} less in-scope "
        "accuracy than no rule at all, chosen on the *topic* split.",
        "",
        "| choice (topic split) | k | min_similarity | threshold / ambiguity "
        "| in-scope acc | in-scope rejected | OOS rejected |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    best_by_k = {}
    for k in ks:
        pts = [p for p in topic if p.k == k]
        base = next(p for p in pts if p.min_similarity == 0 and p.threshold == 0
                    and p.ambiguity == 0)
        fb_only = choose(pts, args.max_accuracy_loss, novelty=False)
        best = choose(pts, args.max_accuracy_loss)
        best_by_k[k] = best
        if k == ks[0]:
            lines.append(row(base, "no rule"))
            lines.append(row(fb_only, "fallback only"))
            current = at(pts, Point("", k, 0.0, 0.4, 0.02, 0, 0, 0))
            lines.append(row(current, "config.yml before (0.40 / 0.02)"))
        lines.append(row(best, f"novelty k={k} + fallback"))
    chosen = max(best_by_k.values(), key=lambda p: (p.oos_rejected, -p.k))
    same_random = at(random_, chosen)
    lines += [
        "",
        f"**Chosen: k={chosen.k}, min_similarity {chosen.min_similarity:.3f}, "
        f"FallbackClassifier {chosen.threshold:.2f} / {chosen.ambiguity:.2f}.** "
        f"On the random split the same point gives in-scope accuracy "
        f"{same_random.in_scope_accuracy:.1%} and OOS rejected "
        f"{same_random.oos_rejected:.1%} (no rule: "
        f"{at(random_, Point('', chosen.k, 0, 0, 0, 0, 0, 0)).in_scope_accuracy:.1%} / "
        f"{at(random_, Point('', chosen.k, 0, 0, 0, 0, 0, 0)).oos_rejected:.1%}).",
        "",
        "The chosen k and fallback pair along min_similarity (topic split):",
        "",
        "| min_similarity | in-scope acc | in-scope rejected | OOS rejected "
        "| random split: in-scope acc | OOS rejected |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for s in SIMILARITIES:
        p = at(topic, Point("", chosen.k, s, chosen.threshold, chosen.ambiguity, 0, 0, 0))
        r = at(random_, p)
        mark = " **←**" if p == chosen else ""
        lines.append(
            f"| {s:.3f} | {p.in_scope_accuracy:.1%} | {p.in_scope_fallback:.1%} "
            f"| {p.oos_rejected:.1%}{mark} | {r.in_scope_accuracy:.1%} | {r.oos_rejected:.1%} |")
    lines += [
        "",
        "In-scope intents at the chosen point (topic split), worst held-out accuracy "
        "first: where our data covers customers' wording least.",
        "",
        "| intent | examples | held-out acc | rejected as novel | fell back |",
        "|---|---:|---:|---:|---:|",
        *per_intent(held["topic"], oos_class, chosen, names),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
