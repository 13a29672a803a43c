"""The agent API under /api/ (bearer tokens: one per agent, and the admin token
AGENT_API_TOKEN), its live WebSocket of handoff events, and the console page at /agent.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import re
import weakref
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, Optional

from aiohttp import WSCloseCode, web
from aiohttp.typedefs import Handler as WebHandler
from sqlalchemy.exc import SQLAlchemyError

from bot.handoff.desk import Forbidden, HandoffDesk, HandoffNotFound, Invalid, may_see
from bot.handoff.events import Event, EventType
from bot.handoff.peak import PeakConfigured, PeakMode
from bot.handoff.store import Agent, HandoffConflict, hash_token
from bot.web import bearer_token, error_response, json_object
from common.privacy import loggable_error
from common.timefmt import iso
from connectors.outbound import PermanentError, TransientError

log = logging.getLogger("bot.handoff.console")
# attachments the console shows as pictures; every other type is downloaded as bytes
SHOWN_IMAGE_TYPES = frozenset(["image/jpeg", "image/png", "image/gif", "image/webp"])

DESK = web.AppKey("desk", HandoffDesk)
ADMIN_TOKEN = web.AppKey("admin_token", str)
# each open console's socket and the token it signed in with, re-checked every
# RECHECK_SECONDS
SOCKETS: web.AppKey[weakref.WeakKeyDictionary[web.WebSocketResponse, str]] = \
    web.AppKey("sockets")
CONSOLE_DIR = Path(__file__).parent / "console_page"
STATUSES = ("waiting", "active", "resolved")
MAX_TEXT = 4096
HANDOFF_ID = re.compile(r"[1-9][0-9]{0,17}")  # below 2**63
# WebSocket close code for a bad token (4000-4999 are the application's own).
UNAUTHORIZED_CLOSE = 4401
FIRST_FRAME_SECONDS = 10
# How soon an open console closes once its token stops working: the agent was removed
# or given a new token (by `bot agents`, in another process) or the token expired.
RECHECK_SECONDS = 2.0
INVALID_TOKEN = "a valid bearer token is required"
REVOKED_TOKEN = "this token no longer works (agent removed or given a new token)"
EXPIRED_TOKEN = ("this token has expired; ask the admin for a new one "
                 "(bot agents add NAME issues it)")

Handler = Callable[[web.Request, Agent], Awaitable[Any]]


class Unauthorized(Exception):
    """No valid token, or an expired one: the message says which."""


def _is_admin_token(app: web.Application, token: str) -> bool:
    admin = app[ADMIN_TOKEN]
    return bool(admin) and hmac.compare_digest(token.encode(), admin.encode())


def _valid(desk: HandoffDesk, agent: Optional[Agent], missing: str) -> Agent:
    """The token's agent (None: no such token, Unauthorized with `missing`), unless the
    token is past the policy's `agent_token_days`."""
    if agent is None:
        raise Unauthorized(missing)
    if desk.policy.token_expired(agent, desk.clock()):
        raise Unauthorized(EXPIRED_TOKEN)
    return agent


async def agent_for(app: web.Application, token: str) -> Agent:
    """The token's agent, or the admin for the admin token; Unauthorized otherwise."""
    desk = app[DESK]
    if _is_admin_token(app, token):
        return desk.admin
    agent = await desk.records.read(desk.store.agent_for_token, token) if token else None
    return _valid(desk, agent, INVALID_TOKEN)


