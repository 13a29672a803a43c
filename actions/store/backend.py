"""Which order platform the actions talk to, chosen by STORE_BACKEND:

- `sql` (the default): the demo store in the bot's SQL database (actions/store/sql.py);
- `shopify`: a Shopify store through its Admin GraphQL API (actions/store/shopify/);
- `woocommerce`: a WooCommerce shop through its REST API v3 (actions/store/woocommerce/).

Whatever the platform, TRACKING_BACKEND (actions/store/tracking/) may tell its shipments
as a carrier-tracking service (EasyPost, AfterShip) sees them.

Whatever the platform, the bot's own records (the write log, holds, one-time codes,
the contact log) stay in the bot's SQL database (DATABASE_URL, else var/store.db).
"""
from __future__ import annotations

import os
from typing import Mapping, Optional

from actions.store.cache import open_order_cache
from actions.store.shopify import ShopifyConfig, open_shopify
from actions.store.sql import Store, open_store
from actions.store.tracking import check_tracking_config, with_tracking
from actions.store.types import StoreConfigError, StoreSystems
from actions.store.woocommerce import WooConfig, open_woocommerce

BACKENDS = ("sql", "shopify", "woocommerce")


def backend_name(env: Mapping[str, str]) -> str:
    name = (env.get("STORE_BACKEND") or "sql").strip().lower()
    if name not in BACKENDS:
        raise StoreConfigError(f"STORE_BACKEND={name!r} is not a store backend; "
                               f"expected one of: {', '.join(BACKENDS)}")
    return name


def check_config(env: Mapping[str, str]) -> None:
    """Raise StoreConfigError, naming the variable, if the backend cannot start."""
    name = backend_name(env)
    if name == "shopify":
        ShopifyConfig.from_env(env)
    elif name == "woocommerce":
        WooConfig.from_env(env)
    check_tracking_config(env)


def open_systems(env: Optional[Mapping[str, str]] = None, order_letter: str = "A",
                 refund_through_gateway: bool = True,
                 order_cache_seconds: int = 0) -> StoreSystems:
    """The store systems STORE_BACKEND names; `order_letter` is the letter the bot puts
    before a platform's bare order numbers (policy: identity.order_number_letter);
    `refund_through_gateway` whether a refund on a platform that asks moves the money
    through the payment gateway (policy: refunds.through_payment_gateway);
    `order_cache_seconds` how long a platform's order is kept across turns (policy:
    order_cache.ttl_seconds; actions/store/cache.py)."""
    env = os.environ if env is None else env
    check_config(env)  # before a database is opened
    return systems_on(open_store(env.get("DATABASE_URL") or None), env, order_letter,
                      refund_through_gateway, order_cache_seconds)


def systems_on(bot_records: Store, env: Mapping[str, str], order_letter: str,
               refund_through_gateway: bool = True,
               order_cache_seconds: int = 0) -> StoreSystems:
    """The store systems STORE_BACKEND names, keeping the bot's records in `bot_records`
    (the gateway has them open already), told by TRACKING_BACKEND's service if any. A
    platform's orders are kept across turns for `order_cache_seconds` (0: not kept, as
    in the gateway, which reads outside turns), in Redis when REDIS_URL is set."""
    name = backend_name(env)
    check_tracking_config(env)
    systems: StoreSystems = bot_records
    if name == "shopify":
        systems = open_shopify(ShopifyConfig.from_env(env), bot_records, order_letter,
                               open_order_cache(env, order_cache_seconds))
    elif name == "woocommerce":
        systems = open_woocommerce(WooConfig.from_env(env), bot_records, order_letter,
                                   refund_through_gateway,
                                   open_order_cache(env, order_cache_seconds))
    return with_tracking(systems, env)
