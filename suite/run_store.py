"""The run directory: everything a run computed, written so that a crash (even ``kill -9``) loses nothing.

Layout::

    config.yaml          the resolved run configuration
    evaluations.jsonl    one line per candidate evaluation (stage, generation, genome, fitness, seconds, error)
    final.jsonl          one line per row of the final held-out table
    best_recipe.yaml     the best genome and what it means
    summary.json         the final table and the best genome
    status.json          running / finished / failed, and why
    model/               the best merged model, a Hugging Face directory

Whole files are replaced atomically (written beside, then renamed); JSONL lines are appended and
fsynced one at a time, and a torn last line left by a crash is ignored when read back.
"""

from __future__ import annotations

import json
import math
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import yaml


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def default_run_dir(root: str | Path = "runs") -> Path:
    return Path(root) / datetime.now().strftime("%Y%m%d-%H%M%S")


class RunStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- creation and reading back ---------------------------------------------------------------
    def create(self, config: dict[str, Any]) -> RunStore:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        self.set_status("running")
        return self

    def exists(self) -> bool:
        return (self.path / "config.yaml").is_file()

    def config(self) -> dict[str, Any]:
        return yaml.safe_load((self.path / "config.yaml").read_text(encoding="utf-8"))

    def status(self) -> dict[str, Any]:
        path = self.path / "status.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def set_status(self, state: str, **details: Any) -> None:
        atomic_write_text(self.path / "status.json",
                          json.dumps({"state": state, "time": time.time(), **details}, indent=2))

    # -- append-only logs ------------------------------------------------------------------------
    def _append(self, name: str, record: dict[str, Any]) -> None:
        line = json.dumps(_jsonable(record), ensure_ascii=False) + "\n"
        path = self.path / name
        if path.is_file() and path.stat().st_size:
            with open(path, "rb") as handle:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    line = "\n" + line  # end a line torn by a crash, so this record stays readable
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def _read(self, name: str) -> Iterator[dict[str, Any]]:
        path = self.path / name
        if not path.is_file():
            return
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a crash: that evaluation simply runs again

    def log_evaluation(self, record: dict[str, Any]) -> None:
        self._append("evaluations.jsonl", record)

    def evaluations(self, stage: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self._read("evaluations.jsonl") if stage is None or r.get("stage") == stage]

    def log_final(self, record: dict[str, Any]) -> None:
        self._append("final.jsonl", record)

    def finals(self) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in self._read("final.jsonl")}

    # -- results ---------------------------------------------------------------------------------
    def write_yaml(self, name: str, data: Any) -> Path:
        path = self.path / name
        atomic_write_text(path, yaml.safe_dump(_jsonable(data), sort_keys=False, allow_unicode=True))
        return path

    def write_json(self, name: str, data: Any) -> Path:
        path = self.path / name
        atomic_write_text(path, json.dumps(_jsonable(data), indent=2, ensure_ascii=False))
        return path

    def read_json(self, name: str) -> Any:
        path = self.path / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
