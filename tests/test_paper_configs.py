"""The paper's two configurations (examples/paper/*.yaml), run as written on architecture-faithful replicas.

Only the model ids (-> replica paths), the budgets (tiny), the items scored and the device change; the
vocabulary quirks stay: Abel-7B-002's 32032 rows and LLaVA-NeXT's 32064 against the Mistral fine-tunes'
32000, LLaVA-NeXT's Instruct-v0.2 text config against Mistral-7B-v0.1's. Expectations come from those
facts (FACTS.md), not from the code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from evosuite.testing.replicas import (
    ABEL,
    BASE,
    LLAVA_NEXT,
    LLAVA_ROWS,
    MISTRAL_VOCAB,
    QWEN2,
    SHISA,
    WIZARDMATH,
    write_paper_zoo,
)
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "examples" / "paper"
FIXTURES = ROOT / "benchmarks" / "fixtures"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return write_paper_zoo(tmp_path_factory.mktemp("replicas"), names=(BASE, SHISA, WIZARDMATH, ABEL, LLAVA_NEXT,
                                                                         QWEN2))


def as_written(name: str, zoo: dict, tmp_path: Path, **changes) -> Path:
    """The paper config with each hub id replaced by its replica's path, and ``changes`` applied."""
    text = (PAPER / name).read_text()
    for hub_id, path in zoo.items():
        text = text.replace(f"model: {hub_id}", f"model: {path}").replace(f"base_model: {hub_id}",
                                                                          f"base_model: {path}")
    data = yaml.safe_load(text)
    assert all(Path(s["model"]).is_dir() for s in data["sources"]) and Path(data["base_model"]).is_dir()
    # A tiny budget: two items, short answers (random replicas never stop by themselves).
    benchmark = data["benchmark"]
    data["benchmark"] = {**benchmark, "options": {**benchmark.get("options", {}), "max_new_tokens": 24}}
    data.update(device="cpu", search_limit=2, test_limit=2, **changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def run(config: Path, run_dir: Path, data_dir: Path, *extra: str):
    result = run_cli("run", "--config", str(config), "--run-dir", str(run_dir), "--data-dir", str(data_dir),
                     "--plain", *extra)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((run_dir / "summary.json").read_text()), result.stdout


def test_evollm_jp_ps_then_dfs(zoo, tmp_path):
    data = yaml.safe_load((PAPER / "evollm-jp.yaml").read_text())
    options = data["space"]["options"]
    assert options["budgets"] == {"ps": 1000, "dfs": 128 * 100} and options["optimizers"]["dfs"]["popsize"] == 128
    space = {**data["space"], "options": {**options, "budgets": {"ps": 3, "dfs": 3}}}
    config = as_written("evollm-jp.yaml", zoo, tmp_path, budget=6, space=space)
    summary, stdout = run(config, tmp_path / "run", FIXTURES / "mgsm-ja")
    notes = summary["loading"]
    # Abel's 32032 rows: 32000 share a token with shisa-gamma's vocabulary, its 32 padding rows carry none
    assert (f"vocabulary: abel aligned to shisa-gamma's tokenizer: {MISTRAL_VOCAB} rows matched by token, 0 with no "
            f"token of its own taken from base model, 0 dropped") in notes
    assert f"vocabulary: wizardmath already has shisa-gamma's {MISTRAL_VOCAB} rows" in notes
    assert not summary["contaminated"] and summary["search_split"] == "gsm8k-ja" and summary["split"] == "test"
    assert set(summary["stages"]) == {"ps", "ps+dfs"}
    assert set(summary["test_scores"]) >= {"shisa-gamma", "wizardmath", "abel", "ps", "ps+dfs", "merged"}
    assert "vocabulary: abel aligned" in stdout
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = tmp_path / "run" / "model"
    merged = AutoModelForCausalLM.from_pretrained(model_dir)
    assert merged.get_input_embeddings().weight.shape[0] == MISTRAL_VOCAB  # EvoLLM-JP-v1-7B kept 32000
    assert len(AutoTokenizer.from_pretrained(model_dir)) == MISTRAL_VOCAB
    # the exported model is scored like any other
    result = run_cli("eval", "--model", str(model_dir), "--benchmark", "mgsm-ja", "--limit", "1",
                     "--data-dir", str(FIXTURES / "mgsm-ja"), "-O", "max_new_tokens=8",
                     "--output", str(tmp_path / "eval.json"))
    assert result.returncode == 0, result.stderr


def test_evollm_jp_dfs_alone(zoo, tmp_path):
    config = as_written("evollm-jp.yaml", zoo, tmp_path, budget=3, space={"name": "dfs"})
    summary, _ = run(config, tmp_path / "run", FIXTURES / "mgsm-ja")
    # M = 4 replica layers per source, r = 3 repeats, three sources: 36 slots
    assert summary["evaluations"] == 3 and summary["recipe"]["space"] == "dfs"
    assert len(summary["best_genome"]) >= 3 * 4 * 3


def test_evovlm_jp_ps(zoo, tmp_path):
    config = as_written("evovlm-jp.yaml", zoo, tmp_path, budget=3)
    summary, stdout = run(config, tmp_path / "run", FIXTURES / "ja-vg-vqa-500")
    notes = summary["loading"]
    # shisa-gamma's and the base's 32000 tokens are LLaVA-NeXT's first 32000; <image>, <pad> and the padding
    # to 32064 rows are the carrier's own
    for model, filler in (("shisa-gamma", "base model"), ("base model", "llava-1.6-mistral")):
        assert (f"vocabulary: {model} aligned to llava-1.6-mistral's tokenizer: {MISTRAL_VOCAB} rows matched by "
                f"token, {LLAVA_ROWS - MISTRAL_VOCAB} with no token of its own taken from {filler}, 0 dropped") in notes
    # LLaVA-NeXT's text model is Mistral-7B-Instruct-v0.2's (rope 1e6, no window), the others Mistral-7B-v0.1's
    assert any(n.startswith("config: rope_theta differs") and n.endswith("the result keeps llava-1.6-mistral's "
                                                                          "1000000.0") for n in notes)
    assert any(n.startswith("config: sliding_window differs") and "keeps llava-1.6-mistral's None" in n
               for n in notes)
    # the paper's evaluation: one image at the tower's resolution (the replica's 56 px, patch 14: 16 tokens)
    assert any(n.startswith("llava-1.6-mistral: image_mode single: 16 image tokens") for n in notes)
    assert not summary["contaminated"] and summary["search_split"] == "train"
    from transformers import AutoConfig, AutoProcessor, LlavaForConditionalGeneration

    model_dir = tmp_path / "run" / "model"
    assert AutoConfig.from_pretrained(model_dir).model_type == "llava"  # as the released EvoVLM-JP-v1-7B
    merged = LlavaForConditionalGeneration.from_pretrained(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    assert merged.get_input_embeddings().weight.shape[0] == LLAVA_ROWS >= len(processor.tokenizer)
    assert processor.tokenizer.convert_tokens_to_ids("<image>") == 32000
    result = run_cli("eval", "--model", str(model_dir), "--benchmark", "ja-vg-vqa-500", "--limit", "1",
                     "--data-dir", str(FIXTURES / "ja-vg-vqa-500"), "-O", "max_new_tokens=4", "-O", "num_beams=1",
                     "--output", str(tmp_path / "eval.json"))
    assert result.returncode == 0, result.stderr


def test_bad_inputs_on_the_real_path_are_one_line(zoo, tmp_path):
    # a carrier without a vision tower, for an image benchmark
    config = as_written("evovlm-jp.yaml", zoo, tmp_path, carrier="shisa-gamma", budget=1)
    result = run_cli("run", "--config", str(config), "--run-dir", str(tmp_path / "r1"), "--plain",
                     "--data-dir", str(FIXTURES / "ja-vg-vqa-500"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "carrier 'shisa-gamma' is text" in result.stderr
    # a source of another architecture family
    data = yaml.safe_load(config.read_text())
    data["sources"][0]["model"] = str(zoo[QWEN2])
    data["carrier"] = "llava-1.6-mistral"
    config.write_text(yaml.safe_dump(data))
    result = run_cli("run", "--config", str(config), "--run-dir", str(tmp_path / "r2"), "--plain",
                     "--data-dir", str(FIXTURES / "ja-vg-vqa-500"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'shisa-gamma' is a qwen2 model" in result.stderr and result.stderr.count("\n") == 1
