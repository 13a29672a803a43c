"""The common message types that flow through the gateway. Channels translate to
and from these at the edge; nothing past a connector sees a provider's payload."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, Literal, Optional, Tuple

AttachmentKind = Literal["image", "video", "audio", "file", "location"]


@dataclass(frozen=True)
class Attachment:
    kind: AttachmentKind
    url: str
    mime_type: str = ""
    caption: str = ""

    def as_dict(self) -> Dict[str, str]:
        """The shape the action server reads from the message metadata."""
        return {"type": self.kind, "url": self.url, "mime_type": self.mime_type,
                "caption": self.caption}


@dataclass(frozen=True)
class Button:
    title: str
    payload: str


@dataclass(frozen=True)
class Message:
    """One inbound customer message, whatever channel it came from.

    `connector` names the module that received it and will send the replies;
    `channel` is what the customer uses (sms, whatsapp, telegram, webchat, rest), which
    can differ: Twilio carries both SMS and WhatsApp. `message_id` is the provider's own
    id, the key for deduplicating provider retries. `store_address` is the store's own
    number or account the customer wrote to (Twilio's To), which replies come from.
    """

    connector: str
    channel: str
    sender: str
    message_id: str
    text: str = ""
    attachments: Tuple[Attachment, ...] = ()
    profile_name: str = ""
    store_address: str = ""
    received_at: float = field(default_factory=time.time)
    proven_phone: str = ""

    @property
    def conversation_id(self) -> str:
        return f"{self.connector}:{self.sender}"

    @property
    def dedupe_key(self) -> str:
        """The provider's id, unique across connectors: what a provider retry repeats."""
        return f"{self.connector}:{self.message_id}"

    @property
    def is_empty(self) -> bool:
        return not self.text.strip() and not self.attachments


@dataclass(frozen=True)
class Reply:
    """One reply to the customer, before a channel renders it."""

    text: str = ""
    buttons: Tuple[Button, ...] = ()
    image_url: str = ""
    custom: Optional[Dict[str, Any]] = None


DeliveryStatus = Literal["sent", "failed", "blocked", "delivered", "read"]


@dataclass(frozen=True)
class Delivery:
    """What happened to one outbound provider message. `blocked` means we did not try,
    on purpose (the customer opted out); `failed` means every attempt failed."""

    status: DeliveryStatus
    provider_message_id: str = ""
    error: str = ""
    attempts: int = 0
    template: str = ""


@dataclass(frozen=True)
class StatusUpdate:
    """A provider's report on a message we sent (sent, delivered, read, failed)."""

    connector: str
    provider_message_id: str
    status: str
    recipient: str = ""
    error: str = ""
    at: float = field(default_factory=time.time)


Role = Literal["customer", "bot", "agent"]


@dataclass(frozen=True)
class TranscriptTurn:
    """One turn of a conversation as the gateway recorded it."""

    role: Role
    text: str
    at: float
    buttons: Tuple[Button, ...] = ()
    image_url: str = ""
    attachments: Tuple[Attachment, ...] = ()