def authenticated(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Run the handler with the token's agent; 401 without a valid token; the desk's
    refusals as 403/404/409/400; the result as JSON."""
    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        agent = await bearer_agent(request)
        try:
            return web.json_response(await handler(request, agent))
        except HandoffNotFound as error:
            raise error_response(web.HTTPNotFound, str(error)) from error
        except Forbidden as error:
            raise error_response(web.HTTPForbidden, str(error)) from error
        except HandoffConflict as error:
            raise error_response(web.HTTPConflict, str(error)) from error
        except Invalid as error:
            raise error_response(web.HTTPBadRequest, str(error)) from error
    return wrapper


async def bearer_agent(request: web.Request) -> Agent:
    try:
        return await agent_for(request.app, bearer_token(request) or "")
    except Unauthorized as error:
        raise error_response(web.HTTPUnauthorized, str(error)) from error


def _text(body: Dict[str, Any], key: str, required: bool = True) -> str:
    value = body.get(key, None if required else "")
    if not isinstance(value, str) or len(value) > MAX_TEXT or (required and not value.strip()):
        kind = "a non-empty string" if required else "a string"
        raise error_response(web.HTTPBadRequest,
                             f"'{key}' must be {kind} of at most {MAX_TEXT} characters")
    return value.strip()


def _handoff_id(request: web.Request) -> int:
    """Digits only, and few enough for a 64-bit column: int() takes ' 1', '1_0' and any
    size, and a database refuses a number past its integer type."""
    raw = request.match_info["handoff_id"]
    if not HANDOFF_ID.fullmatch(raw):
        raise error_response(web.HTTPNotFound, "no such handoff")
    return int(raw)


@authenticated
async def me(request: web.Request, agent: Agent) -> Dict[str, Any]:
    return {"agent": agent.name, "admin": agent.admin, "teams": list(agent.teams),
            "capacity": agent.capacity}


@authenticated
async def console_config(request: web.Request, agent: Agent) -> Dict[str, Any]:
    desk = request.app[DESK]
    peak = await _peak(request).state()
    return {"queues": [{"name": n, "label": label} for n, label in desk.teams.items()],
            "dispositions": list(desk.policy.dispositions), "peak": peak.on,
            "peak_banner": peak.banner}


def _peak(request: web.Request) -> PeakMode:
    peak = request.app[DESK].peak
    if peak is None:
        raise error_response(web.HTTPNotFound, "peak mode is not configured")
    return peak


@authenticated
async def peak_state(request: web.Request, agent: Agent) -> Dict[str, Any]:
    return (await _peak(request).state()).as_json()


@authenticated
async def switch_peak(request: web.Request, agent: Agent) -> Dict[str, Any]:
    """Admin only: {"on": true|false, "note": "..."}; every console hears of it."""
    if not agent.admin:
        raise Forbidden("only the admin switches peak mode")
    body = await json_object(request)
    if not isinstance(body.get("on"), bool):
        raise error_response(web.HTTPBadRequest, "'on' must be true or false")
    try:
        state = await _peak(request).switch(body["on"], agent.name,
                                            _text(body, "note", required=False))
    except PeakConfigured as error:
        raise HandoffConflict(str(error)) from error
    await request.app[DESK].bus.publish({"type": EventType.PEAK_CHANGED, "peak": state.as_json()})
    return state.as_json()


@authenticated
async def queues(request: web.Request, agent: Agent) -> Any:
    return await request.app[DESK].queues()


@authenticated
async def list_handoffs(request: web.Request, agent: Agent) -> Any:
    status = request.query.get("status") or None
    if status is not None and status not in STATUSES:
        raise error_response(web.HTTPBadRequest, f"status must be one of {', '.join(STATUSES)}")
    return await request.app[DESK].list(agent, status, request.query.get("queue") or None)


@authenticated
async def get_handoff(request: web.Request, agent: Agent) -> Any:
    return await request.app[DESK].get(_handoff_id(request), agent)


@authenticated
async def claim(request: web.Request, agent: Agent) -> Any:
    desk = request.app[DESK]
    name = _text(await json_object(request), "agent")
    for_agent = agent if name == agent.name else await _named_agent(desk, name)
    return await desk.claim(_handoff_id(request), agent, for_agent)


@authenticated
async def claim_next(request: web.Request, agent: Agent) -> Any:
    """Take the next waiting handoff of my queues, as they are offered."""
    return await request.app[DESK].claim_next(agent)


async def _named_agent(desk: HandoffDesk, name: str) -> Agent:
    known = {a.name: a for a in await desk.records.read(desk.store.agents)}
    if name not in known:
        raise error_response(web.HTTPBadRequest, f"no agent {name!r}")
    return known[name]


@authenticated
async def reply(request: web.Request, agent: Agent) -> Any:
    text = _text(await json_object(request), "text")
    deliveries, record = await request.app[DESK].reply(_handoff_id(request), agent, text)
    return {"deliveries": [{"status": d.status, "error": d.error, "template": d.template}
                           for d in deliveries],
            "handoff": record}


@authenticated
async def note(request: web.Request, agent: Agent) -> Any:
    text = _text(await json_object(request), "text")
    return await request.app[DESK].note(_handoff_id(request), agent, text)


@authenticated
async def transfer(request: web.Request, agent: Agent) -> Any:
    queue = _text(await json_object(request), "queue")
    return await request.app[DESK].transfer(_handoff_id(request), agent, queue)


@authenticated
async def resolve(request: web.Request, agent: Agent) -> Any:
    body = await json_object(request)
    return await request.app[DESK].resolve(_handoff_id(request), agent,
                                           _text(body, "disposition"),
                                           _text(body, "note", required=False))


@authenticated
async def audit_log(request: web.Request, agent: Agent) -> Any:
    """Every agent action, oldest first (admin only): who, what, when, on which handoff."""
    if not agent.admin:
        raise Forbidden("the audit log is for the admin token")
    desk = request.app[DESK]
    return [{**entry, "at": iso(entry["at"])}
            for entry in await desk.records.read(desk.store.audit_trail)]


async def attachment(request: web.Request) -> web.Response:
    """A customer's attachment, fetched from the provider (media sits behind the
    channel's credentials); `?url=` is the attachment's url in the transcript."""
    agent = await bearer_agent(request)
    url = request.query.get("url", "")
    try:
        found, data = await request.app[DESK].attachment(_handoff_id(request), agent, url)
    except HandoffNotFound as error:
        raise error_response(web.HTTPNotFound, str(error)) from error
    except Forbidden as error:
        raise error_response(web.HTTPForbidden, str(error)) from error
    except (TransientError, PermanentError) as error:
        log.warning("attachment not fetched: %s", loggable_error(error))
        raise error_response(web.HTTPBadGateway,
                             "the channel did not give the file; try again") from error
    # The customer chose the type: only raster images are shown; anything else (an HTML
    # page, an SVG with script) is a download of bytes, and runs nowhere even if opened.
    shown = found.mime_type in SHOWN_IMAGE_TYPES
    return web.Response(body=data,
                        content_type=found.mime_type if shown else "application/octet-stream",
                        headers={"Content-Disposition": "inline" if shown else "attachment",
                                 "Content-Security-Policy": "sandbox",
                                 "X-Content-Type-Options": "nosniff",
                                 "Cache-Control": "private, max-age=300"})


async def events(request: web.Request) -> web.WebSocketResponse:
    """Handoff events, live. The token comes in the first frame, not the URL, so it
    never lands in access logs."""
    socket = web.WebSocketResponse(heartbeat=30)
    await socket.prepare(request)
    token = await _first_frame_token(socket)
    try:
        agent = await agent_for(request.app, token)
    except Unauthorized as error:
        await socket.close(code=UNAUTHORIZED_CLOSE, message=str(error).encode())
        return socket
    await socket.send_json({"type": EventType.READY, "agent": agent.name})
    request.app[SOCKETS][socket] = token
    async with request.app[DESK].bus.subscribe() as queue:
        await _forward(queue, socket, agent)
    return socket


def shown_to(agent: Agent, event: Event) -> bool:
    """Whether a live event goes to this agent's console: a handoff's only if they may
    see it (the rule of the HTTP API); the rest (peak mode, alerts) to everyone."""
    handoff = event.get("handoff")
    return not isinstance(handoff, dict) or may_see(agent, handoff["queue"])


async def _forward(queue: asyncio.Queue[Event], socket: web.WebSocketResponse,
                   agent: Agent) -> None:
    """Send the agent's events until the browser leaves (its next frame, or the close,
    ends it)."""
    leaving = asyncio.ensure_future(socket.receive())
    event: Optional[asyncio.Future[Event]] = None
    try:
        while not socket.closed:
            event = asyncio.ensure_future(queue.get())
            await asyncio.wait({event, leaving}, return_when=asyncio.FIRST_COMPLETED)
            if not event.done():
                break
            if not shown_to(agent, event.result()):
                continue
            try:
                await socket.send_json(event.result())
            except ConnectionResetError:  # the browser left while the event was on its way
                break
    finally:
        for task in (leaving, event):
            if task is not None:
                task.cancel()
        await socket.close(code=WSCloseCode.GOING_AWAY)


async def _close_sockets(app: web.Application) -> None:
    sockets = app[SOCKETS]
    for socket in list(sockets):
        await socket.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


async def _watching_sockets(app: web.Application) -> AsyncIterator[None]:
    watch = asyncio.create_task(_recheck_sockets(app))
    yield
    watch.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watch


async def _recheck_sockets(app: web.Application) -> None:
    """Close the consoles whose token stopped working. The agents are re-read from SQL,
    in one read for all sockets, because `bot agents remove` runs in another process
    and the embedded default has no channel to announce it."""
    desk = app[DESK]
    while True:
        await asyncio.sleep(RECHECK_SECONDS)
        open_sockets = list(app[SOCKETS].items())
        if not open_sockets:
            continue
        try:
            agents = await desk.records.read(desk.store.agents_by_token_hash)
        except SQLAlchemyError as error:  # next time; the sockets stay as they are
            log.warning("agents not re-checked (%s)", type(error).__name__)
            continue
        # together, each close waits for its browser's answer; one browser's trouble
        # must not stop the watch
        await asyncio.gather(*(socket.close(code=UNAUTHORIZED_CLOSE, message=reason.encode())
                               for socket, token in open_sockets
                               if (reason := _refusal(app, token, agents))),
                             return_exceptions=True)


def _refusal(app: web.Application, token: str, agents: Dict[str, Agent]) -> str:
    """Why a console's token no longer works ("" while it does), given every agent by
    their token's hash."""
    if _is_admin_token(app, token):
        return ""
    try:
        _valid(app[DESK], agents.get(hash_token(token)), REVOKED_TOKEN)
    except Unauthorized as error:
        return str(error)
    return ""


