"""STORE_BACKEND chooses the order platform; a wrong choice or a missing variable stops
the start with a message that names the variable."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from actions.store.backend import check_config, open_systems
from actions.store.shopify import ShopifyStore
from actions.store.sql import Store
from actions.store.types import PlatformPolicy, StoreConfigError
from actions.store.woocommerce import WooStore

REPO = Path(__file__).resolve().parents[2]


def test_sql_is_the_default(tmp_path: Path) -> None:
    systems = open_systems({"DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"})
    try:
        assert isinstance(systems, Store)
        assert systems.orders.get_order("A1001") is None  # an empty demo store
    finally:
        systems.close()


def test_shopify_keeps_the_bots_records_in_sql(tmp_path: Path) -> None:
    systems = open_systems({"STORE_BACKEND": "Shopify", "SHOPIFY_SHOP": "x.myshopify.com",
                            "SHOPIFY_ACCESS_TOKEN": "shpat_x",
                            "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}"})
    try:
        assert isinstance(systems, ShopifyStore)
        assert systems.client.config.graphql_url == (
            "https://x.myshopify.com/admin/api/2025-10/graphql.json")
        assert str(systems.bot_records.engine.url).endswith("bot.db")
        # the write log keeps orders that only the platform knows (no foreign key)
        systems.writes.hold("A1001", "rule", "conv")
        assert systems.writes.hold_on("A1001") is not None
    finally:
        systems.close()


def test_woocommerce_keeps_the_bots_records_in_sql(tmp_path: Path) -> None:
    systems = open_systems({"STORE_BACKEND": "WooCommerce",
                            "WOOCOMMERCE_URL": "https://shop.example.com/",
                            "WOOCOMMERCE_KEY": "ck_x", "WOOCOMMERCE_SECRET": "cs_x",
                            "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}"},
                           PlatformPolicy(refund_through_gateway=False))
    try:
        assert isinstance(systems, WooStore)
        assert systems.client.config.api_url == "https://shop.example.com/wp-json/wc/v3"
        assert systems.orders.refund_through_gateway is False
        assert str(systems.bot_records.engine.url).endswith("bot.db")
        systems.writes.hold("A1001", "rule", "conv")
        assert systems.writes.hold_on("A1001") is not None
    finally:
        systems.close()


@pytest.mark.parametrize(("env", "named"), [
    ({"STORE_BACKEND": "magento"}, "STORE_BACKEND"),
    ({"STORE_BACKEND": "woocommerce"}, "WOOCOMMERCE_URL"),
    ({"STORE_BACKEND": "woocommerce", "WOOCOMMERCE_URL": "https://shop.example.com"},
     "WOOCOMMERCE_KEY"),
    ({"STORE_BACKEND": "woocommerce", "WOOCOMMERCE_URL": "https://shop.example.com",
      "WOOCOMMERCE_KEY": "ck_x"}, "WOOCOMMERCE_SECRET"),
    ({"STORE_BACKEND": "shopify"}, "SHOPIFY_SHOP"),
    ({"STORE_BACKEND": "shopify", "SHOPIFY_SHOP": "x.myshopify.com"}, "SHOPIFY_ACCESS_TOKEN"),
    ({"STORE_BACKEND": "shopify", "SHOPIFY_SHOP": "x.myshopify.com",
      "SHOPIFY_CLIENT_ID": "id"}, "SHOPIFY_CLIENT_SECRET"),
    ({"STORE_BACKEND": "shopify", "SHOPIFY_SHOP": "x.myshopify.com",
      "SHOPIFY_CLIENT_SECRET": "secret"}, "SHOPIFY_CLIENT_ID"),
])
def test_a_backend_that_cannot_start_names_the_variable(env: dict, named: str) -> None:
    with pytest.raises(StoreConfigError, match=named):
        check_config(env)
    with pytest.raises(StoreConfigError, match=named):
        open_systems(env)


def test_the_action_server_does_not_start_with_a_bad_backend() -> None:
    env = {**os.environ, "ACTION_SERVER_TOKEN": "t", "STORE_BACKEND": "shopify",
           "SHOPIFY_SHOP": "", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "actions.server", "--actions", "actions"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode != 0
    assert "SHOPIFY_SHOP" in done.stderr
