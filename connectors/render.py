"""Text rendering shared by channels: length limits and buttons as numbered options."""
from __future__ import annotations

import re
from typing import List, Optional, Sequence

from connectors.message import Button

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|\n+")


def split_text(text: str, limit: int) -> List[str]:
    """Split into parts of at most `limit` characters, at sentence boundaries where
    possible, else at a space, else anywhere (a single over-long word)."""
    text = text.strip()
    if len(text) <= limit:
        return [text] if text else []
    parts: List[str] = []
    current = ""
    for sentence in _pieces(text, limit):
        joined = f"{current} {sentence}" if current else sentence
        if len(joined) <= limit:
            current = joined
        else:
            parts.append(current)
            current = sentence
    if current:
        parts.append(current)
    return parts


def _pieces(text: str, limit: int) -> List[str]:
    """Sentences, each cut further (at spaces, then hard) when longer than `limit`."""
    pieces: List[str] = []
    for sentence in filter(None, (s.strip() for s in _SENTENCE_END.split(text))):
        while len(sentence) > limit:
            cut = sentence.rfind(" ", 0, limit + 1)
            cut = cut if cut > 0 else limit
            pieces.append(sentence[:cut].rstrip())
            sentence = sentence[cut:].lstrip()
        pieces.append(sentence)
    return pieces


def numbered_options(buttons: Sequence[Button]) -> str:
    """Buttons for a text-only channel: one numbered line each."""
    lines = [f"{number}. {button.title}" for number, button in enumerate(buttons, start=1)]
    return "\n".join(["Reply with a number:", *lines])


def option_number(text: str) -> Optional[int]:
    """The number in a reply that is only an option number ("2", "2.", " 2 ")."""
    match = re.fullmatch(r"\s*(\d{1,2})[.)]?\s*", text)
    return int(match.group(1)) if match else None


def chosen_option(text: str, buttons: Sequence[Button]) -> Optional[str]:
    """The payload of the option the customer picked by number."""
    number = option_number(text)
    if number is None:
        return None
    return buttons[number - 1].payload if 0 < number <= len(buttons) else None
