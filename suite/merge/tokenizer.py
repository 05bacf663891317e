"""The output tokenizer of a merge and the embedding rows aligned to it (mergekit's ``tokenizer_source``).

``build_output_vocabulary`` loads the models' tokenizers, builds the output tokenizer (the base's, a
union, or a named model's, plus the ``tokenizer: tokens:``), and maps each model's rows onto it;
``align_rows`` then gives every model merged into an embedding tensor one row per output row (its own
where it has the token string, else mergekit's default), so the merge method merges aligned rows.
The vocabulary rules themselves are the pure functions of ``vocabulary``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from evosuite.errors import ModelError
from evosuite.merge.tokenizer_spec import TokenizerSpec, TokenRow
from evosuite.merge.vocabulary import (
    ABSENT,
    ZERO,
    RowSource,
    Vocabulary,
    default_rows,
    padded_rows,
    row_map,
    union_additions,
)


@dataclass
class OutputVocabulary:
    """The output tokenizer and, per model, where its rows go."""

    tokenizer: Any
    #: Output token -> id; ``tokens`` ids are used, ``rows`` >= tokens rows are written (padding past them).
    ids: dict[str, int]
    tokens: int
    rows: int
    #: Per model: ``row_map`` output row -> its row, and its own vocabulary (for ``model_token`` sources).
    maps: dict[str, list[int]]
    vocabs: dict[str, dict[str, int]]
    model_rows: dict[str, int]
    overrides: dict[str, TokenRow]
    summary: str
    warnings: list[str] = field(default_factory=list)


def _load(ref: str, path: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), use_fast=True)
    except Exception as exc:  # transformers raises many kinds for a missing or broken tokenizer
        raise ModelError(f"model {ref!r} has no tokenizer that loads: {str(exc).splitlines()[0] if str(exc) else exc}",
                         "aligning vocabularies needs each model's tokenizer; save it beside the weights") from None


def _vocabulary(tokenizer) -> Vocabulary:
    added = frozenset(tok.content for tok in tokenizer.added_tokens_decoder.values())
    return Vocabulary(dict(tokenizer.get_vocab()), added)


def _strip(tokenizer, ref: str, rows: int):
    """The tokenizer without the ids at or past ``rows`` (tokens a model has no embedding row for), as
    mergekit strips the base's. Edits a saved copy of ``tokenizer.json`` and loads it again."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        path = Path(tmp) / "tokenizer.json"
        if not path.is_file():
            raise ModelError(f"model {ref!r} has token ids past its {rows} embedding rows and no tokenizer.json",
                             "save a fast tokenizer (tokenizer.json) or resize the embeddings")
        data = json.loads(path.read_text())
        dropped = {t["content"] for t in data.get("added_tokens", []) if t["id"] >= rows}
        data["added_tokens"] = [t for t in data.get("added_tokens", []) if t["id"] < rows]
        model = data["model"]
        if isinstance(model.get("vocab"), dict):
            dropped |= {tok for tok, i in model["vocab"].items() if i >= rows}
            model["vocab"] = {tok: i for tok, i in model["vocab"].items() if i < rows}
        elif isinstance(model.get("vocab"), list):  # Unigram: the id is the position
            model["vocab"] = model["vocab"][:rows]
        if isinstance(model.get("merges"), list):  # BPE: merges must not produce a dropped token
            model["merges"] = [m for m in model["merges"]
                               if not set(m.split(" ") if isinstance(m, str) else m) & dropped
                               and "".join(m.split(" ") if isinstance(m, str) else m) not in dropped]
        path.write_text(json.dumps(data, ensure_ascii=False))
        config_path = Path(tmp) / "tokenizer_config.json"
        if config_path.is_file():
            config = json.loads(config_path.read_text())
            decoder = config.get("added_tokens_decoder")
            if isinstance(decoder, dict):
                config["added_tokens_decoder"] = {k: v for k, v in decoder.items() if int(k) < rows}
                config_path.write_text(json.dumps(config, ensure_ascii=False))
        return AutoTokenizer.from_pretrained(tmp, use_fast=True)


