"""A Shopify shop behind the store interfaces (STORE_BACKEND=shopify): the Admin
GraphQL API (client.py), the documents sent (documents.py), and the systems that read
and change orders with them (systems.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import FrozenSet, Optional

from actions.store.cache import OrderCache
from actions.store.shopify.client import ShopifyClient, ShopifyConfig
from actions.store.shopify.systems import ShopifyDelivery, ShopifyOrders, ShopifyReturns
from actions.store.sql import SqlCodes, SqlContactLog, SqlWriteLog, Store
from actions.store.types import PlatformPolicy


@dataclass(frozen=True)
class ShopifyStore:
    """StoreSystems: orders, delivery and returns from Shopify; the bot's own records
    (write log, holds, codes, contact log) in the bot's SQL database."""

    client: ShopifyClient
    orders: ShopifyOrders
    delivery: ShopifyDelivery
    returns: ShopifyReturns
    bot_records: Store = field(repr=False)

    @property
    def contacts(self) -> SqlContactLog:
        return self.bot_records.contacts

    @property
    def writes(self) -> SqlWriteLog:
        return self.bot_records.writes

    @property
    def codes(self) -> SqlCodes:
        return self.bot_records.codes

    @property
    def left_to_people(self) -> FrozenSet[str]:
        # Shopify has no carrier claims, and replacements and store credit are the
        # merchant's to make (draft orders, gift cards)
        return frozenset({"claim", "replacement", "store_credit"})

    def begin_turn(self) -> None:
        self.orders.begin_turn()

    def end_turn(self) -> None:
        self.orders.end_turn()

    def read_fresh(self) -> None:
        self.orders.reads.read_fresh()

    def close(self) -> None:
        self.orders.reads.close()
        self.client.close()
        self.bot_records.close()


def open_shopify(config: ShopifyConfig, bot_records: Store, platform: PlatformPolicy,
                 cache: Optional[OrderCache] = None) -> ShopifyStore:
    """The shop the SHOPIFY_* variables name (ShopifyConfig.from_env); orders kept
    across turns in `cache` (actions/store/cache.py) if given."""
    client = ShopifyClient(config)
    orders = ShopifyOrders(client, platform, cache=cache)
    return ShopifyStore(client=client, orders=orders,
                        delivery=ShopifyDelivery(orders, lambda: datetime.now(timezone.utc)),
                        returns=ShopifyReturns(client, orders), bot_records=bot_records)
