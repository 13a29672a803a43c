"""Rasa checks every custom action's answer against a JSON schema with
`jsonschema.validate`, which checks the schema itself and builds a new validator each
time: 14.6 ms of the ~25 ms of CPU a turn costs Rasa here, against 1.7 ms with a
validator built once (bench/results/stock.md, profiled with py-spy). `install()` gives
Rasa's RemoteAction a validator built once; what it accepts, what it rejects and the
error it raises are unchanged (tests/components/test_action_validation.py).

Rasa imports this package when it loads the model (config.yml names a component here),
and components/__init__.py installs it, so every Rasa server of this project runs with it."""
from __future__ import annotations

import functools
from typing import Any, Dict

from jsonschema import exceptions, validators
from rasa.core.actions.action import RemoteAction
from rasa.shared.constants import DOCS_BASE_URL


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    """What jsonschema.validate builds on every call, built once."""
    schema = RemoteAction.action_response_format_spec()
    cls = validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def validate_action_result(self: RemoteAction, result: Dict[str, Any]) -> bool:
    error = exceptions.best_match(_validator().iter_errors(result))
    if error is None:
        return True
    error.message += (
        f". Failed to validate Action server response from API, "
        f"make sure your response from the Action endpoint is valid. "
        f"For more information about the format visit "
        f"{DOCS_BASE_URL}/custom-actions"
    )
    raise error


def install() -> None:
    RemoteAction._validate_action_result = validate_action_result
