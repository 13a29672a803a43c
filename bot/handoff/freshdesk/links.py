"""Which Freshdesk ticket shows which handoff, which handoffs Freshdesk has not taken
yet, the customer's messages it has not taken yet, and which agents' replies were
already delivered: bot/handoff/helpdesk_links.py on tables of Freshdesk's own."""
from __future__ import annotations

from sqlalchemy.engine import Engine

from bot.handoff.helpdesk_links import HelpdeskLinks, LinkTables

TABLES = LinkTables("freshdesk", "freshdesk_ticket_id", int)
metadata = TABLES.metadata
links = TABLES.links
pending = TABLES.pending
delivered = TABLES.delivered


class FreshdeskLinks(HelpdeskLinks[int]):
    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, TABLES)