async def _first_frame_token(socket: web.WebSocketResponse) -> str:
    """The token of the console's first frame; "" when there is none."""
    try:
        frame = await socket.receive_json(timeout=FIRST_FRAME_SECONDS)
    except (ValueError, TypeError, asyncio.TimeoutError):
        return ""
    token = frame.get("token") if isinstance(frame, dict) else None
    return token if isinstance(token, str) else ""


async def console_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(CONSOLE_DIR / "index.html")


# The agents' pages (console, dashboard): their own scripts and styles only, no framing
# (clickjacking), no sniffing, no referrer leaving with a handoff's URL.
STAFF_PAGES = ("/agent", "/dashboard")
STAFF_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' blob: data:; connect-src 'self' blob:; "
                               "object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@web.middleware
async def staff_page_headers(request: web.Request,
                             handler: WebHandler) -> web.StreamResponse:
    response = await handler(request)
    if request.path.startswith(STAFF_PAGES):
        response.headers.update(STAFF_PAGE_HEADERS)
    return response


def install_agent_console(app: web.Application, desk: HandoffDesk, admin_token: str) -> None:
    app[DESK], app[ADMIN_TOKEN] = desk, admin_token
    app[SOCKETS] = weakref.WeakKeyDictionary()
    app.middlewares.append(staff_page_headers)
    app.cleanup_ctx.append(_watching_sockets)
    # aiosignal's generics disagree with aiohttp 3.9's annotation of on_shutdown
    app.on_shutdown.append(_close_sockets)  # type: ignore[arg-type, unused-ignore]
    add = app.router
    add.add_get("/api/me", me)
    add.add_get("/api/config", console_config)
    add.add_get("/api/peak", peak_state)
    add.add_post("/api/peak", switch_peak)
    add.add_get("/api/queues", queues)
    add.add_get("/api/handoffs", list_handoffs)
    add.add_get("/api/handoffs/{handoff_id}", get_handoff)
    add.add_post("/api/queues/next", claim_next)
    for action, handler in (("claim", claim), ("messages", reply), ("notes", note),
                            ("transfer", transfer), ("resolve", resolve)):
        add.add_post(f"/api/handoffs/{{handoff_id}}/{action}", handler)
    add.add_get("/api/handoffs/{handoff_id}/attachment", attachment)
    add.add_get("/api/audit", audit_log)
    add.add_get("/api/events", events)
    add.add_get("/agent", console_page)
    add.add_static("/agent/", CONSOLE_DIR)
