"""Base classes for what plugins register: the objects behind each hook in ``evosuite.hookspecs``.

The core (evolver, merge engine, run store, terminal UI) talks to models, benchmarks, spaces and
optimizers only through these classes, so it never names a model family or a task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Hashable, Mapping, Sequence

from evosuite.errors import ConfigError

#: Marks a parameter that has no default and must be given.
REQUIRED = object()


def check_options(kind: str, name: str, given: Mapping[str, Any], valid: Mapping[str, Any]) -> None:
    """Raise a one-line ``ConfigError`` naming the first option of ``given`` that ``valid`` lacks."""
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown option {unknown[0]!r} for {kind} {name!r}",
            f"valid options: {', '.join(sorted(valid)) or 'none'}",
        )
    for key, value in given.items():
        # Where the default is a number or a flag, a value of another type can only fail later, mid-run.
        default = valid[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            continue
        if not ok:
            raise ConfigError(f"option {key!r} of {kind} {name!r} is {value!r}",
                              f"give a {'true/false flag' if isinstance(default, bool) else 'number'}")

#: Modalities are open strings: what a model takes and a benchmark needs. The built-ins use ``"text"`` (text
#: prompts), ``"image-text"`` (images with text prompts: VLMs) and ``"image-classification"`` (images to
#: classify against class texts: CLIP-style models); a plugin may name its own. A benchmark runs on a model
#: whose ``LoadedModel.supports`` accepts the benchmark's modality.
TEXT = "text"

#: ``progress(done, total)``: called by long operations so the UI can draw a bar.
Progress = Callable[[int, int], None]


class LoadedModel:
    """A model loaded by an adapter, with a generic view of its mergeable language-model weights.

    ``mergeable_parameters()`` maps canonical names (``layers.3.mlp.up_proj.weight``, ``embed_tokens.weight``,
    ``norm.weight``, ``lm_head.weight``) to the live tensors of ``module``: the same names for a plain
    causal LM and for the language model inside a VLM, so the two can be merged. Everything else in the
    module (a vision tower, a projector) is kept as it is.
    """

    #: The name of the adapter that loaded the model (for the run's log and result tables).
    adapter: str = ""
    #: What the model takes (an open string, see ``TEXT``).
    modality: str = TEXT

    def __init__(self, module, *, name_or_path: str, processor=None):
        self.module = module
        self.name_or_path = name_or_path
        self.processor = processor

    def describe(self) -> str:
        """One line about how the model runs, for the run's log (e.g. a VLM's image tokens); "" for nothing."""
        return ""

    def supports(self, modality: str) -> bool:
        """Whether the model can take a benchmark of ``modality`` (a VLM also answers text-only prompts)."""
        return modality == self.modality or (modality == TEXT and self.modality == "image-text")

    @property
    def num_layers(self) -> int:
        """Number of transformer layers of the mergeable language model."""
        raise NotImplementedError

    def mergeable_parameters(self) -> dict[str, Any]:
        """Canonical name -> live tensor of every mergeable weight (writing into them changes the model)."""
        raise NotImplementedError

    def layer_index(self, canonical_name: str) -> int | None:
        """The layer a canonical name belongs to, or None for embeddings, final norm and head."""
        raise NotImplementedError

    def checkpoint_name(self, canonical_name: str) -> str:
        """The weight's full name in the model's state dict (for a causal LM, the name its checkpoint and
        ``evosuite merge`` give it): random merge methods seed each tensor from it, in a run as on disk.
        Default: the canonical name."""
        return canonical_name

    def generate(self, prompts: Sequence[str], images: Sequence[Any] | None = None, **options) -> list[str]:
        """Batched generation: one decoded completion (prompt excluded) per prompt.

        ``options``: ``max_new_tokens``, ``num_beams``, ``repetition_penalty``, ``stop`` (strings that end a
        completion), ``batch_size``, ``progress`` (a ``Progress`` callback over prompts).
        """
        raise NotImplementedError

    # -- optional capabilities: the defaults say "not offered" -------------------------------------------
    #: The tokenizer whose ids index the rows of ``vocab_parameters`` (None for a model without one).
    tokenizer: Any = None

    def vocab_parameters(self) -> list[str]:
        """Canonical names of the mergeable tensors whose rows are indexed by token id (input embeddings, an
        untied output head). A model that lists them can be merged with models of another vocabulary: the
        run re-indexes them to the carrier's tokenizer (``evosuite.vocab_alignment``). Default: none."""
        return []

    def set_vocabulary(self, tokenizer: Any, rows: Mapping[str, Any]) -> None:
        """Adopt ``tokenizer`` and replace each of ``vocab_parameters`` by ``rows[name]`` (its row count may
        differ from the current one); needed only by models that list ``vocab_parameters``."""
        raise NotImplementedError

    #: The text that marks where an image goes in a prompt (VLMs); None for a model that takes no images.
    image_token: str | None = None

    def classify(self, images: Sequence[Any], class_texts: Sequence[str], *, templates: Sequence[str] = ("{}",),
                 batch_size: int = 256) -> list[int]:
        """Zero-shot classification, offered by models of a classifying modality (CLIP-style): the index in
        ``class_texts`` of each image's most similar class, each class text put in every ``templates``
        pattern (``"a photo of a {}."``) and the pattern embeddings averaged. Default: not offered."""
        raise NotImplementedError(f"{type(self).__name__} does not classify images")

    @property
    def classifies(self) -> bool:
        """Whether the model offers ``classify`` (a benchmark checks this before scoring)."""
        return type(self).classify is not LoadedModel.classify

    def config_summary(self) -> dict[str, Any]:
        """The configuration values that sources of one merge should share and that the result takes from
        its carrier (architecture family, rope base, attention window, context length...). The run logs
        every difference between the sources and the base in one line each. Default: nothing to compare."""
        return {}

    def clone(self) -> LoadedModel:
        """A deep copy whose weights can be overwritten without touching this model (tokenizer shared)."""
        import copy

        twin = copy.copy(self)
        twin.module = copy.deepcopy(self.module)
        return twin

    def save(self, out_dir: str | Path, *, model_card: str | None = None) -> Path:
        """Write a Hugging Face model directory (safetensors, config, tokenizer or processor)."""
        raise NotImplementedError


