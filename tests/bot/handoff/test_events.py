"""The live events' vocabulary: the console's script knows every type the gateway sends,
by the same names, so a new or renamed event cannot reach consoles unnoticed."""
from __future__ import annotations

import re
from pathlib import Path

import bot.handoff
from bot.handoff.events import EventType

CONSOLE_SCRIPT = Path(bot.handoff.__file__).parent / "console_page" / "agent.js"


def test_the_console_script_names_every_event_type_as_the_gateway_does() -> None:
    script = CONSOLE_SCRIPT.read_text()
    block = re.search(r"const EVENT = Object\.freeze\(\{(.*?)\}\);", script, re.S)
    assert block, "agent.js defines its EVENT names"
    mirrored = dict(re.findall(r'(\w+): "([^"]+)"', block.group(1)))
    assert mirrored == {member.name: member.value for member in EventType}


def test_the_console_script_compares_event_types_only_through_its_names() -> None:
    """A type written out as a string in a comparison would escape the check above."""
    script = CONSOLE_SCRIPT.read_text()
    assert not re.findall(r'(eventType|message\.type) === "', script)
