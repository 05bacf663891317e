"""The run directory: everything a run computed, written so that a crash (even ``kill -9``) loses nothing.

Layout::

    config.yaml          the resolved run configuration
    evaluations.jsonl    one line per candidate evaluation (stage, generation, genome, fitness, seconds, error)
    final.jsonl          one line per row of the final held-out table
    best_recipe.yaml     the best genome and what it means
    summary.json         the final table and the best genome
    status.json          running / finished / failed / interrupted / terminated, and why
    model/               the best merged model, a Hugging Face directory
    .evosuite-run        the marker: evosuite made this directory (and the configuration it was made with)

Only a directory with the marker is a run: evosuite never writes into, resumes or deletes from any other.

Whole files are replaced atomically (written beside, then renamed); JSONL lines are appended and
fsynced one at a time, and a torn last line left by a crash (even one cut inside a UTF-8 character) is
ignored when read back.
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

from evosuite.errors import ConfigError

MARKER = ".evosuite-run"


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:  # disk full or a signal: the old file stays whole, no temporary is left
        tmp.unlink(missing_ok=True)
        raise


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
        """Make a new run directory; refuses a folder that already holds anything (it is not evosuite's)."""
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise ConfigError(f"{str(self.path)!r} already exists and is not an empty folder",
                              "choose a new or empty --run-dir; evosuite does not write into other folders")
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        self.record_config(config)
        self.set_status("running")
        return self

    def exists(self) -> bool:
        """True only for a directory evosuite made (it holds the marker)."""
        return (self.path / MARKER).is_file() and (self.path / "config.yaml").is_file()

    def record_config(self, config: dict[str, Any]) -> None:
        """The configuration the logs were computed with: what `resume` compares config.yaml against."""
        from evosuite import __version__

        atomic_write_text(self.path / MARKER, json.dumps({"evosuite_version": __version__, "config": config},
                                                         indent=2, ensure_ascii=False))

    def recorded_config(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.path / MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data.get("config") if isinstance(data, dict) and isinstance(data.get("config"), dict) else None

    def config(self) -> dict[str, Any]:
        path = self.path / "config.yaml"
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"{str(path)!r} is not readable YAML: {str(exc).splitlines()[0]}",
                              "restore the run's config.yaml (the marker .evosuite-run holds the original)") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{str(path)!r} is not a mapping", "restore the run's config.yaml")
        return data

    def status(self) -> dict[str, Any]:
        path = self.path / "status.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (UnicodeDecodeError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

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

    def _read(self, name: str, required: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
        path = self.path / name
        if not path.is_file():
            return
        for line in path.read_bytes().split(b"\n"):
            try:
                record = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                continue  # a line torn by a crash (maybe inside a character): that evaluation simply runs again
            if isinstance(record, dict) and all(key in record for key in required):
                yield record  # anything else is not a record evosuite wrote: its work is done again

    def log_evaluation(self, record: dict[str, Any]) -> None:
        self._append("evaluations.jsonl", record)

    def evaluations(self, stage: str | None = None) -> list[dict[str, Any]]:
        records = self._read("evaluations.jsonl", _EVALUATION_KEYS)
        return [r for r in records if _valid_evaluation(r) and (stage is None or r.get("stage") == stage)]

    def log_final(self, record: dict[str, Any]) -> None:
        self._append("final.jsonl", record)

    def finals(self) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in self._read("final.jsonl", ("name", "score", "metrics"))
                if isinstance(r["name"], str) and isinstance(r["metrics"], dict)}

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
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ConfigError(f"{str(path)!r} is not valid JSON",
                              f"finish the run again with `evosuite resume {self.path}`") from None


_EVALUATION_KEYS = ("stage", "generation", "index", "genome", "fitness", "seconds", "error")


def _valid_evaluation(record: dict[str, Any]) -> bool:
    """A record the evolver can replay: integers where it counts, a list of numbers as genome."""
    def finite(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    fitness, error = record["fitness"], record["error"]
    scored = finite(fitness) if error is None else isinstance(error, str)
    return (isinstance(record["stage"], str) and isinstance(record["generation"], int)
            and isinstance(record["index"], int) and isinstance(record["genome"], list)
            and all(finite(x) for x in record["genome"]) and finite(record["seconds"]) and scored)
