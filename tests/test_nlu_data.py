"""Checks of the NLU training data in data/nlu and of the NLU report's scoring rules
(no model needed)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import pytest

from bot.tools.nlu_report import (
    CANONICAL_INTENTS,
    DEFAULT_EVAL_DIR,
    EXTRA_INTENTS,
    NEAR_COPY_JACCARD,
    REMEDY_VALUES,
    EvalRow,
    NluReport,
    Paired,
    Prediction,
    TrainingDataSummary,
    compare,
    eval_texts,
    fill_placeholders,
    find_near_copies,
    load_training_data,
    overlap_key,
    prediction_from_parse,
    render_markdown,
    score_rows,
)

MIN_EXAMPLES = 20


@pytest.fixture(scope="module")
def data() -> TrainingDataSummary:
    return load_training_data()


def test_every_required_intent_has_enough_examples(data: TrainingDataSummary) -> None:
    counts = Counter(example.intent for example in data.examples)
    too_few = {
        intent: counts[intent]
        for intent in (*CANONICAL_INTENTS, *EXTRA_INTENTS)
        if counts[intent] < MIN_EXAMPLES
    }
    assert not too_few, f"intents with fewer than {MIN_EXAMPLES} examples: {too_few}"


def test_no_example_is_labelled_with_two_intents(data: TrainingDataSummary) -> None:
    intents_by_key: dict[str, set[str]] = defaultdict(set)
    for example in data.examples:
        intents_by_key[example.text.strip().lower()].add(example.intent)
    clashes = {text: sorted(i) for text, i in intents_by_key.items() if len(i) > 1}
    assert not clashes


def test_no_training_example_is_a_near_copy_of_an_eval_row(data: TrainingDataSummary) -> None:
    """Not only exact copies: a training line whose words are (nearly) those of an eval
    row, in any order, with other data values, fails (`find_near_copies`: Jaccard of
    the word sets >= NEAR_COPY_JACCARD, after `overlap_key`)."""
    if not (DEFAULT_EVAL_DIR / "intent_map.csv").exists():
        reason = f"eval sets not found in {DEFAULT_EVAL_DIR}; overlap not checked"
        print(reason)
        pytest.skip(reason)
    eval_rows = list(eval_texts(DEFAULT_EVAL_DIR))
    eval_keys = {overlap_key(text) for text in eval_rows} - {""}
    exact = sorted({ex.text for ex in data.examples if overlap_key(ex.text) in eval_keys})
    assert not exact, f"{len(exact)} training examples also occur in the eval sets: {exact}"
    near = find_near_copies((ex.text for ex in data.examples), eval_rows)
    for copy in near:
        print(f"{copy.similarity:.2f}  {copy.training!r}  ~  {copy.eval_text!r}")
    assert not near, (
        f"{len(near)} training examples are near-copies (word Jaccard >= "
        f"{NEAR_COPY_JACCARD}) of eval rows; see the printed pairs"
    )


def test_near_copies_are_found_in_any_order_and_with_other_data() -> None:
    eval_rows = [
        "I want to file a customer complaint",
        "cancel",
        "status of order {{Order Number}}",
    ]
    training = [
        "i want to file a complaint",  # 6/7 words
        "cancel A1003",  # data values are not words
        "order status of K55012",  # word order does not matter
        "please cancel order A1003",  # 1/3: not a copy
        "i want to complain about a broken lamp",
    ]
    found = {c.training: c for c in find_near_copies(training, eval_rows)}
    assert set(found) == {"i want to file a complaint", "cancel A1003", "order status of K55012"}
    assert found["i want to file a complaint"].similarity == pytest.approx(6 / 7)


def test_remedy_values_are_normalised(data: TrainingDataSummary) -> None:
    remedies = [e for ex in data.examples for e in ex.entities if e.entity == "remedy"]
    # what the EntitySynonymMapper turns each annotated remedy into at run time
    normalised = {data.synonyms.get(e.value.lower(), e.value) for e in remedies}
    assert normalised == REMEDY_VALUES
    remedy_words = {e.surface.lower() for e in remedies} | {e.value.lower() for e in remedies}
    for synonym, value in data.synonyms.items():
        if synonym in remedy_words or value in remedy_words:
            assert value in REMEDY_VALUES, f"synonym {synonym!r} maps to {value!r}"


@pytest.mark.parametrize(
    ("name", "matches", "non_matches"),
    [
        (
            "order_id",
            ["A1001", "a1001", "#A1001", "A 1001", "#a 1002", "it's order A1003", "K550012"],
            ["INV-20931", "pincode 560034", "221B Baker Street", "it's 0161 496 0000"],
        ),
        (
            "email",
            ["buyer1@example.com", "my email is jane.doe@mail.co.uk"],
            ["buyer1 at example", "@example.com"],
        ),
        (
            "phone",
            ["+1 415 555 0101", "+44 20 7946 0958", "+91 98765 43210", "(415) 555-0133",
             "9876543210"],
            ["560034", "A1001", "2024-01-15", "45.00"],
        ),
    ],
)  # fmt: skip
def test_entity_regexes(
    data: TrainingDataSummary, name: str, matches: list[str], non_matches: list[str]
) -> None:
    pattern = re.compile(data.regexes[name], re.IGNORECASE)
    for text in matches:
        assert pattern.search(text), f"{name} regex misses {text!r}"
    for text in non_matches:
        assert not pattern.search(text), f"{name} regex matches {text!r}"


def test_data_entities_are_annotated_exactly_where_their_regex_matches(
    data: TrainingDataSummary,
) -> None:
    """The CRF learns from the annotations; the regex extractor finds the same spans."""
    for name in ("order_id", "email", "phone"):
        pattern = re.compile(data.regexes[name], re.IGNORECASE)
        for example in data.examples:
            found = [m.group() for m in pattern.finditer(example.text)]
            annotated = [e.surface for e in example.entities if e.entity == name]
            for surface in annotated:
                assert any(
                    surface in match for match in found
                ), f"{name} regex misses {surface!r} in {example.text!r}"
            for match in found:
                assert any(
                    match.strip() in s or s in match for s in annotated
                ), f"{match!r} in {example.text!r} is not annotated as {name}"


# The scoring rules of `bot nlu-report` (no model needed either).


def test_placeholders_are_filled_deterministically() -> None:
    text = "refund {{Currency Symbol}}{{Refund Amount}} for order {{Order Number}}, {{Foo}}"
    filled = fill_placeholders(text)
    assert "{{" not in filled and filled == fill_placeholders(text)
    assert re.search(r"order #?[A-Za-z]\d{4}", filled)


def test_scoring_counts_fallback_as_a_miss_and_accepts_any_listed_intent() -> None:
    rows = [
        EvalRow("hint3", "DELAY", "late", ("delivery_problem", "order_status")),
        EvalRow("hint3", "DELAY", "late again", ("delivery_problem", "order_status")),
        EvalRow("hint3", "ORDER_STATUS", "where", ("order_status",)),
        EvalRow("hint3", "ORDER_STATUS", "where now", ("order_status",)),
    ]
    score = score_rows(rows, ["order_status", "nlu_fallback", "order_status", "greet"])
    assert score.accuracy == 0.5
    by_intent = {s.intent: s for s in score.per_intent}
    # a hit on a multi-label row is gold = the prediction; a miss is gold = first accepted
    assert by_intent["order_status"].support == 3 and by_intent["order_status"].recall == 2 / 3
    assert by_intent["delivery_problem"].support == 1 and by_intent["delivery_problem"].f1 == 0
    assert score.macro_f1 == pytest.approx((0.8 + 0.0) / 2)
    assert ("DELAY", "nlu_fallback", 1) in score.confusions


def test_prediction_keeps_the_classifier_intent_under_a_fallback() -> None:
    parse = {
        "intent": {"name": "nlu_fallback", "confidence": 0.3},
        "intent_ranking": [
            {"name": "nlu_fallback", "confidence": 0.3},
            {"name": "faq/return_policy", "confidence": 0.22},
        ],
    }
    prediction = prediction_from_parse(parse)
    assert prediction.intent == "nlu_fallback"
    assert prediction.classifier_intent == "return_policy"


def test_comparison_counts_rows_each_model_alone_got_right() -> None:
    """``--against``: the same rows, row by row; an out-of-scope row is right when
    rejected; McNemar's exact p is the two-sided binomial over the rows that changed."""
    def said(*intents: str) -> list[Prediction]:
        return [Prediction(i, 0.9, i, 0.9) for i in intents]

    where = EvalRow("hint3", "ORDER_STATUS", "where", ("order_status",))
    chosen = {
        "bitext": [],
        "hint3": [where] * 7 + [EvalRow("hint3", "DELAY", "late", ("delivery_problem",))],
        "hint3_oos": [EvalRow("hint3", "NO_NODES_DETECTED", "gym", ())] * 3,
    }
    before = {"hint3": said(*["order_status"] * 5, "greet", "greet", "delivery_problem"),
              "hint3_oos": said("out_of_scope", "greet", "nlu_fallback")}
    now = {"hint3": said("greet", "greet", "greet", "greet", "greet", "order_status",
                         "order_status", "delivery_problem"),
           "hint3_oos": said("out_of_scope", "nlu_fallback", "greet")}
    hint3, oos = compare(chosen, before, now)
    assert (hint3.rows, hint3.right_before, hint3.right_now) == (8, 6, 3)
    assert (hint3.gained, hint3.lost) == (2, 5)
    assert hint3.p_value == pytest.approx(2 * (1 + 7 + 21) / 2**7)
    assert (oos.right_before, oos.right_now, oos.gained, oos.lost) == (2, 2, 1, 1)
    assert oos.p_value == 1.0
    assert compare({"hint3": [where] * 6, "bitext": [], "hint3_oos": []},
                   {"hint3": said(*["order_status"] * 6)},
                   {"hint3": said(*["greet"] * 6)})[0].p_value == pytest.approx(2 / 2**6)
    text = render_markdown(NluReport("new", "eval", 1.0, [], None, "old", [hint3, oos]))
    assert "Against `old`" in text and "| hint3 | 8 | 6 | 3 | 2 | 5 | 0.453 |" in text
    clear = Paired("hint3_oos", 12, 0, 12, 12, 0)
    assert clear.p_value == pytest.approx(2 / 2**12)
    assert "| 12 | 0 | < 0.001 |" in render_markdown(
        NluReport("new", "eval", 1.0, [], None, "old", [clear]))
