"""MGSM answer extraction and accuracy (the paper's MGSM-JA metric)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .language import JA_THRESHOLD, japanese_probability

# The paper's rule: the last match of this pattern, as a float. Kept verbatim with its quirks:
# "1,000" -> 0.0 (last match is "000"), signs are dropped, and Python's Unicode \d also matches
# full-width digits, which float() accepts ("１８" -> 18.0).
_PAPER_NUMBER = re.compile(r"\d*\.?\d+")

# Robust rule. Full-width digits/commas/periods and minus-sign look-alikes are mapped to ASCII first
# (a targeted table, not NFKC, which would also turn "m²" into "m2" and invent a number).
_TO_ASCII = str.maketrans(
    {**{chr(0xFF10 + i): str(i) for i in range(10)}, "，": ",", "．": ".", "−": "-", "－": "-"}
)
_ROBUST_NUMBER = re.compile(
    r"(?:(?<![0-9A-Za-z.])-)?"  # a minus is a sign only when not glued to a word/number ("2-3" is a range)
    r"(?<![0-9.])"  # never start inside a number ("1.5.2" does not end in ".2")
    r"(?:(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])"  # thousands groups: 1,234,567
    r"|[0-9]+)"
    r"(?:\.[0-9]+)?"  # decimals need a digit after the point, so a trailing period is left out
    r"|\.[0-9]+)"  # ".5"
)


def mgsm_number(text: str, *, robust: bool = False) -> float | None:
    """The answer number in a model's response: the last number in it, or None when there is none."""
    if not robust:
        matches = _PAPER_NUMBER.findall(text)
        return float(matches[-1]) if matches else None
    matches = _ROBUST_NUMBER.findall(text.translate(_TO_ASCII))
    return float(matches[-1].replace(",", "")) if matches else None


def mgsm_scores(
    responses: Sequence[str], answers: Sequence[float | int | str], *, robust: bool = False
) -> dict:
    """``acc`` (extracted number equals the answer) and ``acc_ja`` (also a Japanese response), in [0, 1]."""
    if len(responses) != len(answers):
        raise ValueError(f"{len(responses)} responses but {len(answers)} answers")
    if not responses:
        raise ValueError("mgsm_scores needs at least one item")
    per_item = []
    for response, answer in zip(responses, answers):
        prediction = mgsm_number(response, robust=robust)
        correct = prediction is not None and prediction == float(answer)
        prob = japanese_probability(response)
        # The paper's MGSM check is strict (> 0.5), unlike the ROUGE rule's >= 0.5.
        japanese = prob > JA_THRESHOLD
        per_item.append(
            {
                "prediction": prediction,
                "answer": answer,
                "correct": correct,
                "japanese_probability": prob,
                "is_japanese": japanese,
                "correct_ja": correct and japanese,
            }
        )
    n = len(per_item)
    return {
        "acc": sum(r["correct"] for r in per_item) / n,
        "acc_ja": sum(r["correct_ja"] for r in per_item) / n,
        "n": n,
        "per_item": per_item,
    }
