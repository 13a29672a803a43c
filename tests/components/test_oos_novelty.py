"""The out-of-scope novelty classifier: trained on featurized examples, it answers a
message far from every in-scope example with out_of_scope, leaves near ones alone,
and keeps what it learned through persist and load."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData
from rasa.shared.utils.io import read_yaml_file

from components.oos_novelty import NoveltyOutOfScopeClassifier
from components.sentence_embeddings import SentenceEmbeddingFeaturizer

REPO = Path(__file__).resolve().parents[2]

IN_SCOPE = {
    "order_status": ["where is my order", "has my parcel shipped yet", "track my package"],
    "return_item": ["I want to return these shoes", "how do I send an item back"],
    "payment_methods": ["can I pay with paypal", "which cards do you accept"],
}
OUT_OF_SCOPE = ["what's the weather like today", "tell me a joke"]


def featurized(texts: list[str], intent: str | None = None) -> list[Message]:
    featurizer = SentenceEmbeddingFeaturizer(
        {**SentenceEmbeddingFeaturizer.get_default_config(), "scale": 10.0}, "embeddings")
    messages = [Message(data={"text": t, **({"intent": intent} if intent else {})})
                for t in texts]
    return featurizer.process(messages)


def classified(messages: list[Message], intent: str = "order_status") -> list[Message]:
    """As the intent classifier before it would leave them: a confident store intent."""
    for m in messages:
        m.set("intent", {"name": intent, "confidence": 0.9}, add_to_output=True)
        m.set("intent_ranking", [{"name": intent, "confidence": 0.9},
                                 {"name": "out_of_scope", "confidence": 0.05}],
              add_to_output=True)
    return messages


@pytest.fixture()
def storage(tmp_path: Path) -> LocalModelStorage:
    return LocalModelStorage(tmp_path)


def trained(storage: LocalModelStorage, **config: object) -> NoveltyOutOfScopeClassifier:
    examples = [m for intent, texts in IN_SCOPE.items() for m in featurized(texts, intent)]
    examples += featurized(OUT_OF_SCOPE, "out_of_scope")
    context = ExecutionContext(GraphSchema({}), "test")
    component = NoveltyOutOfScopeClassifier.create(
        {**NoveltyOutOfScopeClassifier.get_default_config(), **config}, storage,
        Resource("novelty"), context)
    component.train(TrainingData(training_examples=examples))
    return component


def test_far_message_becomes_out_of_scope_above_the_classifier_ranking(
    storage: LocalModelStorage,
) -> None:
    component = trained(storage, k=2, min_similarity=0.45)
    [message] = component.process(classified(featurized(["how do I cancel my gym membership"])))
    assert message.get("intent")["name"] == "out_of_scope"
    assert message.get("intent")["confidence"] > 0.5
    ranking = message.get("intent_ranking")
    assert [r["name"] for r in ranking] == ["out_of_scope", "order_status"]
    # the classifier's confidences are scaled down below out_of_scope's: a clear lead,
    # so the FallbackClassifier's ambiguity rule keeps out_of_scope
    similarity = component.similarity(message)
    assert similarity is not None
    assert ranking[1]["confidence"] == pytest.approx(0.9 * similarity)
    assert ranking[0]["confidence"] - ranking[1]["confidence"] > 0.1


def test_near_message_keeps_the_classifier_intent(storage: LocalModelStorage) -> None:
    component = trained(storage, k=2, min_similarity=0.45)
    [message] = component.process(classified(featurized(["where's my package"])))
    assert message.get("intent") == {"name": "order_status", "confidence": 0.9}
    similarity = component.similarity(message)
    assert similarity is not None and similarity > 0.45


def test_out_of_scope_examples_are_not_neighbours(storage: LocalModelStorage) -> None:
    """The training examples of out_of_scope itself never make a message in scope."""
    component = trained(storage, k=1, min_similarity=0.45)
    assert component.in_scope is not None
    assert len(component.in_scope) == sum(len(t) for t in IN_SCOPE.values())
    [message] = component.process(classified(featurized(["tell me a joke"])))
    assert message.get("intent")["name"] == "out_of_scope"


def test_persisted_and_loaded_component_decides_the_same(storage: LocalModelStorage) -> None:
    component = trained(storage, k=2, min_similarity=0.45)
    loaded = NoveltyOutOfScopeClassifier.load(
        {**NoveltyOutOfScopeClassifier.get_default_config(), "k": 2, "min_similarity": 0.45},
        storage, Resource("novelty"), ExecutionContext(GraphSchema({}), "test"))
    assert loaded.in_scope is not None and component.in_scope is not None
    assert np.allclose(loaded.in_scope, component.in_scope)
    [far] = loaded.process(classified(featurized(["suggest a diet chart for weight loss"])))
    assert far.get("intent")["name"] == "out_of_scope"


def test_message_without_embedding_is_left_alone(storage: LocalModelStorage) -> None:
    component = trained(storage)
    [message] = component.process(classified([Message(data={"text": "hello"})]))
    assert message.get("intent")["name"] == "order_status"


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        NoveltyOutOfScopeClassifier.validate_config({"k": 0})
    with pytest.raises(ValueError):
        NoveltyOutOfScopeClassifier.validate_config({"min_similarity": 2})


def test_config_yml_puts_it_after_the_classifier_and_before_triggers_and_fallback() -> None:
    names = [c["name"] for c in read_yaml_file(REPO / "config.yml")["pipeline"]]
    novelty = names.index("components.oos_novelty.NoveltyOutOfScopeClassifier")
    assert names.index("LogisticRegressionClassifier") < novelty
    assert novelty < names.index("components.escalation_triggers.EscalationTriggerClassifier")
    assert novelty < names.index("FallbackClassifier")