def build_output_vocabulary(spec: TokenizerSpec, models: list[str], base: str, paths: Mapping[str, Path],
                            model_rows: Mapping[str, int], resolve: Callable[[str], Path]) -> OutputVocabulary:
    """The output tokenizer for ``spec`` over ``models`` (every model the config names, ``base`` first),
    whose directories are ``paths`` and embedding row counts ``model_rows``; ``resolve`` finds a
    ``tokenizer_source`` model the merge does not use."""
    from transformers import AddedToken

    warnings: list[str] = []
    tokenizers = {base: _load(base, paths[base])}
    for ref in models:
        if ref == base:
            continue
        try:
            tokenizers[ref] = _load(ref, paths[ref])
        except ModelError:  # as mergekit: a model without a tokenizer is taken to share the base's
            warnings.append(f"model {ref!r} has no tokenizer; its rows are taken to follow the base's {base!r}")
    vocabs = {ref: _vocabulary(tok) for ref, tok in tokenizers.items()}
    base_vocab = vocabs[base].below(model_rows[base])

    if spec.source in ("base", "union"):
        if len(base_vocab.ids) < len(vocabs[base].ids):
            out = _strip(tokenizers[base], base, model_rows[base])
        else:
            out = _load(base, paths[base])  # a fresh copy: tokens are added to it
        if spec.source == "union":
            others = [vocabs[ref].below(model_rows[ref]) for ref in tokenizers if ref != base]
            additions = union_additions(base_vocab, others)
            added_info = {}
            for ref in tokenizers:
                for info in tokenizers[ref].added_tokens_decoder.values():
                    added_info.setdefault(info.content, info)
            for token in additions:
                info = added_info.get(token)
                out.add_tokens(AddedToken(token, special=info.special, lstrip=info.lstrip, rstrip=info.rstrip,
                                          single_word=info.single_word, normalized=info.normalized)
                               if info is not None else token)
    else:
        out = _load(spec.source, paths[spec.source] if spec.source in paths else resolve(spec.source))
    for token in spec.tokens:
        out.add_tokens(token)

    ids = dict(out.get_vocab())
    tokens = max(ids.values(), default=-1) + 1
    rows = padded_rows(tokens, spec.pad_to_multiple_of)
    maps = {ref: row_map(ids, vocabs.get(ref, vocabs[base]).ids, rows, source_rows=model_rows[ref])
            for ref in models}
    result = OutputVocabulary(out, ids, tokens, rows, maps, {ref: dict(v.ids) for ref, v in vocabs.items()},
                              dict(model_rows), dict(spec.tokens), "", warnings)
    for token, entry in spec.tokens.items():  # a bad row source fails here, before anything is written
        _override(result, token, entry, set(models))
    shared = sum(all(m[i] != ABSENT for m in maps.values()) for i in range(tokens))
    result.summary = (f"tokenizer_source {spec.source!r} over {len(models)} model(s): {tokens} tokens, {rows} rows; "
                      f"{shared} tokens in every model, {tokens - shared} filled by mergekit's rule")
    return result


def _override(vocab: OutputVocabulary, token: str, entry: TokenRow, merged: set[str]) -> RowSource:
    where = f"`tokenizer.tokens` entry {token!r}"
    if entry.kind == "zero":
        return ZERO
    if entry.model not in merged:
        raise ModelError(f"{where} takes its row from {entry.model!r}, which this embedding does not merge",
                         "take the row from a model merged into the embeddings (a slice's source or the base)")
    if entry.kind == "model":
        src = vocab.maps[entry.model][vocab.ids[token]]
        if src == ABSENT:
            raise ModelError(f"{where}: model {entry.model!r} has no token {token!r}",
                             "take the row from a model that has it, or use {kind: model_token, ...}")
        return RowSource("copy", ((entry.model, src),))
    own = vocab.vocabs.get(entry.model, {})
    src = own.get(entry.token, ABSENT) if entry.token is not None else entry.token_id
    if src == ABSENT or not 0 <= src < vocab.model_rows[entry.model]:
        what = repr(entry.token) if entry.token is not None else f"id {entry.token_id}"
        raise ModelError(f"{where}: model {entry.model!r} has no row for token {what}",
                         "name a token of that model's tokenizer (or an id below its embedding rows)")
    return RowSource("copy", ((entry.model, src),))


def align_rows(vocab: OutputVocabulary, tensors: Mapping[str, torch.Tensor],
               base: str | None) -> dict[str, torch.Tensor]:
    """Each model's 2-D embedding tensor laid out on the output vocabulary: ``vocab.rows`` rows, its own row
    where it has the token (and no ``force``), else mergekit's default row; padding rows past the tokens
    are the mean of the model's token rows (mergekit's choice)."""
    maps = {ref: vocab.maps[ref] for ref in tensors}
    overrides = {vocab.ids[tok]: _override(vocab, tok, entry, set(tensors)) for tok, entry in vocab.overrides.items()}
    defaults = default_rows(maps, base if base in tensors else None, vocab.tokens, overrides)
    first = next(iter(tensors.values()))
    hidden, dtype = first.shape[1], first.dtype
    fallback = torch.zeros(vocab.tokens, hidden, dtype=dtype)
    for row, source in enumerate(defaults):
        if source is None or source.kind == "zero":
            continue
        picked = [tensors[ref][src] for ref, src in source.picks]
        fallback[row] = picked[0] if source.kind == "copy" else torch.stack(picked).mean(0)
    forced = torch.zeros(vocab.tokens, dtype=torch.bool)
    for token, entry in vocab.overrides.items():
        forced[vocab.ids[token]] = entry.force
    aligned = {}
    for ref, tensor in tensors.items():
        index = torch.tensor(maps[ref][: vocab.tokens], dtype=torch.long)
        own = (index != ABSENT) & ~forced
        out = torch.empty(vocab.rows, hidden, dtype=dtype)
        out[: vocab.tokens] = fallback
        out[: vocab.tokens][own] = tensor[index[own]]
        if vocab.rows > vocab.tokens:
            out[vocab.tokens:] = out[: vocab.tokens].mean(0)
        aligned[ref] = out
    return aligned
