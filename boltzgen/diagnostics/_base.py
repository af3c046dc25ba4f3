"""The JSON-able base of the diagnostics' results."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from boltzgen.jsonable import json_clean


class _ToDict:
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (non-finite floats become None)."""
        return json_clean(asdict(self))  # type: ignore[call-overload]
