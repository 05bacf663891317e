"""A merge's ``chat_template``: set on the output tokenizer, as mergekit sets it.

"auto" takes the template most of the merged models' tokenizers carry (none: the output keeps its own);
any other value is the Jinja template itself (``config._chat_template`` checked it).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Sequence


def _load(path: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception:  # transformers raises many kinds for a missing or broken tokenizer
        return None


def most_common_template(model_dirs: Sequence[Path]) -> str | None:
    """The chat template most of the models' tokenizers carry (the first seen wins a tie), or None."""
    templates = []
    for path in dict.fromkeys(model_dirs):
        tokenizer = _load(path)
        template = getattr(tokenizer, "chat_template", None)
        if isinstance(template, dict):
            template = template.get("default")
        if template:
            templates.append(template.strip())
    return Counter(templates).most_common(1)[0][0] if templates else None


def set_chat_template(out_dir: Path, spec: str, model_dirs: Sequence[Path]) -> None:
    """Write ``spec`` ("auto" or a Jinja template) into the tokenizer saved in ``out_dir``."""
    template = most_common_template(model_dirs) if spec == "auto" else spec
    if template is None:
        return
    tokenizer = _load(out_dir)
    if tokenizer is None:
        print("Warning: `chat_template` is set but the output has no tokenizer; it is not saved", file=sys.stderr)
        return
    tokenizer.chat_template = template
    tokenizer.save_pretrained(str(out_dir))
