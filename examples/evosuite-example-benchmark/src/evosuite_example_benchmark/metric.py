"""The benchmark's own metric: numeric exact match on the first number, and character F1."""

from __future__ import annotations

import re
from collections import Counter

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def first_number(text: str) -> float | None:
    """The first number in ``text`` ("1,200 grams" -> 1200.0), or None."""
    match = _NUMBER.search(text)
    if match is None:
        return None
    try:
        return float(match.group().replace(",", ""))
    except ValueError:
        return None


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the first number of the prediction equals the reference number, else 0.0."""
    value = first_number(prediction)
    return float(value is not None and value == float(reference))


def char_f1(prediction: str, reference: str) -> float:
    """F1 of the characters the prediction's first line shares with the reference (a smoother signal)."""
    lines = prediction.strip().splitlines()
    predicted = Counter(lines[0].strip().lower() if lines else "")
    expected = Counter(reference.strip().lower())
    common = sum((predicted & expected).values())
    if common == 0:
        return 0.0
    precision = common / sum(predicted.values())
    recall = common / sum(expected.values())
    return 2 * precision * recall / (precision + recall)
