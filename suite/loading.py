"""The run's models: the sources and the base, loaded, checked and given the carrier's vocabulary."""

from __future__ import annotations

from typing import Any, Callable

from evosuite.config import RunConfig
from evosuite.models import check_mergeable, config_differences, load_model
from evosuite.vocab_alignment import align_to_carrier


def load_sources(config: RunConfig, message: Callable[[str], None] = lambda text: None
                 ) -> tuple[dict[str, Any], Any, list[str]]:
    """``(models, base, notes)``: the sources by name and the base (None without one), checked and given the
    carrier's vocabulary; ``notes`` are what loading found (image modes, carrier, vocabulary alignment,
    config differences), one line each, also passed to ``message`` for the log."""
    kwargs = dict(dtype=config.dtype, device=config.device, trust_remote_code=config.trust_remote_code,
                  allow_pickle=config.allow_pickle)
    models, lines = {}, []
    for spec in config.sources:
        message(f"loading {spec.name}: {spec.model}")
        models[spec.name] = load_model(spec.model, adapter=spec.adapter, options=spec.options, **kwargs)
        described = models[spec.name].describe()  # e.g. a VLM's image mode and image tokens per image
        if described:
            lines.append(f"{spec.name}: {described}")
    base = None
    if config.base_model:
        message(f"loading base model: {config.base_model}")
        base = load_model(config.base_model, **kwargs)
    everything = {**models, **({"base model": base} if base is not None else {})}
    carrier = config.carrier_name()
    if config.carrier is None:
        lines.append(f"carrier: {carrier} (none named, so the last source; the result keeps its tokenizer, "
                     f"config and unmerged parts; set carrier: to choose)")
    check_mergeable(everything, ignore_vocab_rows=True)
    # The result keeps the carrier's tokenizer: every other model is re-indexed to it.
    aligned = align_to_carrier(everything, carrier, base="base model" if base is not None else None)
    lines += [alignment.describe(carrier) for alignment in aligned]
    lines += config_differences(everything, carrier)
    check_mergeable(everything)
    for line in lines:
        message(line)
    return models, base, lines
