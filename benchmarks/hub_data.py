"""Loading a benchmark's datasets: from the Hugging Face Hub by their real ids, or from local copies.

A local copy of one dataset is either a directory written by ``Dataset.save_to_disk`` /
``DatasetDict.save_to_disk``, or the dataset's data files (parquet, JSON lines) laid out as on the hub:

- ``data/<split>-00000-of-00001.parquet`` (the ``main`` branch of most datasets), or
- ``<config>/<split>/0000.parquet`` (the hub's parquet export, ``refs/convert/parquet``), or
- ``<split>/*.parquet`` / ``<split>-*.parquet`` / ``<split>.parquet`` (or ``.jsonl``), or
- a file at the top whose name holds the split as a word, as the hub reads it
  (``gsm8k-ja-test_250-1319.jsonl`` is split ``test``).

A benchmark's ``data_dir`` is a copy of its one dataset, or a folder of copies, one per hub id at
``<data_dir>/<owner>/<name>`` (what ``huggingface-cli download ID --repo-type dataset --local-dir
<data_dir>/ID`` writes). A benchmark whose splits come from several datasets (``split_sources``) needs
the folder of copies. Either way the rows come through ``datasets`` (``load_dataset("parquet" | "json",
...)`` or ``load_from_disk``), so the features (``Image`` columns included) are the ones stored with the data.
"""

from __future__ import annotations

import random
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

from evosuite.api import Benchmark
from evosuite.errors import DataError

#: Hub branch holding the parquet export of every public dataset (used when a dataset is a legacy script).
PARQUET_EXPORT = "refs/convert/parquet"
_DATA_DIR_FIX = "download a copy and pass --data-dir PATH, or set data_dir in the config"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


#: Data file suffix -> the ``datasets`` builder that reads it.
BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}
#: Characters that end a word in a file name, as the hub's split inference has them (datasets' data_files.py).
_WORD_END = "[-._ 0-9]"


def local_data_files(root: Path, split: str, config: str | None = None) -> list[Path]:
    """The data files of ``split`` in a local copy laid out as on the hub (empty when none match), all of one
    format: the first pattern that matches wins."""
    patterns = [f"data/{split}-*", f"data/{split}.*"]
    for prefix in ([config] if config else []) + ["default", ""]:
        base = f"{prefix}/" if prefix else ""
        patterns += [f"{base}{split}/*", f"{base}{split}-*", f"{base}{split}.*"]
    # A single file named after its content, the split one word of the name (the hub's own rule).
    patterns += [f"{split}{_WORD_END}*", f"*{_WORD_END}{split}{_WORD_END}*"]
    for pattern in patterns:
        files = sorted(f for f in root.glob(pattern) if f.is_file() and f.suffix in BUILDERS)
        if files:
            suffix = files[0].suffix
            return [f for f in files if BUILDERS[f.suffix] == BUILDERS[suffix]]
    return []


