"""Resource quantities as the API writes them (``500m``, ``128Mi``, ``1.5``, ``1e3``) as numbers."""
from __future__ import annotations

import re

UNITS = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
         "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_FORM = re.compile(r"([+-]?[0-9.]+)(?:[eE]([+-]?\d+))?([a-zA-Z]*)")


def parse(value: object) -> float:
    """The number a quantity stands for (ValueError when it is not one)."""
    found = _FORM.fullmatch(str(value).strip())
    if not found or found[3] not in UNITS or found[1] in (".", "+", "-"):
        raise ValueError(f"quantity {value!r} cannot be read")
    return float(found[1]) * 10 ** int(found[2] or 0) * UNITS[found[3]]
