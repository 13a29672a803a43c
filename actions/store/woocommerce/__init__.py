"""A WooCommerce shop behind the store interfaces (STORE_BACKEND=woocommerce): the REST
API v3 (client.py) and the systems that read and change orders with it (systems.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import FrozenSet, Optional

from actions.store.cache import OrderCache
from actions.store.sql import SqlCodes, SqlContactLog, SqlWriteLog, Store
from actions.store.types import PlatformPolicy
from actions.store.woocommerce.client import WooClient, WooConfig
from actions.store.woocommerce.systems import WooDelivery, WooOrders, WooReturns


@dataclass(frozen=True)
class WooStore:
    """StoreSystems: orders, delivery and refunds from WooCommerce; the bot's own
    records (write log, holds, codes, contact log) in the bot's SQL database."""

    client: WooClient
    orders: WooOrders
    delivery: WooDelivery
    returns: WooReturns
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
        # WooCommerce has no returns and no carrier claims; replacements and store
        # credit are the shop's to make
        return frozenset({"return", "claim", "replacement", "store_credit"})

    def begin_turn(self) -> None:
        self.orders.begin_turn()

    def end_turn(self) -> None:
        self.orders.reads.end_turn()

    def read_fresh(self) -> None:
        self.orders.reads.read_fresh()

    def close(self) -> None:
        self.orders.reads.close()
        self.client.close()
        self.bot_records.close()


def open_woocommerce(config: WooConfig, bot_records: Store, platform: PlatformPolicy,
                     cache: Optional[OrderCache] = None) -> WooStore:
    """The shop the WOOCOMMERCE_* variables name (WooConfig.from_env). Refunds move money
    through the order's payment gateway only if `refund_through_gateway` (the policy's
    refunds.through_payment_gateway); orders kept across turns in `cache`
    (actions/store/cache.py) if given."""
    client = WooClient(config)
    orders = WooOrders(client, platform, cache)
    return WooStore(client=client, orders=orders, delivery=WooDelivery(orders),
                    returns=WooReturns(client, orders), bot_records=bot_records)