def _load_local(root: Path, split: str, config: str | None):
    import datasets

    if not root.is_dir():
        raise DataError(f"data directory {str(root)!r} does not exist", "check the --data-dir path")
    saved = [p for p in ([root / config] if config else []) + [root] if
             (p / "dataset_dict.json").is_file() or (p / "state.json").is_file()]
    if saved:
        try:
            loaded = datasets.load_from_disk(str(saved[0]))
        except Exception as exc:  # noqa: BLE001 - a damaged copy: one line naming it
            raise DataError(f"cannot read the dataset saved in {str(saved[0])!r}: {_first_line(exc)}",
                            "write it again with save_to_disk, or give the hub's parquet files") from None
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(f"the dataset saved in {str(saved[0])!r} has no split {split!r}",
                                f"it has {', '.join(loaded)}; save the {split!r} split there")
            return loaded[split]
        return loaded  # a single split saved on its own
    files = local_data_files(root, split, config)
    if not files:
        layouts = f"data/{split}-00000-of-00001.parquet or {config or 'default'}/{split}/0000.parquet"
        raise DataError(f"no {split!r} split in {str(root)!r}",
                        f"give a directory written by save_to_disk, or the dataset's data files as laid out "
                        f"on the hub ({layouts})")
    try:
        return datasets.load_dataset(BUILDERS[files[0].suffix], data_files={split: [str(f) for f in files]},
                                     split=split)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: one line naming the folder
        raise DataError(f"cannot read the data files of split {split!r} in {str(root)!r}: {_first_line(exc)}",
                        "download them again (they may be truncated)") from None


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP connection to the hub endpoint (True when a proxy is configured: we cannot tell)."""
    import os
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout).close()
        return True
    except OSError:
        return False


@contextmanager
def _offline():
    """Offline mode for one call, so an unreachable hub fails at once (or a cached copy is used)."""
    import datasets
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


def _load_hub(dataset_id: str, split: str, config: str | None):
    import datasets
    from huggingface_hub import constants

    # Without this check an unreachable hub costs half a minute of retries (and log lines) per dataset;
    # offline, a copy in the datasets cache is still used.
    offline = bool(constants.HF_HUB_OFFLINE) or not hub_reachable()
    mode = _offline if offline else nullcontext
    try:
        with mode():
            return datasets.load_dataset(dataset_id, config, split=split)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one actionable line
        error: BaseException = exc
        if "scripts are no longer supported" in str(exc):
            # Legacy script datasets (juletxara/mgsm): read the hub's parquet export of the same data.
            try:
                with mode():
                    return datasets.load_dataset(dataset_id, revision=PARQUET_EXPORT,
                                                 data_dir=config or "default", split=split)
            except Exception as second:  # noqa: BLE001
                error = second
    if offline:
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the hub is unreachable from here"
        raise DataError(f"cannot load {dataset_id!r} ({split}): {why} and no cached copy exists", _DATA_DIR_FIX)
    raise DataError(f"cannot load {dataset_id!r} ({split}) from the Hugging Face Hub: {_first_line(error)}",
                    _DATA_DIR_FIX)


@lru_cache(maxsize=16)
def load_split(dataset_id: str, split: str, config: str | None = None, data_dir: str | None = None):
    """One split as a ``datasets.Dataset``: from ``data_dir`` when given, else from the hub by id."""
    if data_dir:
        dataset = _load_local(Path(data_dir).expanduser(), split, config)
    else:
        dataset = _load_hub(dataset_id, split, config)
    return dataset


def check_columns(dataset, needed: Sequence[str], dataset_id: str, where: str | None) -> None:
    missing = [c for c in needed if c not in dataset.column_names]
    if missing:
        source = repr(where) if where else dataset_id
        raise DataError(f"the data in {source} has no column {missing[0]!r} (columns: "
                        f"{', '.join(dataset.column_names)})", f"point data_dir at a copy of {dataset_id}")


def subset_indices(total: int, *, limit: int | None = None, seed: int | None = None) -> list[int]:
    """Row indices to use, in increasing order: the first ``limit``, or a seeded random ``limit`` of them."""
    if limit is not None and limit < 0:
        raise DataError(f"limit must be at least 0, got {limit}", "give a number of items")
    if limit is None or limit >= total:
        return list(range(total))
    if seed is None:
        return list(range(limit))
    return sorted(random.Random(seed).sample(range(total), limit))


def rows(dataset, indices: Sequence[int]) -> list[tuple[int, dict[str, Any]]]:
    """``(index, row)`` pairs for the given indices (images are decoded only for these rows)."""
    picked = dataset.select(list(indices)) if len(indices) != len(dataset) else dataset
    return list(zip(indices, (dict(row) for row in picked)))


@dataclass(frozen=True)
class SplitSource:
    """Where one split of a benchmark comes from: a hub dataset (id and config) and the split's name there."""

    dataset_id: str
    split: str
    config: str | None = None


