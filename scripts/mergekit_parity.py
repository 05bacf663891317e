"""mergekit parity: the corpus of recipe shapes (``mergekit_parity_corpus.yaml``) merged by mergekit 0.1.5 and by
``evosuite merge`` over tiny seeded Llama, Mistral, Qwen2, GPT-2 and LLaVA-NeXT models, compared tensor by tensor.

    python scripts/mergekit_parity.py [--mergekit-python PATH] [--json FILE] [--only NAME] [--family NAME]

mergekit runs in its own virtual environment: ``--mergekit-python`` names its interpreter, else one is made
(once) at ``$EVOSUITE_CACHE/mergekit-venv`` with torch 2.14.1 (the wheel pip finds locally) and mergekit 0.1.5.
mergekit runs in that interpreter (``mergekit_parity_driver.py``, all recipes in one process) while evosuite
merges the same recipes here, both on one thread each. The models are written to a temporary directory and
removed afterwards.

Verdicts: ``same`` (same tensor names, shapes and dtypes, every entry within one unit of rounding of the output
dtype), ``differs``, ``evosuite refuses``, ``mergekit refuses``, ``both refuse`` (``not in mergekit`` for a
method marked ``mergekit_lacks``: evosuite alone, checked to repeat); for random methods (DARE,
DELLA) ``same (stats)`` / ``differs (stats)`` compare the fraction of entries that moved off the base and the
mean and spread of the change, and ``evo repeat`` says whether evosuite gave identical tensors twice with one
seed. ``rc`` columns are the exit statuses the two command lines would give (0 merged; mergekit 1 when it
raises; evosuite 2 for a one-line ``Error:``, 1 for a traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "mergekit_parity_corpus.yaml"
DRIVER = HERE / "mergekit_parity_driver.py"
FAMILIES = ("llama", "mistral", "qwen2", "gpt2", "llava_next")
MERGEKIT = "mergekit==0.1.5"
TORCH = "torch==2.14.1"
SEED = 0
#: Entry-wise tolerance (absolute, relative) of "same": float32 summation order, or one rounding of a 16-bit dtype.
TOLERANCE = {"float32": (1e-6, 1e-5), "bfloat16": (1e-6, 2.0 ** -7), "float16": (1e-6, 2.0 ** -10)}


# -- the corpus ----------------------------------------------------------------------------------------------
def load_corpus(path: Path = CORPUS) -> list[dict]:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def resolve(recipe, paths: dict[str, str], layers: int):
    """The recipe with the model placeholders (BASE, A, ...) replaced by paths and {L} by the layer count."""
    if isinstance(recipe, dict):
        return {k: resolve(v, paths, layers) for k, v in recipe.items()}
    if isinstance(recipe, list):
        return [resolve(v, paths, layers) for v in recipe]
    if recipe == "{L}":
        return layers
    if isinstance(recipe, str) and recipe in paths:
        return paths[recipe]
    return recipe


# -- the mergekit environment --------------------------------------------------------------------------------
def mergekit_python(given: str | None) -> str:
    if given:
        check = subprocess.run([given, "-c", "import mergekit"], capture_output=True, text=True)
        if check.returncode != 0:
            sys.exit(f"Error: {given} cannot import mergekit (give the python of a venv with {MERGEKIT}, "
                     "or leave --mergekit-python out to make one)")
        return given
    from evosuite.cache import cache_dir

    venv = cache_dir() / "mergekit-venv"
    python = venv / "bin" / "python"
    if python.is_file() and subprocess.run([str(python), "-c", "import mergekit"], capture_output=True).returncode == 0:
        return str(python)
    print(f"installing {MERGEKIT} into {venv} (once)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run(pip + [TORCH], check=True)  # first, so mergekit's dependency is the local wheel
    subprocess.run(pip + [MERGEKIT], check=True)
    return str(python)


# -- the tiny models -----------------------------------------------------------------------------------------
def build_models(root: Path, families: set[str]) -> dict[str, dict[str, str]]:
    """Family -> placeholder -> model directory; every model seeded."""
    from evosuite.testing import replicas as r
    from evosuite.testing.models import char_tokenizer, write_tiny

    models: dict[str, dict[str, str]] = {}

    def put(family, key, path):
        models.setdefault(family, {})[key] = str(path)

    for family in families:
        d = root / family
        if family == "llama":
            for key, seed in (("BASE", 0), ("A", 1), ("B", 2)):
                put(family, key, r.write_replica(r.LLAMA, d / key, seed=seed, dtype="float32"))
        elif family == "qwen2":
            for key, seed in (("BASE", 0), ("A", 1), ("B", 2)):
                put(family, key, r.write_replica(r.QWEN2, d / key, seed=seed, dtype="float32"))
        elif family == "gpt2":
            for key, seed in (("BASE", 0), ("A", 1), ("B", 2)):
                put(family, key, write_tiny(d / key, "gpt2", seed=seed, layers=4, tokenizer=char_tokenizer(),
                                            n_embd=32, n_head=4, n_positions=64))
        elif family == "llava_next":
            for key, seed in (("BASE", 0), ("A", 1), ("B", 2)):
                put(family, key, r.write_replica(r.LLAVA_NEXT, d / key, seed=seed, dtype="float32"))
        elif family == "mistral":
            # The fine-tunes share the base's weights plus a seeded task vector, as real fine-tunes do.
            for key, name in (("BASE", r.BASE), ("A", r.SHISA), ("B", r.WIZARDMATH), ("ROWS32032", r.ABEL)):
                put(family, key, r.write_replica(name, d / key, dtype="float32"))
            for key, name in (("BASE16", r.BASE), ("A16", r.SHISA), ("B16", r.WIZARDMATH)):
                put(family, key, r.write_replica(name, d / key, dtype="bfloat16"))
            # A's weights under a vocabulary in another order (same tokens, other ids).
            shuffled = d / "SHUFFLED"
            shutil.copytree(d / "A", shuffled)
            for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                (shuffled / f).unlink(missing_ok=True)
            r.mistral_tokenizer(shuffle_seed=11).save_pretrained(shuffled)
            put(family, "SHUFFLED", shuffled)
    return models


def layer_count(model_dir: str) -> int:
    config = json.loads((Path(model_dir) / "config.json").read_text())
    config = config.get("text_config", config)
    return int(config.get("num_hidden_layers") or config.get("n_layer"))


# -- running evosuite ----------------------------------------------------------------------------------------
def evosuite_merge(recipe: dict, out: str) -> dict:
    from evosuite.errors import EvosuiteError
    from evosuite.merge import merge_from_config

    start = time.perf_counter()
    sink = io.StringIO()
    try:
        with contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
            merge_from_config(recipe, out, seed=SEED)
        return {"rc": 0, "error": "", "seconds": time.perf_counter() - start}
    except EvosuiteError as exc:
        return {"rc": 2, "error": str(exc).splitlines()[0][:300], "seconds": time.perf_counter() - start}
    except Exception as exc:  # noqa: BLE001 - a crash is a result too (what the CLI prints as a traceback)
        return {"rc": 1, "error": f"{type(exc).__name__}: {exc}"[:300], "seconds": time.perf_counter() - start}


# -- comparing -----------------------------------------------------------------------------------------------
def tensors(model_dir: str) -> dict:
    from safetensors.torch import load_file

    out = {}
    for shard in sorted(Path(model_dir).glob("*.safetensors")):
        out.update(load_file(str(shard)))
    return out


def compare_values(evo: dict, mk: dict) -> dict:
    import torch

    names_equal = set(evo) == set(mk)
    common = sorted(set(evo) & set(mk))
    meta_equal = names_equal and all(evo[n].shape == mk[n].shape and evo[n].dtype == mk[n].dtype for n in common)
    worst, all_close, off = 0.0, True, 0
    for name in common:
        if evo[name].shape != mk[name].shape:
            all_close = False
            continue
        e, m = evo[name].float(), mk[name].float()
        diff = (e - m).abs()
        if diff.numel():
            worst = max(worst, float(diff.max()))
        atol, rtol = TOLERANCE.get(str(mk[name].dtype).removeprefix("torch."), TOLERANCE["float32"])
        bad = int((diff > atol + rtol * m.abs()).sum())
        off += bad
        all_close &= bad == 0 and bool(torch.isfinite(e).all() == torch.isfinite(m).all())
    only_evo, only_mk = sorted(set(evo) - set(mk)), sorted(set(mk) - set(evo))
    return {"names_equal": names_equal, "meta_equal": meta_equal, "max_diff": worst, "close": all_close,
            "entries_off": off, "only_in_one": (only_evo + only_mk)[:3],
            "only_in_evosuite": len(only_evo), "only_in_mergekit": len(only_mk)}


def change_stats(out: dict, base: dict) -> dict:
    """Over the tensors the output shares with the base: the fraction of entries that moved, and the mean and
    standard deviation of the change."""
    import torch

    moved, total, deltas = 0, 0, []
    for name, tensor in out.items():
        if name in base and base[name].shape == tensor.shape:
            delta = tensor.float() - base[name].float()
            moved += int((delta != 0).sum())
            total += delta.numel()
            deltas.append(delta.reshape(-1))
    if not deltas:
        return {"moved": 0.0, "mean": 0.0, "std": 0.0}
    flat = torch.cat(deltas)
    return {"moved": moved / max(1, total), "mean": float(flat.mean()), "std": float(flat.std())}


def same_stats(e: dict, m: dict) -> bool:
    return (abs(e["moved"] - m["moved"]) <= 0.01 and abs(e["std"] - m["std"]) <= 0.05 * max(m["std"], 1e-12)
            and abs(e["mean"] - m["mean"]) <= 0.05 * max(m["std"], 1e-12))


def verdict(row: dict) -> str:
    mk, evo = row["mk_rc"], row["evo_rc"]
    if mk is None:  # a method mergekit 0.1.5 lacks: only evosuite's own repeatability is checked
        return "evosuite refuses" if evo != 0 else "not in mergekit"
    if mk != 0 and evo != 0:
        return "both refuse"
    if evo != 0:
        return "evosuite refuses"
    if mk != 0:
        return "mergekit refuses"
    if row.get("stats") is not None:
        ok = row["names_equal"] and row["meta_equal"] and same_stats(row["stats"]["evosuite"], row["stats"]["mergekit"])
        return "same (stats)" if ok else "differs (stats)"
    return "same" if row["names_equal"] and row["meta_equal"] and row["close"] else "differs"


# -- the table -----------------------------------------------------------------------------------------------
COLUMNS = ("recipe", "family", "mk rc", "evo rc", "names =", "shapes/dtypes =", "max |diff|", "verdict",
           "evo repeat", "note")


def table_cells(row: dict) -> list[str]:
    both = row["mk_rc"] == 0 and row["evo_rc"] == 0
    note = (row["evo_error"] or row["mk_error"]).splitlines()[0] if (row["evo_error"] or row["mk_error"]) else ""
    if both and row.get("stats") is not None:
        e, m = row["stats"]["evosuite"], row["stats"]["mergekit"]
        note = f"moved {e['moved']:.3f}/{m['moved']:.3f}, std {e['std']:.4g}/{m['std']:.4g} (evo/mk)"
    elif both and row["only_in_one"]:
        note = (f"tensors only in evosuite's output: {row.get('only_in_evosuite', '?')}, only in mergekit's: "
                f"{row.get('only_in_mergekit', '?')} (e.g. " + ", ".join(row["only_in_one"]) + ")")
    elif both and row["entries_off"]:
        note = f"{row['entries_off']} entries off"
    return [row["recipe"], row["family"], "-" if row["mk_rc"] is None else str(row["mk_rc"]), str(row["evo_rc"]),
            _yes(row.get("names_equal")) if both else "", _yes(row.get("meta_equal")) if both else "",
            f"{row['max_diff']:.3g}" if both and row.get("max_diff") is not None else "",
            row["verdict"], _yes(row.get("evo_repeat")), note[:110]]


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mergekit 0.1.5 vs evosuite merge")
    for column in COLUMNS:
        table.add_column(column)
    for row in rows:
        table.add_row(*table_cells(row))
    Console(width=220).print(table)


def markdown_table(rows: list[dict]) -> str:
    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [line(COLUMNS), "|" + "---|" * len(COLUMNS)] + [line(table_cells(row)) for row in rows]
    return "\n".join(lines) + "\n"


def _yes(value) -> str:
    return "" if value is None else ("yes" if value else "NO")


# -- main ----------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mergekit-python", help="an interpreter with mergekit 0.1.5 (default: a cached venv)")
    parser.add_argument("--json", help="also write the table to this JSON file")
    parser.add_argument("--markdown", help="also write the table to this file as Markdown (for the README)")
    parser.add_argument("--only", action="append", default=[], help="run recipes whose name contains this")
    parser.add_argument("--family", action="append", default=[], choices=FAMILIES, help="run only this family")
    parser.add_argument("--corpus", default=str(CORPUS), help="the recipe corpus (YAML)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    python = mergekit_python(args.mergekit_python)
    corpus = [e for e in load_corpus(Path(args.corpus))
              if not args.only or any(o in e["name"] for o in args.only)]
    families = {f for e in corpus for f in e["families"] if not args.family or f in args.family}
    with tempfile.TemporaryDirectory(prefix="mergekit-parity-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):  # transformers' "Writing model shards" bars
            models = build_models(root / "models", families)
        print(f"built {sum(len(m) for m in models.values())} tiny models in {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
        jobs = []
        for entry in corpus:
            for family in entry["families"]:
                if family not in families:
                    continue
                paths = models[family]
                recipe = resolve(entry["recipe"], paths, layer_count(paths["BASE"]))
                job_id = f"{entry['name']}@{family}"
                jobs.append({"id": job_id, "entry": entry, "family": family, "recipe": recipe, "seed": SEED,
                             "out": str(root / "mergekit" / job_id), "evo_out": str(root / "evosuite" / job_id)})
        (root / "jobs.json").write_text(json.dumps([{k: j[k] for k in ("id", "recipe", "out", "seed")}
                                                    for j in jobs if not j["entry"].get("mergekit_lacks")]))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        mergekit_run = subprocess.Popen([python, str(DRIVER), str(root / "jobs.json"), str(root / "mk.json")],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        evo_results = {}
        for job in jobs:
            evo_results[job["id"]] = evosuite_merge(job["recipe"], job["evo_out"])
            repeat = job["entry"].get("random") or job["entry"].get("mergekit_lacks")
            if repeat and evo_results[job["id"]]["rc"] == 0:
                evo_results[job["id"]]["repeat"] = evosuite_merge(job["recipe"], job["evo_out"] + "-repeat")
        _, mk_stderr = mergekit_run.communicate()
        mk_path = root / "mk.json"
        mk_results = json.loads(mk_path.read_text()) if mk_path.is_file() else {}
        if mergekit_run.returncode != 0:
            print(f"mergekit's driver exited {mergekit_run.returncode}: {mk_stderr[-2000:]}", file=sys.stderr)
        rows = [compare(job, evo_results[job["id"]], mk_results.get(job["id"]), root) for job in jobs]
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(rows))
    print(f"{len(rows)} merges compared in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


def compare(job: dict, evo: dict, mk: dict | None, root: Path) -> dict:
    import torch

    entry = job["entry"]
    if entry.get("mergekit_lacks"):
        mk = {"rc": None, "error": "not in mergekit 0.1.5", "seconds": 0.0}
    mk = mk or {"rc": 1, "error": "mergekit's driver did not reach this recipe", "seconds": 0.0}
    models = str(root / "models" / job["family"]) + "/"  # the temporary paths say nothing in the table
    row = {"recipe": entry["name"], "family": job["family"], "random": bool(entry.get("random")),
           "mk_rc": mk["rc"], "evo_rc": evo["rc"], "mk_error": mk["error"].replace(models, ""),
           "evo_error": evo["error"].replace(models, ""),
           "names_equal": None, "meta_equal": None, "max_diff": None, "close": None, "entries_off": None,
           "only_in_one": [], "stats": None, "evo_repeat": None}
    if evo["rc"] == 0 and mk["rc"] == 0:
        e, m = tensors(job["evo_out"]), tensors(job["out"])
        row.update(compare_values(e, m))
        if entry.get("random"):
            base = tensors(job["recipe"]["base_model"])
            row["stats"] = {"evosuite": change_stats(e, base), "mergekit": change_stats(m, base)}
    if "repeat" in evo:
        first, again = tensors(job["evo_out"]), tensors(job["evo_out"] + "-repeat")
        row["evo_repeat"] = set(first) == set(again) and all(torch.equal(first[n], again[n]) for n in first)
    row["verdict"] = verdict(row)
    return row


if __name__ == "__main__":
    sys.exit(main())
