"""pydantic's version 1 API, on either pydantic: Rasa's environment pins pydantic 1, the
gateway's has pydantic 2, which ships the same API as `pydantic.v1`. The policy models,
the REST channel's body and WhatsApp's payloads import pydantic from here, so one
definition serves both environments (docs/development.md#two-environments)."""
try:
    from pydantic.v1 import (
        BaseModel,
        Extra,
        Field,
        StrictStr,
        ValidationError,
        confloat,
        conint,
        constr,
        root_validator,
        validator,
    )
except ImportError:  # pydantic 1, which has no pydantic.v1
    from pydantic import (  # type: ignore[assignment, no-redef, unused-ignore]
        BaseModel,
        Extra,
        Field,
        StrictStr,
        ValidationError,
        confloat,
        conint,
        constr,
        root_validator,
        validator,
    )

__all__ = ["BaseModel", "Extra", "Field", "StrictStr", "ValidationError", "confloat",
           "conint", "constr", "root_validator", "validator"]
