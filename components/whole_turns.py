"""A Rasa turn is kept whole or not at all.

Rasa 3.6 goes on through two failures that a support bot must not hide:
- the Agent wraps every tracker store in a FailSafeTrackerStore, which carries on with
  an empty in-memory conversation when the database cannot be read, and keeps the turn
  in memory only when the database cannot be written;
- a custom action that fails (the action server or its store is down) is logged, and
  the turn goes on without it and is saved.
The customer was then answered from a conversation that was not theirs, or not at all,
and the conversation lost the turn or kept half of it (found by the run-prod test that
cuts PostgreSQL off).

`install()` makes both fail the turn: the tracker store raises what its database
raised, and a custom action that fails marks the turn, after which no custom action
runs in it and it is not saved. The strict REST channel (rest_channel.py) answers such
a turn 503, and the gateway asks again (bot/messaging/rasa_client.py) with the
conversation as it was.
A form rejecting a value (ActionExecutionRejection) is dialogue, not a failure."""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Any, Iterator, List, Optional

from rasa.core.actions.action import ActionExecutionRejection, RemoteAction
from rasa.core.tracker_store import FailSafeTrackerStore
from rasa.shared.core.events import Event
from rasa.shared.core.trackers import DialogueStateTracker


class TurnFailed(Exception):
    """A custom action of this turn failed: the turn is not kept."""


# the custom action that failed in the current turn ("" while none has); each request
# runs in a task of its own, so each turn sees only its own
_failed_action: ContextVar[str] = ContextVar("failed_action", default="")


@contextlib.contextmanager
def one_turn() -> Iterator[None]:
    token = _failed_action.set("")
    try:
        yield
    finally:
        _failed_action.reset(token)


def check_turn() -> None:
    failed = _failed_action.get()
    if failed:
        raise TurnFailed(f"custom action {failed} failed")


async def _retrieve(self: FailSafeTrackerStore, sender_id: str
                    ) -> Optional[DialogueStateTracker]:
    return await self._tracker_store.retrieve(sender_id)


async def _retrieve_full_tracker(self: FailSafeTrackerStore, sender_id: str
                                 ) -> Optional[DialogueStateTracker]:
    return await self._tracker_store.retrieve_full_tracker(sender_id)


async def _save(self: FailSafeTrackerStore, tracker: DialogueStateTracker) -> None:
    check_turn()
    await self._tracker_store.save(tracker)


_run_remote_action = RemoteAction.run


async def _run_or_fail_turn(self: RemoteAction, *args: Any) -> List[Event]:
    check_turn()
    try:
        return await _run_remote_action(self, *args)
    except ActionExecutionRejection:
        raise
    except Exception:
        _failed_action.set(self.name())
        raise


def install() -> None:
    FailSafeTrackerStore.retrieve = _retrieve
    FailSafeTrackerStore.retrieve_full_tracker = _retrieve_full_tracker
    FailSafeTrackerStore.save = _save
    RemoteAction.run = _run_or_fail_turn
