"""The output vocabulary a recipe asks for: mergekit's ``tokenizer_source`` and ``tokenizer:`` block, parsed.

``_tokenizer_spec`` turns either form into a ``TokenizerSpec`` (the source, "base", "union" or a model path;
the tokens to add or set, each a ``TokenRow`` saying where its embedding row comes from; the padding of
the row count), refusing bad entries with one line. ``evosuite.merge.tokenizer`` builds the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from evosuite.errors import ConfigError


@dataclass(frozen=True)
class TokenRow:
    """A ``tokenizer: tokens:`` entry: where token's default row comes from, and whether it replaces the
    rows of the models that have the token (``force``). ``kind``: "model" (that model's row for the same
    token), "model_token" (that model's row for ``token`` or ``token_id``) or "zero"."""

    kind: str
    model: str | None = None
    token: str | None = None
    token_id: int | None = None
    force: bool = False


@dataclass(frozen=True)
class TokenizerSpec:
    """The output vocabulary: ``source`` "base", "union" or a model path; ``tokens`` to add or set;
    embedding rows rounded up to ``pad_to_multiple_of``."""

    source: str
    tokens: dict[str, TokenRow] = field(default_factory=dict)
    pad_to_multiple_of: int | None = None


_TOKENIZER_FIX = "write `tokenizer_source: base`, `union` or a model path, or a `tokenizer:` block"


def _tokenizer_spec(raw: Mapping[str, Any], referenced: list[str]) -> TokenizerSpec | None:
    source, block = raw.get("tokenizer_source"), raw.get("tokenizer")
    if source is not None and block is not None:
        raise ConfigError("the merge config gives both `tokenizer_source` and `tokenizer`",
                          "keep one: `tokenizer: {source: ...}` holds the same choice")
    if block is None:
        if source is None:
            return None
        if not isinstance(source, str) or not source:
            raise ConfigError(f"`tokenizer_source: {source!r}` is not a tokenizer source", _TOKENIZER_FIX)
        return TokenizerSpec(source)
    if not isinstance(block, dict):
        raise ConfigError("`tokenizer` must be a mapping", "write `tokenizer: {source: union, tokens: {...}}`")
    extra = sorted(set(block) - {"source", "tokens", "pad_to_multiple_of"})
    if extra:
        raise ConfigError(f"unknown key {extra[0]!r} in `tokenizer`", "valid keys: pad_to_multiple_of, source, tokens")
    source = block.get("source", "union")  # mergekit's default for the block
    if not isinstance(source, str) or not source:
        raise ConfigError(f"`tokenizer.source: {source!r}` is not a tokenizer source", _TOKENIZER_FIX)
    pad = block.get("pad_to_multiple_of")
    if pad is not None and (isinstance(pad, bool) or not isinstance(pad, int) or pad <= 0):
        raise ConfigError(f"`tokenizer.pad_to_multiple_of: {pad!r}` is not a positive integer",
                          "give e.g. `pad_to_multiple_of: 64`, or leave it out")
    tokens = block.get("tokens") or {}
    if not isinstance(tokens, dict):
        raise ConfigError("`tokenizer.tokens` must be a mapping", "write `tokens: {TOKEN: {source: MODEL}}`")
    rows = {str(tok): _token_row(tok, entry, referenced) for tok, entry in tokens.items()}
    return TokenizerSpec(source, rows, pad)


def _token_row(token: Any, entry: Any, referenced: list[str]) -> TokenRow:
    where = f"`tokenizer.tokens` entry {token!r}"
    if not isinstance(entry, dict) or "source" not in entry:
        raise ConfigError(f"{where} has no `source`",
                          "give `source: MODEL`, `{kind: model_token, model: M, token: T}` or `{kind: zero}`")
    extra = sorted(set(entry) - {"source", "force"})
    if extra:
        raise ConfigError(f"unknown key {extra[0]!r} in {where}", "valid keys: force, source")
    force = entry.get("force", False)
    if not isinstance(force, bool):
        raise ConfigError(f"{where}: `force: {force!r}` is not true or false", "write `force: true` or leave it out")
    source = entry["source"]

    def known(model: Any) -> str:
        if model not in referenced:
            raise ConfigError(f"{where} takes its row from {model!r}, which the merge does not use",
                              f"name one of: {', '.join(referenced)}")
        return model

    if isinstance(source, str):
        return TokenRow("model", known(source), force=force)
    kind = source.get("kind") if isinstance(source, dict) else None
    if kind == "zero" and set(source) == {"kind"}:
        return TokenRow("zero", force=force)
    if kind == "model_token" and set(source) <= {"kind", "model", "token", "token_id"}:
        tok, tok_id = source.get("token"), source.get("token_id")
        if (tok is None) == (tok_id is None) or (tok_id is not None and (isinstance(tok_id, bool)
                                                                         or not isinstance(tok_id, int))):
            raise ConfigError(f"{where}: a model_token source needs exactly one of `token` and `token_id`",
                              "write `{kind: model_token, model: M, token: T}` (or an integer `token_id`)")
        return TokenRow("model_token", known(source.get("model")), None if tok is None else str(tok), tok_id,
                        force)
    raise ConfigError(f"{where}: {source!r} is not a row source",
                      "give a model path, `{kind: model_token, model: M, token: T}` or `{kind: zero}`")
