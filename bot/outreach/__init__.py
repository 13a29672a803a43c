"""Proactive outreach: `bot monitor shipments`, `bot monitor products` and `bot monitor
promises`, once from the CLI or on a schedule inside the gateway (policy/monitor.yml).

- Shipments: orders in transit that are late (days past the promised date) or have had
  no carrier scan for days. Their customer is messaged on the conversation they last
  used, at most once per order and exception, never when opted out.
- What carriers report (bot/outreach/carriers.py: EasyPost's and AfterShip's signed
  webhooks): a delivery exception is sent at once under the shipments' policy, once per
  order, covering the late and no-scan messages; lost parcels are left to people.
- Products: when the conversations about orders with one SKU reach a threshold within a
  window, the team is alerted (stored, published on the handoff event bus for consoles,
  logged), at most once per SKU and window; optionally the SKU's recent buyers are
  messaged, once per alert and customer.
- Promises: what the bot promised when it opened a carrier trace ("if it hasn't moved
  by Mon 07 Dec, we'll send a replacement") or a not-received claim ("we'll update you
  by ..."), on or after that day (actions/policy.py promised_by). A trace whose parcel
  was scanned or delivered since is void; a promise whose order already has a
  replacement or refund is kept. Otherwise it is handed to a person (a handoff in the
  customer's last conversation, on the rule promise_due's queue, or on the team of the
  order's stop-the-line hold) and the customer is told a person is on it, once per
  promise. The monitor writes nothing to the store: the person makes the replacement.

Linking an order to a conversation: WhatsApp and Twilio (SMS, WhatsApp) senders are
phone numbers, compared with the customer's phone whole, as E.164 (as the bot verifies a
phone; numbers without a country code read in `identity.default_phone_region`).
Telegram and web chat carry no phone: such a conversation belongs to a customer only
when a handoff from it carries one of their orders, verified (the customer gave the
order number and its email or phone). The customer's conversation with the latest
inbound message is "the channel they last used".

Messages go through the router's `deliver`, the path of every bot reply: the channel
applies its rules (opt-out, WhatsApp's 24-hour window and its template, rate limits,
retries) and the router records the turns and deliveries. "At most once" is a row in
`monitor_outreach`, unique on (kind, subject), inserted in the transaction that decides
to send: a rerun or a second gateway finds it and sends nothing. A promise is claimed
the same way (kind "promise", subject the claim id) before its handoff is opened.
"""
