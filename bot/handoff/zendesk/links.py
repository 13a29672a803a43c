"""Which Sunshine Conversations conversation shows which handoff, which handoffs it has
not taken yet, the customer's messages it has not taken yet, and which agents'
messages and switchboard events were already handled (SunCo retries its webhooks):
bot/handoff/helpdesk_links.py on tables of Zendesk's own, keyed by SunCo's string ids."""
from __future__ import annotations

from sqlalchemy.engine import Engine

from bot.handoff.helpdesk_links import HelpdeskLinks, LinkTables

TABLES = LinkTables("zendesk", "sunco_conversation_id", str)
metadata = TABLES.metadata
links = TABLES.links
pending = TABLES.pending
delivered = TABLES.delivered


class ZendeskLinks(HelpdeskLinks[str]):
    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, TABLES)
