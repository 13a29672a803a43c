"""HTTP helpers every JSON API of the gateway uses: errors as JSON, bearer tokens, JSON
object bodies."""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

from aiohttp import web


def error_response(status: type[web.HTTPException], message: str) -> web.HTTPException:
    return status(text=json.dumps({"error": message}), content_type="application/json")


def bearer_token(request: web.Request) -> Optional[str]:
    """The token of an `Authorization: Bearer <token>` header, if there is one."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme == "Bearer" else None


async def json_object(request: web.Request) -> Dict[str, Any]:
    """The request's JSON object body, or a 400 saying what is wrong with it."""
    try:
        body = await request.json()
    except (ValueError, LookupError) as error:  # LookupError: an unknown charset
        raise error_response(web.HTTPBadRequest, "body must be JSON") from error
    if not isinstance(body, dict):
        raise error_response(web.HTTPBadRequest, "body must be a JSON object")
    return body
