"""Runs over sources whose vocabularies differ, as real merges' do (a LLaVA-NeXT adds ``<image>`` and pads
its rows, Abel-7B-002 has 32032 rows): every model is re-indexed to the carrier's tokenizer by token string.

Expectations are derived by hand from how the variants are built: a row is moved with its token, so the
aligned row of a token is the one the model had for that token; a carrier-only row is the carrier's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from evosuite.errors import ModelError
from evosuite.models import check_mergeable, config_differences, load_model
from evosuite.testing.models import CHARS, SPECIALS, char_tokenizer, text_config, write_llm
from evosuite.vocab_alignment import align_to_carrier
from tests.conftest import run_cli
from tests.test_evolution_run import toy_site  # noqa: F401  (the toy benchmark's fake distribution)

EXTRA = ["<x1>", "<x2>", "<x3>"]


def write_reindexed(src: Path, dst: Path, tokens: list[str], *, rows: int | None = None, seed: int = 7) -> Path:
    """A copy of the model at ``src`` whose tokenizer lists ``tokens`` in this order: each row moves with its
    token; tokens ``src`` lacks and padding rows (up to ``rows``) get seeded random rows."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(src)
    old_vocab = AutoTokenizer.from_pretrained(src).get_vocab()
    rows = rows or len(tokens)
    generator = torch.Generator().manual_seed(seed)
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        old = module.weight.data
        new = torch.randn(rows, old.shape[1], generator=generator)
        for index, token in enumerate(tokens):
            if token in old_vocab:
                new[index] = old[old_vocab[token]]
        module.weight.data = new
    model.config.vocab_size = rows
    model.save_pretrained(dst)
    char_tokenizer(tokens).save_pretrained(dst)
    return dst


