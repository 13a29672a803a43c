"""The action server: rasa_sdk's own (`rasa run actions`, the same options), listening
on loopback unless ACTION_SERVER_HOST says otherwise, and refusing every request that
does not carry the secret Rasa sends (`action_endpoint.headers` in endpoints.yml).

Whoever can call an action chooses the conversation it acts on (its sender, its slots:
a verified contact), so only Rasa may: `python -m actions.server --actions actions`.
"""
from __future__ import annotations

import hmac
import logging
import os
import sys
from typing import List, Optional

import pluggy
from rasa_sdk.__main__ import main_from_args
from rasa_sdk.endpoint import create_argument_parser
from rasa_sdk.plugin import plugin_manager
from sanic import Sanic, response
from sanic.request import Request
from sanic.response import HTTPResponse

from actions.store.backend import check_config
from actions.store.types import StoreConfigError

log = logging.getLogger("actions.server")

# what answers without the secret: whether the server is up, nothing else
OPEN_PATHS = frozenset({"/health"})

hookimpl = pluggy.HookimplMarker("rasa_sdk")


class SharedSecret:
    """A rasa_sdk plugin: every request but the health check must carry
    `Authorization: Bearer <ACTION_SERVER_TOKEN>`."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the action server's token must not be empty")
        self._token = token.encode()

    @hookimpl
    def attach_sanic_app_extensions(self, app: Sanic) -> None:
        app.register_middleware(self.check, "request")

    async def check(self, request: Request) -> Optional[HTTPResponse]:
        if request.path in OPEN_PATHS:
            return None
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(),
                                                              self._token):
            return None
        log.warning("refused a request to %s without the shared secret", request.path)
        return response.json({"error": "only Rasa may call the action server"}, status=401)


def main(argv: Optional[List[str]] = None) -> None:
    token = os.environ.get("ACTION_SERVER_TOKEN", "")
    if not token:
        sys.exit("error: ACTION_SERVER_TOKEN is not set: the action server takes requests "
                 "only from Rasa, which sends this secret (endpoints.yml)")
    try:
        check_config(os.environ)
    except StoreConfigError as error:
        sys.exit(f"error: {error}")
    # rasa_sdk binds to SANIC_HOST (0.0.0.0 by default): here loopback, unless the
    # deployment puts the action server on an internal network (docker-compose.yml)
    os.environ["SANIC_HOST"] = os.environ.get("ACTION_SERVER_HOST", "127.0.0.1")
    plugin_manager().register(SharedSecret(token))
    main_from_args(create_argument_parser().parse_args(argv))


if __name__ == "__main__":
    main()
