"""The ``dfs`` merge space: data-flow-space merging, the paper's second axis (arXiv 2403.13187, sec. 3.2).

The weights are left alone; what evolves is the path a token's hidden state takes through the sources'
decoder layers.

Slots and genome
    The sources (two or more loaded models of one architecture family and hidden size; the paper's
    model A is the first source, model B the second) are laid out in slots: all layers of the first
    source in order, then all layers of the second, ..., and that block repeated ``repeats`` (r) times,
    as in the paper. With two sources of M layers each there are T = 2 M r slots (the paper's T = M r,
    its M counting the layers of all models). Sources may have different layer counts.

    A genome is floats in [0, 1] (the optimizers' box):

    * genes ``0 .. T-1``: the include indicator of each slot. The paper's I = 2 g - 1; a slot is on when
      I > 0, i.e. g > 0.5. The path is the included slots in slot order.
    * then the scales, by the ``scales`` option. A scale multiplies the hidden state entering a layer
      when the previous layer on the path belongs to another source (the distribution-shift fix of the
      paper); transitions within one source and the first layer (fed by the embeddings) are never scaled.
      Gene g maps linearly onto ``scale_range`` (default [0, 2], so g = 0.5 is a scale of 1).

      - ``"matrix"`` (default, the paper's W): one gene per ordered pair (i, j) of layers of different
        sources, i and j indexing all layers of all sources (source order, then layer order); the hidden
        state entering layer j right after layer i is scaled by W[i, j]. Pairs of one source are not in
        the genome (they are never used). Two sources of M layers: 2 M^2 genes.
      - ``"hop"``: one gene per slot (T genes), the scale applied when that slot is entered from a layer
        of another source: the compact per-hop scalar the paper's released models store.
      - ``"off"``: no scale genes, every scale 1 (the paper's ablation, which lost more than 20% of the gain).

Initial genome (``initial``)
    ``"first"`` (default, the paper's): the first repetition of model A's layers on, every other slot off,
    every scale 1, so the search starts at model A. On and off genes sit ``initial_margin`` (default 0.4)
    above and below the 0.5 threshold: with CMA-ES's sigma 1/6 that flips about one slot per candidate
    in the first generation (a margin of 0.5, the box's edge, flips almost none and the first generations
    all score model A; 0.25 flips about 7% of all slots). ``"uniform"``: every include gene at 0.5.

Embeddings, final norm and head
    come from one source, ``embeddings_from``. Default (None): the carrier when it is a vision-language
    model (its projector was trained against its own embeddings, and its vision tower and projector feed
    the path exactly as they feed its language model); otherwise model A, the first source, so that the
    initial genome is exactly model A (a text-only run's carrier, by default the last source, has no
    parts of its own to keep). The rotary embeddings and the model config (rope, sliding window, special
    tokens) are the carrier's; the tokenizer or processor is the carrier's (the runner checks that the
    sources share one vocabulary).

Candidates run in place
    The candidate is one reusable module sharing every tensor of the carrier (``share_structure``: no
    copy) whose decoder's ``layers`` list holds a ``dfs_path.PathLayer`` per path position around the
    source's own layer module; only that list is rebuilt per genome. The config's ``num_hidden_layers``
    (and ``layer_types``, per position from the layer's own source) follow the path so ``generate``
    builds a matching KV cache. See ``dfs_path`` for how cache indices are kept apart. Do not write
    into a candidate's ``mergeable_parameters()``: they are the sources' own tensors. ``output_hidden_states``
    and ``output_attentions`` are not captured on a candidate (transformers hooks each layer module once
    per place it sits, so a repeated layer would be recorded twice, and the hooks would stay on the
    sources' modules): the candidate's decoder is marked as hooked, and an exported model captures them.

Empty path
    A genome with no slot on is a valid candidate: embeddings -> final norm -> head (a bigram model).
    It scores poorly and the search moves on; raising would count as a failure against the run's
    ``max_consecutive_failures``.

Export and load
    ``DataFlowSpace.export(genome, out_dir)`` (and ``candidate.save``, which the runner calls) writes a
    standard Hugging Face model directory: the path's layers copied in order, ``num_hidden_layers`` =
    path length. All scales 1: nothing else, any ``transformers`` loader reads it exactly. Otherwise
    ``evosuite_dfs.json`` beside the weights records the per-layer scales (and the path's origin). A
    scale cannot be folded into the weights exactly: in a pre-norm residual layer the scaled state also
    travels on the skip connection, and RMSNorm's epsilon breaks scale invariance, so it is never folded.
    ``evosuite.models.load_model`` (hence ``evosuite eval``) re-applies the file through this space's
    ``post_load``; ``load_dfs_model(path, **load_kwargs)`` does the same explicitly. No
    ``trust_remote_code`` is involved.

Budget
    The paper ran CMA-ES with population 128 for 100 generations, r = 3 (``PAPER_BUDGET``). For a
    full-scale run: ``space: {name: dfs, options: {repeats: 3}}``, ``optimizer: {name: cmaes, options:
    {popsize: 128}}``, ``budget: 12800``. The offline default is the run configuration's small budget
    (60 evaluations, CMA-ES's default population 4 + 3 ln n) with r = 3.
"""

