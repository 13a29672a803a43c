"""Run Rasa custom actions directly, as the action server would, against the real
store (SQLite and PostgreSQL through the `store` fixture)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
import yaml
from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher

from actions.conversation import shared_store
from actions.store.sql import Store

DOMAIN = yaml.safe_load((Path(__file__).resolve().parents[2] / "domain.yml").read_text())


@dataclass
class Outcome:
    messages: List[Dict[str, Any]]
    events: List[Dict[str, Any]]

    @property
    def customer_messages(self) -> List[Dict[str, Any]]:
        """What the customer sees: the gateway takes the custom (handoff) messages out."""
        return [m for m in self.messages if not m.get("custom")]

    @property
    def responses(self) -> List[str]:
        return [m.get("response") or m.get("text") or "" for m in self.customer_messages]

    @property
    def texts(self) -> List[str]:
        """The customer's messages as Rasa renders them from domain.yml."""
        return [m["text"] or DOMAIN["responses"][m["response"]][0]["text"].format_map(m)
                for m in self.customer_messages]

    @property
    def handoff(self) -> Optional[Dict[str, Any]]:
        """The payload of the handoff message for the gateway, if the action sent one."""
        return next((m["custom"]["handoff"] for m in self.messages
                     if "handoff" in (m.get("custom") or {})), None)

    def slot(self, name: str) -> Any:
        values = [e["value"] for e in self.events if e.get("event") == "slot" and e["name"] == name]
        return values[-1] if values else None

    def facts(self, response: str) -> Dict[str, Any]:
        return next(m for m in self.messages if m.get("response") == response)


@pytest.fixture
def actions_store(store: Store, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """The seeded store, also the one the actions open (through DATABASE_URL)."""
    monkeypatch.setenv("DATABASE_URL", store_url)
    shared_store.cache_clear()
    yield store
    shared_store().close()
    shared_store.cache_clear()


def make_tracker(slots: Optional[Dict[str, Any]] = None, intent: str = "order_status",
                 text: str = "", entities: Optional[List[Dict[str, Any]]] = None,
                 events: Optional[List[Dict[str, Any]]] = None,
                 metadata: Optional[Dict[str, Any]] = None,
                 sender: str = "customer-1") -> Tracker:
    values = {name: None for name in DOMAIN["slots"]}
    values.update({"verification_failures": 0.0, **(slots or {})})
    latest = {"intent": {"name": intent, "confidence": 0.9}, "entities": entities or [],
              "text": text, "metadata": metadata or {}}
    return Tracker(sender_id=sender, slots=values, latest_message=latest,
                   events=events or [{"event": "user", "text": text, "parse_data": latest}],
                   paused=False, followup_action=None, active_loop={"name": "order_form"},
                   latest_action_name="action_listen")


async def run_action(action: Action, tracker: Tracker) -> Outcome:
    dispatcher = CollectingDispatcher()
    events = await action.run(dispatcher, tracker, DOMAIN)
    return Outcome(dispatcher.messages, list(events))
