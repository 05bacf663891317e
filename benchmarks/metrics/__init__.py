"""Metrics of the paper's Japanese benchmarks: Japanese ROUGE-L, the Japanese-language check, MGSM."""

from .language import is_japanese, japanese_probability
from .mgsm import mgsm_number, mgsm_scores
from .rouge_ja import RougeResult, japanese_rouge_l

__all__ = [
    "RougeResult",
    "is_japanese",
    "japanese_probability",
    "japanese_rouge_l",
    "mgsm_number",
    "mgsm_scores",
]
