"""Which Chatwoot conversation shows which handoff, which handoffs Chatwoot has not
taken yet (to offer again), and which agents' messages were already delivered (a
webhook retried is not sent twice): bot/handoff/helpdesk_links.py on tables of
Chatwoot's own."""
from __future__ import annotations

from sqlalchemy.engine import Engine

from bot.handoff.helpdesk_links import HelpdeskLinks, LinkTables

TABLES = LinkTables("chatwoot", "chatwoot_conversation_id", int)
metadata = TABLES.metadata
links = TABLES.links
pending = TABLES.pending
delivered = TABLES.delivered


class ChatwootLinks(HelpdeskLinks[int]):
    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, TABLES)
