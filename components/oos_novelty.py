"""Out-of-scope by distance: a message far from every in-scope training example, in
the sentence-embedding space, is answered as `out_of_scope`.

The LogisticRegressionClassifier spreads all its probability over the intents it
knows, so a question about something no training example talks about (a gym
membership, a diet, another company's service) still gets a confident store intent.
This component keeps the unit-length sentence embeddings of the training examples of
every intent but `out_of_scope` and scores each message by the mean cosine similarity
of its ``k`` nearest ones. Below ``min_similarity`` the intent becomes `out_of_scope`
(confidence 1 - that similarity) at the top of the ranking, the classifier's ranking
kept below it with its confidences times the similarity. ``k`` and ``min_similarity``
were chosen on held-out folds of our own data in which whole out-of-scope topics were
held out (bench/nlu_oos.py, bench/results/nlu_oos.md).

Place it after the intent classifier and before the EscalationTriggerClassifier (a
trigger phrase still wins) and the FallbackClassifier. It reads the dense sentence
features of the message (the SentenceEmbeddingFeaturizer's; with ``featurizers`` set,
only those of the named featurizers) and L2-normalises them, so the featurizer's
``scale`` does not matter."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.shared.nlu.constants import INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

OUT_OF_SCOPE = "out_of_scope"
EMBEDDINGS_FILE = "in_scope_embeddings.npy"


@DefaultV1Recipe.register(
    [DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER], is_trainable=True
)
class NoveltyOutOfScopeClassifier(GraphComponent, IntentClassifier):
    @staticmethod
    def get_default_config() -> Dict[str, Any]:
        return {
            "k": 3,  # neighbours averaged
            "min_similarity": 0.45,  # below: out_of_scope
            "out_of_scope_intent": OUT_OF_SCOPE,
            "featurizers": [],  # dense featurizers read; empty: all
        }

    def __init__(
        self,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        in_scope: Optional[np.ndarray] = None,
    ) -> None:
        self.config = {**self.get_default_config(), **config}
        self.k = int(self.config["k"])
        self.min_similarity = float(self.config["min_similarity"])
        self.out_of_scope = str(self.config["out_of_scope_intent"])
        self._model_storage = model_storage
        self._resource = resource
        self.in_scope = in_scope  # rows: unit-length embeddings of in-scope examples

    @classmethod
    def validate_config(cls, config: Dict[str, Any]) -> None:
        if int(config.get("k", 3)) < 1:
            raise ValueError("NoveltyOutOfScopeClassifier: k must be at least 1")
        if not -1.0 <= float(config.get("min_similarity", 0.45)) <= 1.0:
            raise ValueError("NoveltyOutOfScopeClassifier: min_similarity is a cosine, -1..1")

    @classmethod
    def create(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> NoveltyOutOfScopeClassifier:
        return cls(config, model_storage, resource)

    def _embedding(self, message: Message) -> Optional[np.ndarray]:
        featurizers = list(self.config["featurizers"]) or None
        _, sentence = message.get_dense_features(TEXT, featurizers)
        if sentence is None:
            return None
        vector = np.asarray(sentence.features, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else None

    def train(self, training_data: TrainingData) -> Resource:
        rows = [
            self._embedding(m)
            for m in training_data.intent_examples
            if m.get(INTENT) != self.out_of_scope
        ]
        kept = [r for r in rows if r is not None]
        if not kept:
            raise ValueError(
                "NoveltyOutOfScopeClassifier: no in-scope example has a dense sentence "
                "feature; put a sentence-embedding featurizer before it"
            )
        in_scope = np.stack(kept).astype(np.float32)
        self.in_scope = in_scope
        with self._model_storage.write_to(self._resource) as directory:
            np.save(directory / EMBEDDINGS_FILE, in_scope)
        return self._resource

    @classmethod
    def load(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> NoveltyOutOfScopeClassifier:
        with model_storage.read_from(resource) as directory:
            in_scope = np.load(directory / EMBEDDINGS_FILE, allow_pickle=False)
        return cls(config, model_storage, resource, in_scope)

    def similarity(self, message: Message) -> Optional[float]:
        """Mean cosine similarity of the k nearest in-scope training examples."""
        vector = self._embedding(message)
        if vector is None or self.in_scope is None or not len(self.in_scope):
            return None
        if vector.shape[0] != self.in_scope.shape[1]:
            return None  # another featurizer's vector: no opinion
        sims = self.in_scope @ vector
        k = min(self.k, len(sims))
        return float(np.partition(sims, -k)[-k:].mean())

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            if not message.get(TEXT):
                continue
            similarity = self.similarity(message)
            if similarity is None or similarity >= self.min_similarity:
                continue
            # in scope with probability `similarity`: the classifier's confidences are
            # scaled by it, so out_of_scope (1 - similarity > 1 - min_similarity) leads
            # the ranking by a clear margin and the FallbackClassifier's ambiguity rule
            # does not turn it into nlu_fallback
            similarity = max(similarity, 0.0)
            novel = {"name": self.out_of_scope, "confidence": 1.0 - similarity}
            ranking = [novel] + [
                {**r, "confidence": float(r.get("confidence") or 0.0) * similarity}
                for r in message.get(INTENT_RANKING_KEY) or []
                if r.get("name") != self.out_of_scope
            ]
            message.set(INTENT, novel, add_to_output=True)
            message.set(INTENT_RANKING_KEY, ranking, add_to_output=True)
        return messages

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        return training_data
