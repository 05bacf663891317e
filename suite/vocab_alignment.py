"""Giving every source of a run the carrier's vocabulary, so that models with different tokenizers merge.

Real merges rarely share one embedding matrix: a LLaVA-NeXT checkpoint adds ``<image>`` and ``<pad>`` and
pads its rows to a multiple of 64 (32064), Abel-7B-002 has 32032 rows, the Mistral fine-tunes 32000. The
result of a run keeps the carrier's tokenizer (as the released EvoVLM-JP and EvoLLM-JP kept theirs), so
every other model (the base included) is re-indexed to it before any merge space sees it:

- a token both have (matched by its string, not its id) gets the model's own row, so shared tokens merge;
- a carrier row with no counterpart in a source gets the base's row (already aligned), so the source's
  task vector is 0 there, as mergekit fills a missing token from the base; without a base, and for the
  base's own missing rows, the carrier's row. A token only the carrier has (or a padding row past the
  tokenizer) thus gets the carrier's row in every model but the carrier, and every delta-based method
  (task arithmetic, TIES, DARE, DELLA, breadcrumbs) and every normalized average gives back the carrier's row;
- a model's tokens that the carrier lacks are dropped, and the log says how many.

Afterwards each model carries the carrier's tokenizer, so the rest of the run (merge spaces, scoring a
source inside the carrier, export) sees one vocabulary. Only the generic ``LoadedModel`` capabilities
``vocab_parameters`` / ``set_vocabulary`` are used: any adapter that offers them gets alignment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from evosuite.api import LoadedModel
from evosuite.errors import ModelError
from evosuite.merge.vocabulary import row_map

#: Below this share of the carrier's tokens found in a model, the two tokenizers are different families
#: (a Llama and a Qwen vocabulary share a few hundred byte and ASCII pieces): merging rows would be noise.
MIN_SHARED_FRACTION = 0.5


@dataclass
class Alignment:
    """What aligning one model to the carrier did (rows are the carrier's embedding rows)."""

    model: str
    rows: int
    merged: int  # carrier rows that take the model's row of the same token
    filled: int  # carrier rows with no token in the model: taken from ``filled_from``
    dropped: list[str]  # the model's tokens the carrier lacks
    changed: bool  # False when the model already had the carrier's vocabulary, row for row
    filled_from: str = ""  # where the ``filled`` rows came from: the base, or the carrier

    def describe(self, carrier: str) -> str:
        if not self.changed:
            return f"vocabulary: {self.model} already has {carrier}'s {self.rows} rows"
        shown = ", ".join(repr(t) for t in self.dropped[:3]) + (", ..." if len(self.dropped) > 3 else "")
        dropped = f"{len(self.dropped)} dropped" + (f" ({shown})" if self.dropped else "")
        return (f"vocabulary: {self.model} aligned to {carrier}'s tokenizer: {self.merged} rows matched by token, "
                f"{self.filled} with no token of its own taken from {self.filled_from or carrier}, {dropped}")


def _vocabulary(model: LoadedModel, name: str) -> dict[str, int]:
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None or not hasattr(tokenizer, "get_vocab"):
        raise ModelError(f"model {name!r} has no tokenizer to align its embeddings by",
                         "save the tokenizer with the model (tokenizer.save_pretrained into its directory)")
    return tokenizer.get_vocab()


def align_model(model: LoadedModel, name: str, carrier: LoadedModel, carrier_name: str,
                filler: LoadedModel | None = None, filler_name: str = "the base") -> Alignment:
    """Re-index ``model``'s vocabulary parameters to the carrier's tokenizer (in place) and say what it did.

    Rows the model has no token for are copied from ``filler`` (already aligned), else from the carrier.
    """
    import torch

    vocab_names = carrier.vocab_parameters()
    if not vocab_names:
        return Alignment(name, 0, 0, 0, [], changed=False)
    target_params, params = carrier.mergeable_parameters(), model.mergeable_parameters()
    if sorted(model.vocab_parameters()) != sorted(vocab_names):
        raise ModelError(f"{name!r} and the carrier {carrier_name!r} differ in which weights are indexed by token "
                         f"({', '.join(model.vocab_parameters()) or 'none'} against {', '.join(vocab_names)})",
                         "merge models that tie (or untie) their embeddings and head alike")
    target_vocab, source_vocab = _vocabulary(carrier, carrier_name), _vocabulary(model, name)
    rows = int(target_params[vocab_names[0]].shape[0])
    source_rows = int(params[vocab_names[0]].shape[0])
    if source_rows == rows and source_vocab == target_vocab:
        return Alignment(name, rows, rows, 0, [], changed=False)
    mapping = row_map(target_vocab, source_vocab, rows, source_rows=source_rows)
    merged = sum(1 for index in mapping if index >= 0)
    if merged < MIN_SHARED_FRACTION * min(len(target_vocab), rows):
        raise ModelError(f"the tokenizer of {name!r} shares only {merged} of {len(target_vocab)} tokens with the "
                         f"carrier {carrier_name!r}'s", "merge models built on one tokenizer family")
    dropped = sorted((t for t in source_vocab if t not in target_vocab), key=source_vocab.__getitem__)
    index = torch.tensor(mapping)
    has = index >= 0
    new_rows = {}
    for param in vocab_names:
        source = params[param]
        if tuple(source.shape[1:]) != tuple(target_params[param].shape[1:]):
            raise ModelError(f"tensor {param!r} has shape {tuple(source.shape)} in {name!r} but "
                             f"{tuple(target_params[param].shape)} in the carrier {carrier_name!r}",
                             "merge models of the same architecture and size")
        fill = (filler.mergeable_parameters() if filler is not None else target_params)[param]
        row_block = fill.detach().to(device=source.device, dtype=source.dtype).clone()
        row_block[has.to(source.device)] = source.detach()[index[has].to(source.device)]
        new_rows[param] = row_block
    model.set_vocabulary(carrier.tokenizer, new_rows)
    return Alignment(name, rows, merged, rows - merged, dropped, changed=True,
                     filled_from=filler_name if filler is not None else carrier_name)


def align_to_carrier(models: Mapping[str, LoadedModel], carrier_name: str,
                     base: str | None = None) -> list[Alignment]:
    """Align every model but the carrier to the carrier's vocabulary, ``base`` (one of ``models``) first.

    A source's rows for tokens it lacks are then the aligned base's: the source changes nothing there (its
    task vector is 0 on them, as mergekit fills a missing token from the base); the base's own missing rows
    are the carrier's.
    """
    carrier = models[carrier_name]
    order = sorted(models, key=lambda name: name != base)  # the base first
    reports = {}
    for name in order:
        if models[name] is carrier:
            continue
        filler = models[base] if base is not None and name != base else None
        reports[name] = align_model(models[name], name, carrier, carrier_name, filler, str(base))
    return [reports[name] for name in models if name in reports]