def embeddings(model) -> torch.Tensor:
    return model.mergeable_parameters()["embed_tokens.weight"]


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab")
    plain = {name: write_llm(root / name, seed=seed) for name, seed in (("base", 0), ("a", 1), ("b", 2))}
    standard = SPECIALS + CHARS
    # b, reordered (its characters reversed) and with three tokens nobody else has
    shuffled = write_reindexed(plain["b"], root / "b-shuffled", SPECIALS + CHARS[::-1] + EXTRA)
    # a carrier with one added token of its own, rows padded to a multiple of 8 (as LLaVA-NeXT pads to 64)
    padded_rows = -(-(len(standard) + 1) // 8) * 8
    carrier = write_reindexed(plain["a"], root / "a-carrier", standard + ["<image2>"], rows=padded_rows)
    unrelated = write_reindexed(plain["b"], root / "b-unrelated", [f"q{i}" for i in range(len(standard))])
    return {**plain, "b-shuffled": shuffled, "a-carrier": carrier, "b-unrelated": unrelated,
            "padded_rows": padded_rows}


def test_a_reordered_source_gets_its_own_rows_under_the_carriers_ids(variants):
    carrier, original = load_model(str(variants["a"])), load_model(str(variants["b"]))
    shuffled = load_model(str(variants["b-shuffled"]))
    (report,) = align_to_carrier({"a": carrier, "b": shuffled}, "a")
    vocab = len(SPECIALS + CHARS)
    assert (report.merged, report.filled, report.dropped, report.changed) == (vocab, 0, EXTRA, True)
    # row for row, the aligned model is the original b: the permutation and the extra rows are undone
    assert torch.equal(embeddings(shuffled), embeddings(original))
    head = "lm_head.weight"
    assert torch.equal(shuffled.mergeable_parameters()[head], original.mergeable_parameters()[head])
    assert shuffled.tokenizer is carrier.tokenizer and shuffled.module.config.vocab_size == vocab
    check_mergeable({"a": carrier, "b": shuffled})  # now one vocabulary
    assert "3 dropped ('<x1>', '<x2>', '<x3>')" in report.describe("a")


def test_a_token_a_source_lacks_takes_the_bases_row(variants, tmp_path):
    # b without 'z': its task vector must be 0 on 'z' (mergekit fills a missing token from the base)
    standard = SPECIALS + CHARS
    lacking = write_reindexed(variants["b"], tmp_path / "b-no-z", [t for t in standard if t != "z"])
    carrier, base = load_model(str(variants["a-carrier"])), load_model(str(variants["base"]))
    source = load_model(str(lacking))
    reports = align_to_carrier({"b": source, "carrier": carrier, "base model": base}, "carrier", base="base model")
    b_report, base_report = reports
    rows, z = variants["padded_rows"], standard.index("z")
    assert (b_report.merged, b_report.filled, b_report.filled_from) == (len(standard) - 1, rows - len(standard) + 1,
                                                                         "base model")
    assert (base_report.filled, base_report.filled_from) == (rows - len(standard), "carrier")
    assert torch.equal(embeddings(source)[z], embeddings(base)[z])  # the base's row: no change from b there
    original_carrier = load_model(str(variants["a-carrier"]))
    # rows only the carrier has reach b through the aligned base: the carrier's own
    assert torch.equal(embeddings(source)[len(standard):], embeddings(original_carrier)[len(standard):])


def test_carrier_only_and_padding_rows_are_the_carriers(variants):
    carrier, source = load_model(str(variants["a-carrier"])), load_model(str(variants["b"]))
    (report,) = align_to_carrier({"carrier": carrier, "b": source}, "carrier")
    vocab, rows = len(SPECIALS + CHARS), variants["padded_rows"]
    assert (report.rows, report.merged, report.filled, report.dropped) == (rows, vocab, rows - vocab, [])
    original_b = load_model(str(variants["b"]))
    assert torch.equal(embeddings(source)[:vocab], embeddings(original_b))
    assert torch.equal(embeddings(source)[vocab:], embeddings(carrier)[vocab:])  # <image2> and padding


def test_unrelated_tokenizers_and_other_families_are_refused(variants, tmp_path):
    carrier = load_model(str(variants["a"]))
    with pytest.raises(ModelError, match=r"shares only 0 of \d+ tokens with the carrier 'a'"):
        align_to_carrier({"a": carrier, "u": load_model(str(variants["b-unrelated"]))}, "a")
    from transformers import Qwen2Config, Qwen2ForCausalLM

    llama = text_config().to_dict()
    qwen = Qwen2ForCausalLM(Qwen2Config(**{k: llama[k] for k in (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "max_position_embeddings")}, tie_word_embeddings=False))
    qwen.save_pretrained(tmp_path / "qwen")
    char_tokenizer().save_pretrained(tmp_path / "qwen")
    family = r"k_proj.bias' is in 'q' but not in 'a': 'a' is a llama model, 'q' a qwen2 model"
    with pytest.raises(ModelError, match=family):
        check_mergeable({"a": carrier, "q": load_model(str(tmp_path / "qwen"))}, ignore_vocab_rows=True)


def test_config_differences_name_the_value_the_result_keeps(variants, tmp_path):
    changed = tmp_path / "long-context"
    config = json.loads((Path(variants["b"]) / "config.json").read_text())
    for file in Path(variants["b"]).iterdir():
        (changed / file.name).parent.mkdir(exist_ok=True)
        (changed / file.name).write_bytes(file.read_bytes())
    config["max_position_embeddings"] = 512  # the others: 256
    (changed / "config.json").write_text(json.dumps(config))
    models = {"a": load_model(str(variants["a"])), "b": load_model(str(changed)),
              "base model": load_model(str(variants["base"]))}
    assert config_differences(models, "b") == [
        "config: max_position_embeddings differs (a 256, b 512, base model 256); the result keeps b's 512"]
    assert config_differences(models, "a")[0].endswith("the result keeps a's 256")


def test_a_run_over_different_vocabularies_exports_the_carriers(variants, toy_site, tmp_path):  # noqa: F811
    config = {"sources": [{"name": "b", "model": str(variants["b-shuffled"])},
                          {"name": "carrier", "model": str(variants["a-carrier"])}],
              "base_model": str(variants["base"]), "carrier": "carrier", "benchmark": "toy-echo", "budget": 3,
              "seed": 0, "space": {"name": "ps", "options": {"method": "dare_ties"}}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_cli("run", "--config", str(path), "--run-dir", str(tmp_path / "run"), "--plain",
                     env={"PYTHONPATH": str(toy_site)})
    assert result.returncode == 0, result.stderr
    vocab, rows = len(SPECIALS + CHARS), variants["padded_rows"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    notes = summary["loading"]
    assert f"vocabulary: b aligned to carrier's tokenizer: {vocab} rows matched by token, {rows - vocab} with no " \
           f"token of its own taken from base model, 3 dropped ('<x1>', '<x2>', '<x3>')" in notes
    assert f"vocabulary: base model aligned to carrier's tokenizer: {vocab} rows matched by token, " \
           f"{rows - vocab} with no token of its own taken from carrier, 0 dropped" in notes
    assert "vocabulary: b aligned" in result.stdout  # and it was logged as it happened
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run" / "model"
    merged = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    carrier = AutoModelForCausalLM.from_pretrained(variants["a-carrier"])
    assert tokenizer.get_vocab() == AutoTokenizer.from_pretrained(variants["a-carrier"]).get_vocab()
    assert merged.get_input_embeddings().weight.shape[0] == rows >= len(tokenizer)
    for module in ("get_input_embeddings", "get_output_embeddings"):
        out_rows, carrier_rows = getattr(merged, module)().weight, getattr(carrier, module)().weight
        # carrier-only rows (its added token, the padding): exactly the carrier's, whatever the genome
        assert torch.equal(out_rows[vocab:], carrier_rows[vocab:])
        # shared tokens were merged: not the carrier's rows
        assert not torch.allclose(out_rows[:vocab], carrier_rows[:vocab])


def test_an_unnamed_carrier_is_said(variants):
    from evosuite.config import parse_config
    from evosuite.loading import load_sources

    class Capture:
        def __init__(self):
            self.lines = []

        def message(self, text):
            self.lines.append(text)

    config = parse_config({"sources": [str(variants["a"]), str(variants["b-shuffled"])], "benchmark": "mgsm-ja"})
    capture = Capture()
    _, _, notes = load_sources(config, capture.message)
    said = "carrier: b-shuffled (none named, so the last source; the result keeps its tokenizer"
    assert any(line.startswith(said) for line in notes) and any(line.startswith(said) for line in capture.lines)
    # the other source was re-indexed to the unnamed carrier's tokenizer
    assert f"vocabulary: a aligned to b-shuffled's tokenizer: {len(SPECIALS + CHARS)} rows matched by token" \
        in " ".join(notes)