class DecoderLayers:
    """Capability of a ``LoadedModel`` whose language model is a stack of decoder layers inside ``module`` that
    a space may run in another order, from several models at once (the ``dfs`` space asks for it with
    ``isinstance(model, DecoderLayers)``). A model offers it by also deriving from this class and giving:
    """

    #: The language model's configuration (``model_type``, ``hidden_size``, ``num_hidden_layers``...).
    text_config: Any
    #: Dotted prefix, inside ``module``, of the decoder that holds the embeddings, the layers and the final
    #: norm (``model.``, ``model.language_model.``).
    decoder_prefix: str
    #: Dotted prefix, inside ``module``, of the output head (``lm_head.``).
    head_prefix: str


class ModelAdapter:
    """Loads one family of models and exposes them as ``LoadedModel``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: Option name -> default: what a source's ``options:`` in the run config may set; given ones reach
    #: ``load`` as keyword arguments.
    options: ClassVar[Mapping[str, Any]] = {}

    def detect(self, config: Mapping[str, Any]) -> bool:
        """True when this adapter loads a model whose ``config.json`` is ``config``."""
        raise NotImplementedError

    def detect_path(self, name_or_path: str) -> bool:
        """True when this adapter claims a model from its path alone (checked before ``config.json`` is read:
        for families without a transformers config, such as OpenCLIP's ``open_clip_config.json``)."""
        return False

    def load(
        self,
        name_or_path: str,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
    ) -> LoadedModel:
        """Load a model from a local directory or a hub id (safetensors only unless ``allow_pickle``)."""
        raise NotImplementedError


class MergeMethod:
    """A tensor-level merge: the merged value of one weight from the same weight of several models.

    ``global_parameters`` and ``model_parameters`` map each accepted parameter to its default
    (``REQUIRED`` when it has none); ``model_parameters`` are given per source model.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    requires_base: ClassVar[bool] = False
    #: True when the method uses a base model if the recipe names one, and merges without one otherwise
    #: (mergekit's nuslerp, multislerp): the engine then hands it the base apart from the models.
    base_optional: ClassVar[bool] = False
    #: True when the method draws random numbers (it is then given a seeded ``torch.Generator``).
    random: ClassVar[bool] = False
    #: True when a ``random`` method's draws are all uniforms in [0, 1) taken with
    #: ``evosuite.merge.sparsify.uniform_``, at most one per entry per source: a search may then keep a
    #: tensor's draws from the first candidate and replay them (``keep_draws``) instead of drawing again.
    replays_draws: ClassVar[bool] = False
    global_parameters: ClassVar[Mapping[str, Any]] = {}
    model_parameters: ClassVar[Mapping[str, Any]] = {}
    #: The per-model parameters an evolutionary search tunes by default (e.g. density and weight).
    search_parameters: ClassVar[tuple[str, ...]] = ()

    def merge(
        self,
        tensors: Sequence[Any],
        base: Any | None,
        model_params: Sequence[Mapping[str, Any]],
        global_params: Mapping[str, Any],
        *,
        generator=None,
    ):
        """Merge one weight. ``tensors`` are the non-base models' values in config order."""
        raise NotImplementedError

    # -- optional: a faster path for the in-memory merger of a search (evosuite.merge.in_memory) ---------
    #: True when ``merge_flat`` takes the sources as task vectors (source - base), which the merger then
    #: computes once per run instead of once per candidate.
    takes_deltas: ClassVar[bool] = False
    #: Optional ``merge_flat(sources, base, model_params, global_params, *, generator, out, work, shape)``:
    #: merge one weight given flat float32 tensors (task vectors when ``takes_deltas``, which it may
    #: overwrite), writing the result into ``out``; ``work`` lends scratch buffers, ``shape`` is the weight's.
    #: None (the default): the merger calls ``merge`` with full-valued tensors of the weight's shape.
    merge_flat: ClassVar[Callable[..., Any] | None] = None
    #: Optional ``check_sources(count)``: raise a one-line ``ConfigError`` when the method cannot merge
    #: ``count`` non-base models (slerp takes exactly two). None (the default): any count of at least one.
    check_sources: ClassVar[Callable[[int], None] | None] = None

    @property
    def takes_base(self) -> bool:
        """Whether the base model is handed apart from the models: required, or optional and named."""
        return self.requires_base or self.base_optional


@dataclass
class BenchmarkResult:
    """Scores of one model on one split of a benchmark."""

    benchmark: str
    split: str
    #: The headline score, in [0, 1] (the higher the better); the evolver maximizes it.
    score: float
    #: Every metric the benchmark reports, by name (the headline included), with intervals if any.
    metrics: dict[str, float] = field(default_factory=dict)
    #: One dict per item: id, prompt, prediction, reference, item score.
    items: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


class Benchmark:
    """A task that prompts a model and scores its outputs.

    Constructed with its options (``data_dir`` points at a local copy of the data; others are the
    benchmark's own, see ``options``). It declares the splits it has and gives two of them a role:
    ``search_split`` feeds the evolver's fitness, ``test_split`` is held out for the final table. When
    both hold the same items (a benchmark with one split), the benchmark is ``contaminated`` and a run
    says so in its log and its ``summary.json``.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: The metric whose value is ``BenchmarkResult.score``.
    metric: ClassVar[str] = ""
    #: What a model must take to be scored on this benchmark (an open string, see ``TEXT``).
    modality: ClassVar[str] = TEXT
    #: Every split the benchmark has, by the names ``items`` and ``evosuite eval --split`` take.
    splits: ClassVar[tuple[str, ...]] = ("test",)
    #: Role "search": the split the evolver's fitness scores (one of ``splits``).
    search_split: ClassVar[str] = "test"
    #: Role "held out": the split the final table scores (one of ``splits``; ``evosuite eval``'s default).
    test_split: ClassVar[str] = "test"
    #: Option name -> default, for validation and ``--help``.
    options: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, **options):
        check_options("benchmark", self.name, options, self.options)
        self.settings = {**self.options, **options}

    def split_source(self, split: str) -> Hashable:
        """What data ``split`` reads: two splits with equal sources hold the same items.

        Default: the split's name. Override when names and data differ: splits taken from several datasets
        (``HubBenchmark.split_sources``), or chosen by an option (``image-classification``'s ``split``).
        """
        return split

    @property
    def contaminated(self) -> bool:
        """True when the search split holds the held-out items, so the final table scores what the search saw."""
        return self.split_source(self.search_split) == self.split_source(self.test_split)

    def items(self, split: str, *, limit: int | None = None, seed: int | None = None) -> list[dict[str, Any]]:
        """The items of a split, each a dict with at least ``id``; a seeded subset when ``seed`` is given."""
        raise NotImplementedError

    def predict(self, model: LoadedModel, items: Sequence[Mapping[str, Any]], *, progress: Progress | None = None):
        """The model's prediction (a string) for each item."""
        raise NotImplementedError

    def score(self, items: Sequence[Mapping[str, Any]], predictions: Sequence[str], *, split: str) -> BenchmarkResult:
        """Score predictions against the items' references."""
        raise NotImplementedError

    def items_by_id(self, split: str, ids: Sequence[Any]) -> list[dict[str, Any]]:
        """The items of ``split`` with these ids, in the given order (``evosuite score`` scores predictions
        made elsewhere). Default: looked up in ``items(split)``; a benchmark with a cheaper way overrides it."""
        from evosuite.errors import DataError

        by_id = {item["id"]: item for item in self.items(split)}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise DataError(f"item id {missing[0]} is not in {self.name}/{split}", "ids are 0-based row indices")
        return [by_id[i] for i in ids]

    #: Optional: ``item_scores(items, predictions) -> list[float]``, each item's contribution in [0, 1] when
    #: the headline score is (or is well approximated by) their mean. A benchmark that defines it gets racing
    #: (``fitness: {racing: true}``: a candidate's evaluation stops once it cannot beat the elite); one that
    #: leaves it None is always scored whole with ``score``. Items are scored independently: the per-item
    #: scores of a chunk must not depend on the other items.
    item_scores: ClassVar[Callable[..., list[float]] | None] = None

    def evaluate(
        self,
        model: LoadedModel,
        split: str,
        *,
        limit: int | None = None,
        seed: int | None = None,
        items: Sequence[Mapping[str, Any]] | None = None,
        progress: Progress | None = None,
    ) -> BenchmarkResult:
        """Predict and score one split (or the given ``items`` of it); benchmarks rarely override this."""
        import time

        start = time.perf_counter()
        if items is None:
            items = self.items(split, limit=limit, seed=seed)
        predictions = self.predict(model, items, progress=progress)
        result = self.score(items, predictions, split=split)
        result.seconds = time.perf_counter() - start
        return result


class MergeSpace:
    """Turns a genome (floats in [0, 1]) into a candidate model built from loaded sources.

    ``sources`` are the models merged; ``base`` their common ancestor (None when the space needs none);
    ``carrier`` is the source whose non-mergeable parts (for a VLM: vision tower, projector) the
    candidate keeps. ``options`` are validated against the class's ``options`` defaults.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options: ClassVar[Mapping[str, Any]] = {}
    needs_base: ClassVar[bool] = False

    def __init__(self, sources: Sequence[LoadedModel], source_names: Sequence[str], base: LoadedModel | None,
                 carrier: LoadedModel, *, seed: int = 0, **options):
        check_options("merge space", self.name, options, self.options)
        self.sources = list(sources)
        self.source_names = list(source_names)
        self.base = base
        self.carrier = carrier
        self.seed = seed
        self.settings = {**self.options, **options}

    @classmethod
    def validate_options(cls, settings: Mapping[str, Any]) -> None:
        """Raise a one-line ``ConfigError`` for option values (``settings``: the defaults updated by the given
        options) that no model is needed to refuse; called when the run is planned, before any work.
        Default: nothing beyond the type checks of ``check_options``."""

    @property
    def dimension(self) -> int:
        """Length of a genome."""
        raise NotImplementedError

    def initial_genome(self) -> list[float]:
        """Where the search starts (the paper's 0.5 everywhere unless the space knows better)."""
        return [0.5] * self.dimension

    def references(self, baselines: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Callable[[], LoadedModel]]:
        """Named reference merges scored in the final table beside the evolved one: the run's ``baselines``
        (fixed recipes, mergekit style: ``{name, method, parameters, method_options}``), or the space's own
        defaults when None (``[]``: none).

        Each value builds its model when called; like ``candidate``, it may reuse the candidate's buffers.
        """
        return {}

    @classmethod
    def check_baselines(cls, baselines: Sequence[Mapping[str, Any]] | None, source_names: Sequence[str],
                        has_base: bool) -> None:
        """Raise a one-line ``ConfigError`` before any work when the space cannot build one of ``baselines``
        (a space that builds no fixed recipe refuses any)."""
        if baselines:
            raise ConfigError(f"merge space {cls.name!r} cannot score fixed baseline recipes",
                              "remove baselines: from the run configuration, or start with a ps stage")

    def baseline_genomes(self, baselines: Sequence[Mapping[str, Any]] | None = None
                         ) -> list[tuple[str, list[float], list[str]]]:
        """``(name, genome, notes)`` for each baseline (as in ``references``) that a genome of this space can
        express: the warm start scores them first. ``notes`` say what the genome could not keep (a value
        clamped to its range, another method approximated). Default: none, so no warm start."""
        return []

    def gene_names(self) -> list[str | None]:
        """A readable name per gene, for messages; None marks a switch whose bounds are no limit of the
        search (a bound warning skips it). Default: ``gene i`` for every gene."""
        return [f"gene {i}" for i in range(self.dimension)]

    def candidate(self, genome: Sequence[float]) -> LoadedModel:
        """The model a genome stands for; it may reuse buffers, so it is valid until the next call."""
        raise NotImplementedError

    def recipe(self, genome: Sequence[float]) -> dict[str, Any]:
        """A readable, YAML-serializable description of what the genome means."""
        raise NotImplementedError

    def mergekit_recipe(self, genome: Sequence[float]) -> tuple[dict[str, Any] | None, str]:
        """Optional: the genome's merge as a mergekit-style recipe from which ``evosuite merge`` rebuilds the
        exported model (written into ``best_recipe.yaml``), or ``(None, why it cannot be one)``."""
        return None, f"the {self.name} space's merges are not a mergekit recipe"

    def export(self, genome: Sequence[float], out_dir: str | Path, *, model_card: str | None = None) -> Path:
        """Write the genome's model as a directory that ``evosuite.models.load_model`` loads back exactly."""
        return self.candidate(genome).save(out_dir, model_card=model_card)

    # -- what the space contributes to reports, model cards and the command line: all optional ---------
    #: Hugging Face tags of the model card of a merge made in this space (default: the space's name).
    card_tags: ClassVar[tuple[str, ...]] = ()
    #: Options that ``evosuite run`` offers as flags: option -> (help, the values it takes or None for any).
    #: ``--<space>-<option> VALUE`` is the same as ``-S <space>.<option>=VALUE``.
    cli_options: ClassVar[Mapping[str, tuple[str, Sequence[str] | None]]] = {}

    @classmethod
    def describe(cls, recipe: Mapping[str, Any]) -> list[tuple]:
        """The report's section on a best ``recipe`` of this space (as ``recipe`` returned it), as report
        blocks: ``("p", markdown)``, ``("table", headers, rows)``, ``("code", text, language)``,
        ``("list", [markdown...])``. Default: the recipe as YAML."""
        import yaml

        return [("code", yaml.safe_dump(dict(recipe), sort_keys=False, allow_unicode=True), "yaml")]

    @classmethod
    def figure(cls, recipe: Mapping[str, Any], *, label: str, colors: Mapping[str, str]):
        """``(matplotlib Figure, caption)`` drawing a best ``recipe`` of stage ``label`` for the report, or None
        (the default: no figure); ``colors`` maps each source and stage name to its colour in the report."""
        return None

    @classmethod
    def post_load(cls, model: LoadedModel, name_or_path: str) -> LoadedModel | None:
        """Called by ``evosuite.models.load_model`` after every load, for each registered space: finish loading
        a result this space exported as more than a standard model directory (the ``dfs`` space re-applies
        the scales it saved beside the weights). Return the model to use instead, or None (the default) to
        keep it as loaded."""
        return None

    def memory_note(self) -> str | None:
        """One line for the run's log on memory the space holds beyond the models and one candidate, by an
        option that trades it for speed (kept task vectors, kept random draws), with its size; None: none."""
        return None

    @classmethod
    def loading_note(cls, recipe: Mapping[str, Any]) -> str | None:
        """Markdown for the model card when a merge exported from ``recipe`` needs more than a plain
        ``transformers`` loader (e.g. saved extras evosuite applies on load); None: a standard directory."""
        return None


class Optimizer:
    """Ask/tell black-box maximizer over genomes in [0, 1]^dimension, deterministic for a seed."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, dimension: int, *, seed: int, x0: Sequence[float] | None = None, **options):
        check_options("optimizer", self.name, options, self.options)
        self.dimension = dimension
        self.seed = seed
        self.x0 = list(x0) if x0 is not None else [0.5] * dimension
        self.settings = {**self.options, **options}

    @property
    def popsize(self) -> int:
        """Genomes per ``ask``."""
        raise NotImplementedError

    def ask(self) -> list[list[float]]:
        """The next generation of genomes, each in [0, 1]^dimension."""
        raise NotImplementedError

    def tell(self, genomes: Sequence[Sequence[float]], fitnesses: Sequence[float]) -> None:
        """Report the fitness (higher is better) of the genomes of the last ``ask``, in order."""
        raise NotImplementedError


class Experiment:
    """A ready-made run, offered by a plugin for ``evosuite run --plugin NAME``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def config(self, *, progress: Callable[[str], None] | None = None, space: str | None = None) -> dict[str, Any]:
        """A complete run configuration (the same dict a ``--config`` YAML file gives).

        ``space`` asks for another merge space than the default (``evosuite run --space``), e.g. ``dfs`` or
        ``ps+dfs``. May do preparatory work first (for example build the tiny zoo), reporting through
        ``progress``.
        """
        raise NotImplementedError
