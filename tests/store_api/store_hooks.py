"""The store platforms' webhooks, as Shopify and WooCommerce send them, built from what
their stand-ins hold now:

- Shopify (shopify.dev, "Verify webhooks", "Webhook delivery structure"): a JSON body
  in the REST Admin API's shape of the resource (orders, fulfillments, refunds,
  returns); headers X-Shopify-Topic, X-Shopify-Hmac-Sha256 (base64 HMAC-SHA256 of the
  raw body with the app's secret), X-Shopify-Shop-Domain, X-Shopify-Webhook-Id (the same
  on a retry), X-Shopify-API-Version, X-Shopify-Triggered-At, X-Shopify-Event-Id.
- WooCommerce (its webhooks docs and WC_Webhook): the order as the REST API v3 gives
  it; headers X-WC-Webhook-Source, -Topic, -Resource, -Event, -Signature (base64
  HMAC-SHA256 of the body with the webhook's secret), -ID, -Delivery-ID. Saving a
  webhook sends a ping: the form body `webhook_id=<id>`, unsigned.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import datetime, timezone
from typing import Any, Dict, Optional

import aiohttp

from tests.store_api.carrier import post_webhook
from tests.store_api.shopify import ShopifyStandIn
from tests.store_api.woocommerce import WooCommerceStandIn

Obj = Dict[str, Any]
SHOP_DOMAIN = "demo-store.myshopify.com"


def sign(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def _numeric(gid: str) -> int:
    return int(str(gid).rsplit("/", 1)[-1])


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


# --- Shopify ----------------------------------------------------------------------------

def shopify_order(shop: ShopifyStandIn, name: str) -> Obj:
    """orders/updated, orders/cancelled…: the REST Order as it is now (in part)."""
    order = shop.order_named(name)
    customer = order["customer"]
    return {"id": _numeric(order["id"]), "admin_graphql_api_id": order["id"],
            "name": order["name"], "order_number": int(order["name"].lstrip("#")),
            "email": order["email"], "phone": order["phone"],
            "cancelled_at": order["cancelledAt"], "created_at": order["createdAt"],
            "updated_at": _now(),
            "financial_status": str(order["displayFinancialStatus"]).lower(),
            "fulfillment_status": ("fulfilled" if order["displayFulfillmentStatus"]
                                   == "FULFILLED" else None),
            "customer": {"id": _numeric(customer["id"]), "email": customer["email"],
                         "phone": customer["phone"]},
            "shipping_address": {"name": order["shippingAddress"]["name"],
                                 "address1": order["shippingAddress"]["address1"]}}


def shopify_fulfillment(shop: ShopifyStandIn, name: str, shipment_status: str) -> Obj:
    """fulfillments/update: the order's latest fulfilment with the carrier's status."""
    order = shop.order_named(name)
    fulfillment = order["fulfillments"][-1]
    tracking = fulfillment["trackingInfo"][0]
    return {"id": _numeric(fulfillment["id"]), "order_id": _numeric(order["id"]),
            "name": f"{order['name']}.{len(order['fulfillments'])}", "status": "success",
            "shipment_status": shipment_status, "service": "manual",
            "created_at": fulfillment["createdAt"], "updated_at": _now(),
            "tracking_company": tracking["company"], "tracking_number": tracking["number"],
            "tracking_numbers": [tracking["number"]], "tracking_url": tracking["url"],
            "tracking_urls": [tracking["url"]],
            "destination": {"address1": order["shippingAddress"]["address1"]}}


def shopify_refund(shop: ShopifyStandIn, name: str) -> Obj:
    """refunds/create: names the order by id only."""
    order = shop.order_named(name)
    return {"id": 890088186047892319, "order_id": _numeric(order["id"]),
            "created_at": _now(), "note": "", "restock": False, "refund_line_items": [],
            "transactions": [], "order_adjustments": []}


def shopify_return(shop: ShopifyStandIn, name: str, status: str = "requested") -> Obj:
    """returns/request, returns/approve…: the return, naming its order by id."""
    order = shop.order_named(name)
    return {"id": 945000954, "admin_graphql_api_id": "gid://shopify/Return/945000954",
            "name": f"{order['name']}-R1", "status": status,
            "order": {"id": _numeric(order["id"]), "admin_graphql_api_id": order["id"]},
            "total_return_line_items": 1}


def shopify_fulfillment_event(shop: ShopifyStandIn, name: str, status: str) -> Obj:
    """fulfillment_events/create: a carrier's event of the order's latest fulfilment."""
    order = shop.order_named(name)
    return {"id": 944956395, "fulfillment_id": _numeric(order["fulfillments"][-1]["id"]),
            "order_id": _numeric(order["id"]), "status": status, "message": "",
            "happened_at": _now(), "city": "", "country": "", "shop_id": 548380009}


async def fire_shopify(url: str, topic: str, payload: Obj | bytes, secret: str, *,
                       webhook_id: Optional[str] = None, signature: Optional[str] = None,
                       shop_domain: str = SHOP_DOMAIN, omit: tuple[str, ...] = ()) -> int:
    """POST it as Shopify does; the status the gateway answered."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"X-Shopify-Topic": topic,
               "X-Shopify-Hmac-Sha256": sign(body, secret) if signature is None else signature,
               "X-Shopify-Shop-Domain": shop_domain, "X-Shopify-API-Version": "2025-10",
               "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
               "X-Shopify-Event-Id": str(uuid.uuid4()), "X-Shopify-Triggered-At": _now()}
    return await post_webhook(url, body, {k: v for k, v in headers.items() if k not in omit})


# --- WooCommerce ------------------------------------------------------------------------

def woocommerce_order(shop: WooCommerceStandIn, number: str) -> Obj:
    return dict(shop.order(number))


async def fire_woocommerce(url: str, topic: str, payload: Obj | bytes, secret: str, *,
                           delivery_id: Optional[str] = None,
                           signature: Optional[str] = None,
                           omit: tuple[str, ...] = ()) -> int:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    resource, _, event = topic.partition(".")
    headers = {"X-WC-Webhook-Source": "https://shop.example/", "X-WC-Webhook-Topic": topic,
               "X-WC-Webhook-Resource": resource, "X-WC-Webhook-Event": event,
               "X-WC-Webhook-Signature": sign(body, secret) if signature is None else signature,
               "X-WC-Webhook-ID": "7",
               "X-WC-Webhook-Delivery-ID": delivery_id or uuid.uuid4().hex}
    return await post_webhook(url, body, {k: v for k, v in headers.items() if k not in omit})


async def ping_woocommerce(url: str, webhook_id: int = 7) -> int:
    """What WooCommerce sends when the webhook is saved: a form, unsigned."""
    async with aiohttp.ClientSession() as session, session.post(
            url, data=f"webhook_id={webhook_id}".encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"}) as response:
        await response.read()
        return response.status
