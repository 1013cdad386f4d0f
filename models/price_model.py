"""A ``vpp train`` model directory of either kind, loaded: the day-ahead model or the XGBoost 5-minute one.

``metadata.json`` names the kind (``models.dayahead.KIND``); anything else is read as
``models.forecast``'s, whose ``load`` says clearly what is wrong with a directory that holds neither.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["load"]


def load(directory: str | Path):
    """``models.dayahead.DayAheadModel`` or ``models.forecast.PriceForecaster``; ``ValueError`` (or XGBoost's
    error for a corrupt booster) when the directory holds neither."""
    from models import dayahead, forecast

    try:
        kind = json.loads((Path(directory) / "metadata.json").read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    return dayahead.load(directory) if kind == dayahead.KIND else forecast.load(directory)