class HubBenchmark(Benchmark):
    """A benchmark over Hugging Face datasets: splits loaded by id or from ``data_dir``, rows -> items.

    Subclasses set ``dataset_id`` (and ``dataset_config``), ``columns`` and ``to_item``. Each of ``splits``
    is the split of that name in ``dataset_id``, unless ``split_sources`` says where it comes from: a
    benchmark whose search split is another dataset than its held-out split declares it there, e.g.
    ``{"gsm8k-ja": SplitSource("SakanaAI/gsm8k-ja-test_250-1319", "test")}``.
    """

    dataset_id: ClassVar[str] = ""
    dataset_config: ClassVar[str | None] = None
    #: Benchmark split -> its source, for splits that are not ``dataset_id``'s split of the same name.
    split_sources: ClassVar[Mapping[str, SplitSource]] = {}
    #: Columns a local copy must have (in every source).
    columns: ClassVar[tuple[str, ...]] = ()
    #: Subclasses that add options keep ``data_dir`` among them.
    options: ClassVar[Mapping[str, Any]] = {"data_dir": None}

    def __init__(self, **options):
        super().__init__(**options)
        #: Item id -> the prompt last sent for it, so the per-item results can show it.
        self._prompts: dict[int, str] = {}

    def split_source(self, split: str) -> SplitSource:
        """The dataset, config and hub split that the benchmark's ``split`` reads."""
        if split not in self.splits:
            raise DataError(f"benchmark {self.name!r} has no split {split!r}", f"use one of {', '.join(self.splits)}")
        return self.split_sources.get(split) or SplitSource(self.dataset_id, split, self.dataset_config)

    def dataset_ids(self) -> list[str]:
        """The hub ids of the datasets the splits come from, in the order of ``splits``."""
        return list(dict.fromkeys(self.split_source(split).dataset_id for split in self.splits))

    def local_copy(self, dataset_id: str) -> Path | None:
        """The local copy of ``dataset_id`` under ``data_dir`` (None: load from the hub).

        ``<data_dir>/<owner>/<name>`` when it exists; else ``data_dir`` itself, for a benchmark over one dataset
        or, when ``data_dir`` holds no copies at all, for the benchmark's own dataset (``dataset_id``).
        """
        data_dir = self.settings.get("data_dir")
        if not data_dir:
            return None
        root = Path(data_dir).expanduser()
        nested = root / dataset_id
        if nested.is_dir():
            return nested
        ids = self.dataset_ids()
        if len(ids) == 1 or not root.is_dir():
            return root  # a missing root gets its own error when loaded
        if dataset_id == self.dataset_id and not any((root / other).is_dir() for other in ids):
            return root  # not a folder of copies: a copy of the benchmark's own dataset (e.g. MGSM for eval)
        raise DataError(f"data directory {str(root)!r} has no copy of {dataset_id} (expected in {str(nested)!r})",
                        f"{self.name} reads {' and '.join(ids)}: put each copy at <data_dir>/<owner>/<name>")

    def dataset(self, split: str):
        source = self.split_source(split)
        copy = self.local_copy(source.dataset_id)
        dataset = load_split(source.dataset_id, source.split, source.config, str(copy) if copy else None)
        check_columns(dataset, self.columns, source.dataset_id, str(copy) if copy else None)
        return dataset

    def to_item(self, index: int, row: Mapping[str, Any]) -> dict[str, Any]:
        """One item (``id`` = the 0-based row index, the question, the reference...) from a dataset row."""
        raise NotImplementedError

    def items(self, split, *, limit=None, seed=None):
        dataset = self.dataset(split)
        indices = subset_indices(len(dataset), limit=limit, seed=seed)
        return [self.to_item(i, row) for i, row in rows(dataset, indices)]

    def items_by_id(self, split: str, ids: Sequence[int]) -> list[dict[str, Any]]:
        """The items with these 0-based row ids, in the given order (to score predictions made elsewhere)."""
        dataset = self.dataset(split)
        bad = [i for i in ids if not 0 <= i < len(dataset)]
        if bad:
            raise DataError(f"item id {bad[0]} is outside {self.name}/{split} (ids 0..{len(dataset) - 1})",
                            "ids are 0-based row indices of the split")
        return [self.to_item(i, row) for i, row in rows(dataset, list(ids))]
