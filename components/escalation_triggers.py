"""An NLU component that turns the policy's trigger phrases (chargeback, safety or
legal language) into the `escalation_trigger` intent, whatever else was asked.

Phrases live in policy/escalation.yml and are read when the model loads, so a
designer's change applies at the next restart without retraining."""
from __future__ import annotations

from typing import Any, Dict, List

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.nlu.constants import ENTITIES, INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message

from actions.policy import EscalationPolicy, Trigger, load_policy

TRIGGER_INTENT = "escalation_trigger"


@DefaultV1Recipe.register(
    [DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER], is_trainable=False
)
class EscalationTriggerClassifier(GraphComponent):
    def __init__(self, policy: EscalationPolicy) -> None:
        self.policy = policy

    @classmethod
    def create(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> EscalationTriggerClassifier:
        return cls(load_policy())

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            found = self.policy.trigger(message.get(TEXT) or "")
            if found:
                self._mark(message, found)
        return messages

    @staticmethod
    def _mark(message: Message, found: Trigger) -> None:
        trigger = {"name": TRIGGER_INTENT, "confidence": 1.0}
        ranking = [trigger] + [
            r for r in message.get(INTENT_RANKING_KEY) or [] if r.get("name") != TRIGGER_INTENT
        ]
        message.set(INTENT, trigger, add_to_output=True)
        message.set(INTENT_RANKING_KEY, ranking, add_to_output=True)
        # the phrase is the entity, its rule the value
        entity = {"entity": "trigger_rule", "value": found.rule, "start": found.start,
                  "end": found.end, "extractor": EscalationTriggerClassifier.__name__}
        message.set(ENTITIES, list(message.get(ENTITIES) or []) + [entity], add_to_output=True)
