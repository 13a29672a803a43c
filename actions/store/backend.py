"""Which order platform the actions talk to, chosen by STORE_BACKEND:

- `sql` (the default): the demo store in the bot's SQL database (actions/store/sql.py);
- `shopify`: a Shopify store through its Admin GraphQL API (actions/store/shopify/).

Whatever the platform, the bot's own records (the write log, holds, one-time codes,
the contact log) stay in the bot's SQL database (DATABASE_URL, else var/store.db).
"""
from __future__ import annotations

import os
from typing import Mapping, Optional

from actions.store.shopify import ShopifyConfig, open_shopify
from actions.store.sql import Store, open_store
from actions.store.types import StoreConfigError, StoreSystems

BACKENDS = ("sql", "shopify")


def backend_name(env: Mapping[str, str]) -> str:
    name = (env.get("STORE_BACKEND") or "sql").strip().lower()
    if name not in BACKENDS:
        raise StoreConfigError(f"STORE_BACKEND={name!r} is not a store backend; "
                               f"expected one of: {', '.join(BACKENDS)}")
    return name


def check_config(env: Mapping[str, str]) -> None:
    """Raise StoreConfigError, naming the variable, if the backend cannot start."""
    if backend_name(env) == "shopify":
        ShopifyConfig.from_env(env)


def open_systems(env: Optional[Mapping[str, str]] = None,
                 order_letter: str = "A") -> StoreSystems:
    """The store systems STORE_BACKEND names; `order_letter` is the letter the bot puts
    before a platform's bare order numbers (policy: identity.order_number_letter)."""
    env = os.environ if env is None else env
    check_config(env)  # before a database is opened
    return systems_on(open_store(env.get("DATABASE_URL") or None), env, order_letter)


def systems_on(bot_records: Store, env: Mapping[str, str], order_letter: str) -> StoreSystems:
    """The store systems STORE_BACKEND names, keeping the bot's records in `bot_records`
    (the gateway has them open already)."""
    if backend_name(env) == "shopify":
        return open_shopify(ShopifyConfig.from_env(env), bot_records, order_letter)
    return bot_records
