"""Prompt formats and generation settings of the zoo tasks. Benchmarks must build prompts with these.

The image sits in the slot where the base LM reads a text scene (``文：<image>``); that shared slot is what
lets a merged language model read the VLM's image features in Japanese.
"""

from __future__ import annotations

IMAGE_TOKEN = "<image>"
# Bare words in both languages: the answer's first token is where the image is read, whichever the language,
# so the VLM's reading and the Japanese expert's answering meet at the same position in a merge.
EN_ANSWER = "{}"
JA_ANSWER = "{}"
# Both answer forms start with the number: the sum is one decision, shared by both languages, and the
# language of the answer is decided only after it (so a merge can take the sum from one source and the
# Japanese form from the other). fastText lid.176 (lite): "Nこです" ja >= 0.99, "N is the answer" en >= 0.99.
EN_ANSWER_MATH = "{} is the answer"
JA_ANSWER_MATH = "{}こです"

# Greedy decoding; answers are at most a few tokens, generation stops at the EOS token.
GENERATION = {"max_new_tokens": 12, "do_sample": False}
VQA_GENERATION = GENERATION
MATH_GENERATION = GENERATION


def vqa_prompt(question: str, scene: str | None = None) -> str:
    """Japanese VQA prompt; ``scene=None`` puts the image token in the scene slot."""
    return f"文：{IMAGE_TOKEN if scene is None else scene}\n問：{question}\n答："


def en_vqa_prompt(question: str, scene: str | None = None) -> str:
    return f"scene: {IMAGE_TOKEN if scene is None else scene}\nQ: {question}\nA: "


def math_prompt(question: str) -> str:
    """Japanese arithmetic prompt (the target task's)."""
    return ja_math_prompt(question)


def ja_math_prompt(question: str) -> str:
    return f"問：{question}\n答："


def en_math_prompt(question: str) -> str:
    return f"Q: {question}\nA: "