from __future__ import annotations

from typing import Any, Sequence

from evosuite import hookimpl
from evosuite.api import DecoderLayers, LoadedModel, MergeSpace
from evosuite.errors import ConfigError, ModelError
from evosuite.plugins.hf_models import text_layout


def _paths():
    """The path machinery (torch): imported on first use, so listing plugins does not pay for torch."""
    from evosuite.plugins import dfs_path

    return dfs_path


def _apply_saved_path(model, name_or_path):
    return _paths().apply_saved_path(model, name_or_path)

SCALE_MODES = ("matrix", "hop", "off")
INITIAL_MODES = ("first", "uniform")
#: The paper's DFS search: CMA-ES (EvoJAX), population 128, 100 generations, r = 3.
PAPER_BUDGET = {"repeats": 3, "popsize": 128, "generations": 100, "budget": 128 * 100}


class DataFlowSpace(MergeSpace):
    name = "dfs"
    description = "data-flow-space merge: which source layers run in what order (r repeats), with hidden-state scales"
    needs_base = False
    options = {
        "repeats": 3,
        "scales": "matrix",  # matrix (the paper's W), hop (one per slot), off (all 1)
        "scale_range": [0.0, 2.0],
        "embeddings_from": None,  # source name; None: a VLM carrier, else the first source (model A)
        "initial": "first",
        "initial_margin": 0.4,
    }
    paper_budget = PAPER_BUDGET

    def __init__(self, sources, source_names, base, carrier, *, seed=0, **options):
        super().__init__(sources, source_names, base, carrier, seed=seed, **options)
        self._check_options()
        self._check_sources()
        self.repeats = int(self.settings["repeats"])
        self.mode = self.settings["scales"]
        self.low, self.high = (float(v) for v in self.settings["scale_range"])
        self.counts = [s.num_layers for s in self.sources]
        # global layer index (over all sources) of (source, layer)
        self.offsets = [sum(self.counts[:s]) for s in range(len(self.sources))]
        self.total_layers = sum(self.counts)
        self.slots = [(s, layer) for _ in range(self.repeats)
                      for s, count in enumerate(self.counts) for layer in range(count)]
        self.pairs = {}
        for i in range(self.total_layers):
            for j in range(self.total_layers):
                if self._source_of(i) != self._source_of(j):
                    self.pairs[(i, j)] = len(self.pairs)
        self.embeddings_source = self._embeddings_source()
        self._layers = [list(_paths().layers_of(s)) for s in self.sources]
        self._layer_types = [getattr(s.text_config, "layer_types", None) for s in self.sources]
        self._candidate = self._build_shell()

    # -- configuration -----------------------------------------------------------------------------
    def _check_options(self) -> None:
        st = self.settings
        repeats = st["repeats"]
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise ConfigError(f"repeats {repeats!r} is not valid", "give the number of repetitions r (>= 1)")
        if st["scales"] not in SCALE_MODES:
            raise ConfigError(f"scales {st['scales']!r} is not valid", f"use one of {', '.join(SCALE_MODES)}")
        rng = st["scale_range"]
        if (not isinstance(rng, (list, tuple)) or len(rng) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng) or rng[0] >= rng[1]):
            raise ConfigError(f"scale_range {rng!r} is not valid", "give [low, high] with low < high, e.g. [0, 2]")
        if st["initial"] not in INITIAL_MODES:
            raise ConfigError(f"initial {st['initial']!r} is not valid", f"use one of {', '.join(INITIAL_MODES)}")
        margin = st["initial_margin"]
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 < margin <= 0.5:
            raise ConfigError(f"initial_margin {margin!r} is not valid", "give a number in (0, 0.5]")
        emb = st["embeddings_from"]
        if emb is not None and emb not in self.source_names:
            raise ConfigError(f"embeddings_from {emb!r} is not one of the sources",
                              f"choose one of {', '.join(self.source_names)}")

    def _check_sources(self) -> None:
        if not self.sources:
            raise ConfigError("the dfs space needs at least one source", "list the models to merge")
        for name, model in [*zip(self.source_names, self.sources), ("carrier", self.carrier)]:
            if not isinstance(model, DecoderLayers):
                raise ModelError(f"source {name!r} is not a transformers decoder model",
                                 "the dfs space runs llm and vlm adapter models")
        first = self.sources[0].text_config
        for name, model in zip(self.source_names[1:], self.sources[1:]):
            config = model.text_config
            if config.model_type != first.model_type or config.hidden_size != first.hidden_size:
                raise ModelError(f"source {name!r} ({config.model_type}, hidden size {config.hidden_size}) does "
                                 f"not match {self.source_names[0]!r} ({first.model_type}, hidden size "
                                 f"{first.hidden_size})",
                                 "data-flow merging needs models of one family and hidden size")
        carrier = self.carrier.text_config
        if carrier.model_type != first.model_type or carrier.hidden_size != first.hidden_size:
            raise ModelError("the carrier's language model does not match the sources",
                             "choose a carrier of the sources' family and hidden size")

    def _embeddings_source(self) -> int:
        wanted = self.settings["embeddings_from"]
        if wanted is not None:
            return self.source_names.index(wanted)
        if self.carrier.modality == "image-text":
            for s, model in enumerate(self.sources):
                if model is self.carrier:
                    return s
            return -1  # the carrier is not one of the sources: its own embeddings
        return 0

    def _source_of(self, global_layer: int) -> int:
        return next(s for s in reversed(range(len(self.counts))) if global_layer >= self.offsets[s])

    def _build_shell(self) -> LoadedModel:
        carrier = self.carrier
        shell = _paths().share_structure(carrier.module)
        if self.embeddings_source >= 0 and self.sources[self.embeddings_source] is not carrier:
            src = self.sources[self.embeddings_source]
            layout = text_layout(src.text_config.model_type)
            target, origin = _paths().decoder_of(shell, carrier), _paths().decoder_of(src.module, src)
            for part in (layout["embeddings"], layout["final_norm"]):
                _paths().replace_part(target, origin, part.rstrip("."))
            _paths().replace_part(shell, src.module, carrier.head_prefix.rstrip("."))
            # The head may be tied to the embeddings in that source and not in the carrier (or the reverse):
            # the config must say what the modules do, or an export would drop or re-tie the head.
            tied = getattr(src.module.config.get_text_config(decoder=True), "tie_word_embeddings", None)
            for config in {id(c): c for c in (shell.config, *_paths().text_configs(shell, carrier))}.values():
                if tied is not None and hasattr(config, "tie_word_embeddings"):
                    config.tie_word_embeddings = tied
        _paths().block_output_capture(shell, carrier)
        return _paths().as_path_model(carrier, shell)

    # -- genome <-> path ---------------------------------------------------------------------------
    @property
    def num_slots(self) -> int:
        return len(self.slots)

    @property
    def dimension(self) -> int:
        extra = {"matrix": len(self.pairs), "hop": self.num_slots, "off": 0}[self.mode]
        return self.num_slots + extra

    def scale_gene(self, scale: float) -> float:
        """The gene that decodes to ``scale`` (clipped to the box)."""
        return min(1.0, max(0.0, (scale - self.low) / (self.high - self.low)))

    def _scale(self, gene: float) -> float:
        return self.low + min(1.0, max(0.0, float(gene))) * (self.high - self.low)

    def initial_genome(self) -> list[float]:
        if self.settings["initial"] == "uniform":
            include = [0.5] * self.num_slots
        else:
            margin = float(self.settings["initial_margin"])
            include = [0.5 + margin if k < self.counts[0] else 0.5 - margin for k in range(self.num_slots)]
        return include + [self.scale_gene(1.0)] * (self.dimension - self.num_slots)

    def decode(self, genome: Sequence[float]) -> list[tuple[int, int, float]]:
        """The path: (source index, layer, scale) per position."""
        if len(genome) != self.dimension:
            raise ConfigError(f"genome has {len(genome)} genes, the space needs {self.dimension}",
                              "use a genome from a run of the same configuration")
        T = self.num_slots
        path: list[tuple[int, int, float]] = []
        previous = None  # (source, global layer)
        for k, (s, layer) in enumerate(self.slots):
            if not float(genome[k]) > 0.5:
                continue
            here = self.offsets[s] + layer
            scale = 1.0
            if previous is not None and previous[0] != s:
                if self.mode == "matrix":
                    scale = self._scale(genome[T + self.pairs[(previous[1], here)]])
                elif self.mode == "hop":
                    scale = self._scale(genome[T + k])
            path.append((s, layer, scale))
            previous = (s, here)
        return path

    def encode(self, path: Sequence[tuple[int, int, float]] | Sequence[tuple[int, int]]) -> list[float]:
        """A genome whose decoded path is ``path``: (source index, layer[, scale]) per position.

        Positions are matched to slots greedily in slot order, so the path must follow the slot order
        (a layer may appear at most ``repeats`` times, and only where the layout allows it). A scale is
        given only where one applies (entering a layer from another source, scales not ``off``); a step
        without one keeps the scale already set (1 by default). With ``matrix`` scales the same pair of
        layers shares one scale, so giving it two values is an error.
        """
        margin = float(self.settings["initial_margin"])
        T = self.num_slots
        genome = [0.5 - margin] * T + [self.scale_gene(1.0)] * (self.dimension - T)
        given: dict[int, float] = {}
        k, previous = 0, None
        for step in path:
            s, layer = int(step[0]), int(step[1])
            while k < T and self.slots[k] != (s, layer):
                k += 1
            if k == T:
                raise ConfigError(f"path step {(s, layer)} does not fit the slot layout after the previous steps",
                                  "a DFS path visits slots in order: source by source, repeated r times")
            genome[k] = 0.5 + margin
            here = self.offsets[s] + layer
            if len(step) > 2:
                scale = float(step[2])
                scaled = previous is not None and previous[0] != s and self.mode != "off"
                if not scaled and scale != 1.0:
                    raise ConfigError(f"path step {(s, layer)} has scale {scale} where no scale applies",
                                      "scales apply on a transition between sources, and not with scales: off")
                if scaled:
                    gene = T + (self.pairs[(previous[1], here)] if self.mode == "matrix" else k)
                    if given.get(gene, scale) != scale:
                        raise ConfigError(f"path step {(s, layer)} gives the transition from layer "
                                          f"{previous[1]} a second scale ({scale}, before {given[gene]})",
                                          "with scales: matrix one pair of layers has one scale")
                    given[gene] = scale
                    genome[gene] = self.scale_gene(scale)
            previous = (s, here)
            k += 1
        return genome

    # -- candidates ---------------------------------------------------------------------------------
    def candidate(self, genome) -> LoadedModel:
        path = self.decode(genome)
        layers = [self._layers[s][layer] for s, layer, _ in path]
        scales = [scale for _, _, scale in path]
        types = None
        if all(t is not None for t in self._layer_types):
            types = [self._layer_types[s][layer] for s, layer, _ in path]
        described = [{"source": self.source_names[s], "layer": layer, "scale": scale} for s, layer, scale in path]
        _paths().install_path(self._candidate, layers, scales, types, described)
        return self._candidate

    def references(self, baselines=None):
        return {}

    def gene_names(self):
        """Include genes are switches (None: their bounds are no limit); scale genes are ranges."""
        return [None] * self.num_slots + [f"scale gene {k}" for k in range(self.dimension - self.num_slots)]

    def recipe(self, genome) -> dict[str, Any]:
        path = self.decode(genome)
        emb = self.embeddings_source
        return {
            "space": self.name,
            "repeats": self.repeats,
            "scales": self.mode,
            "scale_range": [self.low, self.high],
            "embeddings_from": self.source_names[emb] if emb >= 0 else "carrier",
            "slots": self.num_slots,
            "path_length": len(path),
            "path": [{"source": self.source_names[s], "layer": layer, "scale": round(scale, 6)}
                     for s, layer, scale in path],
        }

    def export(self, genome, out_dir, model_card: str | None = None):
        """Save the genome's model: see "Export and load" in the module docstring. Returns the directory."""
        return self.candidate(genome).save(out_dir, model_card=model_card)

    @classmethod
    def post_load(cls, model, name_or_path):
        """Re-applies a saved ``evosuite_dfs.json`` (called by ``evosuite.models.load_model`` after any load)."""
        return _apply_saved_path(model, name_or_path)

    # -- what a run's report, model card and command line show (evosuite.api.MergeSpace) --------------
    card_tags = ("data-flow-space-merge",)
    cli_options = {"scales": ("DFS transition scales: the paper's matrix W, one per hop, or off (all 1: the "
                              "ablation).", SCALE_MODES)}

    @classmethod
    def describe(cls, recipe):
        from evosuite.plugins.space_reports import dfs_describe

        return dfs_describe(recipe)

    @classmethod
    def figure(cls, recipe, *, label, colors):
        from evosuite.plugins.space_reports import dfs_report_figure

        return dfs_report_figure(recipe, label=label, colors=colors)

    @classmethod
    def loading_note(cls, recipe):
        if not any(float(step.get("scale", 1.0)) != 1.0 for step in recipe.get("path") or []):
            return None  # all scales 1: the saved model is a standard one
        return ("The layer path has scales on its transitions between models; they are stored in "
                "`evosuite_dfs.json`. Load with evosuite to apply them: "
                "`from evosuite.plugins.dfs_space import load_dfs_model; model = load_dfs_model(PATH)` "
                "(or `evosuite eval PATH ...`). A plain `transformers` loader ignores the scales.")


def load_dfs_model(path, **load_kwargs) -> LoadedModel:
    """Load an exported DFS model exactly: ``evosuite.models.load_model`` plus its saved per-layer scales.

    ``load_kwargs`` are ``load_model``'s (``dtype``, ``device``, ``adapter``...). A directory without
    ``evosuite_dfs.json`` (all scales 1) is a standard model and loads as one.
    """
    from evosuite.models import load_model

    model = load_model(str(path), **load_kwargs)
    if not isinstance(model, _paths().PathModelMixin):
        model = _paths().apply_saved_path(model, str(path)) or model
    return model


@hookimpl
def register_merge_spaces(register):
    register(DataFlowSpace)
