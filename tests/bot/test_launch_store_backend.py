"""`bot run` (make run) and the order platform: a wrong backend stops it before anything
starts, and the demo seed, which wipes the bot's records, runs only on the demo store."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from actions.store.sql import open_store
from actions.store.types import WriteRecord
from bot.settings import load_settings
from bot.tools.launcher import launch, seed_demo_store_if_used


def kept_write(url: str) -> None:
    store = open_store(url)
    store.writes.claim(WriteRecord(key="k1", conversation_id="rest:ann", kind="cancel",
                                   order_id="A1004", params={}, status="done", before={},
                                   created_at=datetime.now(timezone.utc)))
    store.close()


def writes_kept(url: str) -> int:
    store = open_store(url)
    try:
        return len(store.writes.for_order("A1004"))
    finally:
        store.close()


def test_on_shopify_the_bots_records_are_not_wiped_by_the_demo_seed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    kept_write(url)
    said = seed_demo_store_if_used({"STORE_BACKEND": "shopify", "DATABASE_URL": url,
                                    "SHOPIFY_SHOP": "x.myshopify.com",
                                    "SHOPIFY_ACCESS_TOKEN": "shpat_x"})
    assert said.startswith("store: shopify (the demo store is not seeded")
    assert writes_kept(url) == 1


def test_on_woocommerce_the_bots_records_are_not_wiped_by_the_demo_seed(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    kept_write(url)
    said = seed_demo_store_if_used({"STORE_BACKEND": "woocommerce", "DATABASE_URL": url,
                                    "WOOCOMMERCE_URL": "https://shop.example.com",
                                    "WOOCOMMERCE_KEY": "ck_x", "WOOCOMMERCE_SECRET": "cs_x"})
    assert said.startswith("store: woocommerce (the demo store is not seeded")
    assert writes_kept(url) == 1


def test_the_demo_store_is_seeded_afresh(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    kept_write(url)
    assert seed_demo_store_if_used({"DATABASE_URL": url}) == "demo store seeded: 221 orders"
    assert writes_kept(url) == 0


def test_bot_run_stops_before_starting_anything_without_the_shops_variables(
        capsys: pytest.CaptureFixture[str]) -> None:
    env = {"STORE_BACKEND": "shopify", "SHOPIFY_SHOP": "x.myshopify.com"}
    assert launch(load_settings(), env, [], train=False, seed=True) == 1
    assert "SHOPIFY_ACCESS_TOKEN" in capsys.readouterr().err
