"""Rasa's REST channel, answering 503 for a turn that failed instead of 200 with
whatever replies it collected before the failure.

The gateway asks Rasa through this channel (bot/messaging/rasa_client.py);
credentials.yml puts it at Rasa's usual `/webhooks/rest/webhook`, with the same
request and answer. A turn fails whole (whole_turns.py): its conversation could not
be read or saved, a custom action failed, or no model is loaded. Its replies are
dropped and the conversation is as it was, so the gateway asks again.

Errors are logged by type only: Rasa's and the database's messages quote the events,
which hold the customer's words. No streaming."""
from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Optional

from rasa.core.agent import Agent
from rasa.core.channels.channel import CollectingOutputChannel, UserMessage
from rasa.core.channels.rest import RestInput
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from actions.policy import current_policy
from components.several_requests import first_request, told_later
from components.whole_turns import one_turn

log = logging.getLogger(__name__)


def _unavailable(reason: str) -> HTTPResponse:
    return response.json({"error": reason}, status=503, headers={"Retry-After": "1"})


class StrictRestInput(RestInput):
    @classmethod
    def name(cls) -> str:
        return "rest"

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        webhook = Blueprint("strict_rest_webhook", __name__)

        @webhook.route("/", methods=["GET"])
        async def health(request: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @webhook.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            agent: Optional[Agent] = getattr(request.app.ctx, "agent", None)
            if agent is None or not agent.is_ready():
                # Rasa's agent ignores a message it has no model for
                return _unavailable("no model loaded")
            collector = CollectingOutputChannel()
            text = self._extract_message(request)
            message = UserMessage(text, collector, await self._extract_sender(request),
                                  input_channel=self._extract_input_channel(request),
                                  metadata=self.get_metadata(request))
            try:
                with one_turn():
                    # one request at a time (several_requests.py); a parse is repeatable
                    message.parse_data = await first_request(text, agent.parse_message,
                                                             current_policy())
                    await on_new_message(message)
            except Exception as error:  # the turn failed, whatever failed in it
                log.error("a turn failed and is answered 503: %s", type(error).__name__)
                return _unavailable("the turn failed")
            responses = agent.domain.responses if agent.domain else {}
            return response.json(told_later(message.parse_data, collector.messages,
                                            responses, message.sender_id))

        return webhook
