"""Vocabularies and embedding rows, with mergekit 0.1.5's semantics: pure functions, no torch, no I/O.

A vocabulary is ``token string -> id``. Merging models whose tokenizers differ means choosing an output
vocabulary, then, for every embedding-like tensor (input embeddings, ``lm_head``), giving each model a
row per output token: its own row when it has that token string, else a default row. The merge method
then merges those aligned rows as it merges any tensor.

- ``row_map``: output row -> source row (or -1), by token string. The in-run alignment uses it too.
- ``union_additions``: the tokens a ``tokenizer_source: union`` appends to the base's vocabulary.
- ``default_rows``: mergekit's rule for the row a model that lacks a token gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

#: ``row_map``'s marker for "the source has no row for this output row".
ABSENT = -1


@dataclass(frozen=True)
class Vocabulary:
    """One tokenizer's vocabulary: ``ids`` (token -> id, added tokens included) and which tokens were added
    on top of the tokenizer's model (special tokens, user additions), which a union places last."""

    ids: Mapping[str, int]
    added: frozenset[str] = frozenset()

    def below(self, rows: int) -> Vocabulary:
        """Only the tokens whose id has an embedding row (id < rows): ids past the rows are unusable."""
        ids = {tok: i for tok, i in self.ids.items() if i < rows}
        return Vocabulary(ids, frozenset(t for t in self.added if t in ids))


def row_map(target_vocab: Mapping[str, int], source_vocab: Mapping[str, int], rows: int, *,
            source_rows: int | None = None) -> list[int]:
    """For each of the ``rows`` output rows, the source row holding the same token string, or ``ABSENT``.

    ``target_vocab`` is the output vocabulary (token -> output id), ``source_vocab`` a source model's
    (token -> its id). An output row past the target's ids (padding) maps to ``ABSENT``; so does a token
    whose source id is at or past ``source_rows`` (a tokenizer longer than its model's embeddings).
    Output ids at or past ``rows`` are ignored.
    """
    result = [ABSENT] * rows
    for token, out_id in target_vocab.items():
        if out_id >= rows:
            continue
        src_id = source_vocab.get(token)
        if src_id is not None and (source_rows is None or src_id < source_rows):
            result[out_id] = src_id
    return result


def union_additions(base: Vocabulary, others: Sequence[Vocabulary]) -> list[str]:
    """The tokens ``tokenizer_source: union`` appends, in order, to the base's vocabulary (whose ids stay).

    As mergekit: first every other model's ordinary tokens the base lacks, then every added token (special
    tokens...) no model listed as ordinary and the base lacks. mergekit visits models and tokens in an
    arbitrary order; here it is the order given (base first, then the config's), tokens by id.
    """
    added_anywhere = set(base.added).union(*(v.added for v in others))
    ordinary = [tok for vocab in others for tok, _ in sorted(vocab.ids.items(), key=lambda item: item[1])
                if tok not in base.ids and tok not in added_anywhere]
    special = [tok for vocab in others for tok in sorted(vocab.added, key=vocab.ids.__getitem__)
               if tok not in base.ids]
    return list(dict.fromkeys(ordinary + special))  # first occurrence wins


def extend(vocab: Mapping[str, int], tokens: Sequence[str]) -> dict[str, int]:
    """``vocab`` with each token it lacks appended at the next free id (as ``add_tokens`` does)."""
    out = dict(vocab)
    next_id = max(out.values(), default=-1) + 1
    for token in tokens:
        if token not in out:
            out[token] = next_id
            next_id += 1
    return out


def padded_rows(tokens: int, multiple: int | None) -> int:
    """Embedding rows for ``tokens`` ids, rounded up to ``multiple`` (``pad_to_multiple_of``)."""
    if not multiple or tokens % multiple == 0:
        return tokens
    return (tokens // multiple + 1) * multiple


@dataclass(frozen=True)
class RowSource:
    """Where a default row comes from: ``kind`` "copy" (the ``picks``' one row), "mean" (the unweighted mean
    of the ``picks``' rows) or "zero"; ``picks`` are (model, source row) pairs."""

    kind: str
    picks: tuple[tuple[str, int], ...] = ()


ZERO = RowSource("zero")


def default_rows(maps: Mapping[str, Sequence[int]], base: str | None, tokens: int,
                 overrides: Mapping[int, RowSource] | None = None) -> list[RowSource | None]:
    """mergekit's default row for each of the first ``tokens`` output rows of one tensor.

    ``maps`` holds the ``row_map`` of each model merged into this tensor (the base included); ``overrides``
    the rows the ``tokenizer: tokens:`` block sets. A model that has the token keeps its own row (unless
    the override forces it); the others get this default. Without an override, mergekit's rule:
    a token one model has -> that model's row; none has -> zeros; the base has it -> the base's row;
    else the mean of the rows of the models that have it. Returns None where every model has the token
    and no default is needed.
    """
    overrides = overrides or {}
    result: list[RowSource | None] = []
    for row in range(tokens):
        if row in overrides:
            result.append(overrides[row])
            continue
        have = [(model, m[row]) for model, m in maps.items() if m[row] != ABSENT]
        if len(have) == len(maps):
            result.append(None)
        elif len(have) == 1:
            result.append(RowSource("copy", tuple(have)))
        elif not have:
            result.append(ZERO)
        elif base is not None and base in maps and maps[base][row] != ABSENT:
            result.append(RowSource("copy", ((base, maps[base][row]),)))
        else:
            result.append(RowSource("mean", tuple(have)))
    return result


def remap_token_ids(config: dict, old_vocab: Mapping[str, int], new_vocab: Mapping[str, int]) -> dict:
    """A model config whose token ids (``bos_token_id``, ``image_token_index``...) named tokens of
    ``old_vocab``, rewritten to the same tokens' ids in ``new_vocab``; nested configs too. Ids whose
    token the new vocabulary lacks are left as they are."""
    token_of = {i: tok for tok, i in old_vocab.items()}

    def moved(value):
        if isinstance(value, bool) or not isinstance(value, int):
            return value
        token = token_of.get(value)
        return new_vocab.get(token, value) if token is not None else value

    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out[key] = remap_token_ids(value, old_vocab, new_vocab)
        elif key.endswith(("token_id", "token_ids", "token_index")):
            out[key] = [moved(v) for v in value] if isinstance(value, list) else moved(value)
        else:
            out[key] = value
    return out
