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

from actions.policy import EscalationPolicy
from actions.store.cache import open_order_cache
from actions.store.shopify import ShopifyConfig, open_shopify
from actions.store.sql import Store, open_store
from actions.store.tracking import check_tracking_config, with_tracking
from actions.store.types import PlatformPolicy, StoreConfigError, StoreSystems
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


# the terms of a platform read without a policy (tests, tools): the policy's defaults
DEFAULT_PLATFORM = PlatformPolicy()


def platform_policy(policy: EscalationPolicy, keep_orders: bool = True) -> PlatformPolicy:
    """The policy's terms for a platform's orders; `keep_orders` false where reads happen
    outside turns (the gateway), which the order cache does not serve."""
    return PlatformPolicy(order_letter=policy.identity.order_number_letter,
                          refund_through_gateway=policy.refunds.through_payment_gateway,
                          cache_seconds=policy.order_cache.ttl_seconds if keep_orders else 0,
                          delivery_days=policy.windows.delivery_days)


def open_systems(env: Optional[Mapping[str, str]] = None,
                 platform: PlatformPolicy = DEFAULT_PLATFORM) -> StoreSystems:
    """The store systems STORE_BACKEND names, on the policy's `platform` terms."""
    env = os.environ if env is None else env
    check_config(env)  # before a database is opened
    return systems_on(open_store(env.get("DATABASE_URL") or None), env, platform)


def systems_on(bot_records: Store, env: Mapping[str, str],
               platform: PlatformPolicy = DEFAULT_PLATFORM) -> StoreSystems:
    """The store systems STORE_BACKEND names, keeping the bot's records in `bot_records`
    (the gateway has them open already), told by TRACKING_BACKEND's service if any. A
    platform's orders are kept across turns for `platform.cache_seconds`, in Redis when
    REDIS_URL is set."""
    name = backend_name(env)
    check_tracking_config(env)
    systems: StoreSystems = bot_records
    if name == "shopify":
        systems = open_shopify(ShopifyConfig.from_env(env), bot_records, platform,
                               open_order_cache(env, platform.cache_seconds))
    elif name == "woocommerce":
        systems = open_woocommerce(WooConfig.from_env(env), bot_records, platform,
                                   open_order_cache(env, platform.cache_seconds))
    return with_tracking(systems, env)
