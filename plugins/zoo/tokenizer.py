"""One tokenizer for the whole zoo: English words (with their leading space), numbers and the world's
Japanese words are single tokens; any other character is a token of its own.

Numbers never carry a space, so "3" is the same token in both languages and the arithmetic skill can be
shared. Short sequences keep CPU training fast. The ``Fuse`` decoder gives back the exact text.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK, IMAGE = "<pad>", "<s>", "</s>", "<unk>", "<image>"
SPECIALS = [PAD, BOS, EOS, UNK, IMAGE]


def split_pattern(ja_words: list[str]) -> str:
    """Longest Japanese words first (alternation is leftmost-first); `[\\s\\S]` rather than `(?s).`,
    which the Oniguruma engine of `tokenizers` does not understand."""
    words = "|".join(sorted(set(ja_words), key=lambda w: (-len(w), w)))
    return rf"<image>|[0-9]+| ?[A-Za-z]+|{words}|[\s\S]"


def vocabulary(texts: list[str], pattern: str) -> list[str]:
    """Every piece ``pattern`` makes of ``texts``, in a fixed order (specials first) so ids are reproducible."""
    import re

    pieces = set()
    for text in texts:
        pieces.update(re.findall(pattern, text))
    return SPECIALS + sorted(pieces - set(SPECIALS))


def build_tokenizer(vocab: list[str], pattern: str) -> PreTrainedTokenizerFast:
    core = Tokenizer(models.WordLevel({tok: i for i, tok in enumerate(vocab)}, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=PAD,
        extra_special_tokens={"image_token": IMAGE}, padding_side="left",
    )
    # `<image>` must never be split, and the processor looks it up by this attribute.
    tok.add_special_tokens({"additional_special_tokens": [IMAGE]})
    return tok


def save_tokenizer(tok: PreTrainedTokenizerFast, path: Path) -> None:
    tok.save_pretrained(path)
