"""``evosuite merge`` with mergekit's vocabulary semantics: ``tokenizer_source`` and the ``tokenizer:`` block.

Three tiny Llamas with char tokenizers whose vocabularies differ (see ``models``). Every expected row is
computed here from the sources' rows looked up by token string, with mergekit 0.1.5's rules written
out by hand (mergekit/tokenizer/build.py and embed.py): a model lacking a token gets, for that row, the
row of the lone model that has it, else the base's, else the mean of those that have it; then the merge
method merges the aligned rows. Ids of a union: the base's, then the others' ordinary tokens, then their
added tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from evosuite.cli import main
from evosuite.errors import ConfigError, EvosuiteError, ModelError
from evosuite.merge import load_config, merge_from_config
from evosuite.merge.vocabulary import (
    ABSENT,
    RowSource,
    Vocabulary,
    default_rows,
    padded_rows,
    remap_token_ids,
    row_map,
    union_additions,
)
from evosuite.testing.models import CHARS, SPECIALS, write_llm, write_vlm

DEFAULT = SPECIALS + CHARS  # 67 tokens
#: A: the default order plus an added token "xy" (68 rows); B: the default order reversed plus "ab"
#: (68 rows); C: the default order without "z", plus "xy" (67 rows).
ORDERS = {"a": (DEFAULT, ("xy",)), "b": (DEFAULT[::-1], ("ab",)),
          "c": ([t for t in DEFAULT if t != "z"], ("xy",))}
EMBEDS = ("model.embed_tokens.weight", "lm_head.weight")


def vocab_of(name):
    tokens, added = ORDERS[name]
    return {tok: i for i, tok in enumerate(list(tokens) + list(added))}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab-models")
    tensors = {}
    for seed, (name, (tokens, added)) in enumerate(ORDERS.items(), start=1):
        write_llm(root / name, seed=seed, tokens=list(tokens), added=added)
        tensors[name] = load_file(str(root / name / "model.safetensors"))
    return root, tensors


def merged(out: Path):
    index = json.loads((out / "model.safetensors.index.json").read_text())
    result = {}
    for file in set(index["weight_map"].values()):
        result.update(load_file(str(out / file)))
    return result


def linear(root, base, *names, **extra):
    return {"merge_method": "linear", "base_model": str(root / base),
            "models": [{"model": str(root / n), "parameters": {"weight": 0.5}} for n in names], **extra}


def row(tensors, name, tensor, token):
    return tensors[name][tensor][vocab_of(name)[token]]


def load_with_transformers(out):
    from transformers import AutoTokenizer, LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)


# -- the pure rules ----------------------------------------------------------------------------------------
def test_row_map_matches_by_token_string_and_marks_missing_rows():
    target = {"<s>": 0, "a": 1, "b": 2, "new": 3}
    source = {"b": 0, "<s>": 1, "a": 2, "past": 5}
    assert row_map(target, source, 5) == [1, 2, 0, ABSENT, ABSENT]  # row 4 is padding
    assert row_map(target, source, 4, source_rows=2) == [1, ABSENT, 0, ABSENT]  # "a" is at id 2 >= 2 rows


def test_union_appends_ordinary_tokens_then_added_ones_first_occurrence_wins():
    base = Vocabulary({"a": 0, "b": 1, "<s>": 2}, frozenset({"<s>"}))
    one = Vocabulary({"<tool>": 0, "c": 1, "a": 2}, frozenset({"<tool>"}))
    two = Vocabulary({"d": 0, "c": 1, "<eot>": 2}, frozenset({"<eot>"}))
    assert union_additions(base, [one, two]) == ["c", "d", "<tool>", "<eot>"]


def test_default_rows_follow_mergekits_rule():
    maps = {"base": [0, ABSENT, 1, ABSENT, 2], "x": [0, 3, ABSENT, ABSENT, 4], "y": [1, 2, ABSENT, ABSENT, ABSENT]}
    assert default_rows(maps, "base", 5) == [
        None,                                           # every model has it
        RowSource("mean", (("x", 3), ("y", 2))),        # two have it, the base does not
        RowSource("copy", (("base", 1),)),              # only the base
        RowSource("zero"),                              # none
        RowSource("copy", (("base", 2),)),              # base and x have it: the base's row wins
    ]
    assert default_rows(maps, "base", 2, {0: RowSource("zero")})[0] == RowSource("zero")


def test_padding_and_token_id_remap():
    assert [padded_rows(n, 8) for n in (64, 65, 69)] == [64, 72, 72] and padded_rows(69, None) == 69
    config = {"bos_token_id": 1, "eos_token_id": [2, 9], "text_config": {"pad_token_id": 0}, "hidden_size": 1}
    old, new = {"<pad>": 0, "<s>": 1, "</s>": 2}, {"</s>": 0, "<s>": 5, "<pad>": 7}
    assert remap_token_ids(config, old, new) == {"bos_token_id": 5, "eos_token_id": [0, 9],
                                                 "text_config": {"pad_token_id": 7}, "hidden_size": 1}


# -- merges of tiny models ----------------------------------------------------------------------------------
def test_union_rows_follow_token_strings(models, tmp_path):
    root, src = models
    out = merge_from_config(linear(root, "a", "a", "b", tokenizer_source="union"), tmp_path / "out")
    result = merged(out)
    expected_tokens = DEFAULT + ["xy", "ab"]  # A's ids, then B's token A lacks
    for tensor in EMBEDS:
        assert result[tensor].shape == (69, 32)
        for i, token in enumerate(expected_tokens):
            if token == "xy":
                want = row(src, "a", tensor, "xy")  # only A has it: B's row is A's, so the mean is A's
            elif token == "ab":
                want = row(src, "b", tensor, "ab")
            else:
                want = 0.5 * row(src, "a", tensor, token) + 0.5 * row(src, "b", tensor, token)
            torch.testing.assert_close(result[tensor][i], want, msg=f"{tensor} row {i} ({token!r})")
    name = "model.layers.1.mlp.up_proj.weight"  # not an embedding: merged as it is
    torch.testing.assert_close(result[name], 0.5 * src["a"][name] + 0.5 * src["b"][name])
    model, tokenizer = load_with_transformers(out)
    assert tokenizer.convert_ids_to_tokens(list(range(69))) == expected_tokens
    assert len(tokenizer) == 69 == model.config.vocab_size == model.get_input_embeddings().weight.shape[0]
    assert tokenizer("zab").input_ids == [DEFAULT.index("z"), 68]


def test_base_keeps_the_base_vocabulary(models, tmp_path):
    root, src = models
    out = merge_from_config(linear(root, "b", "a", "b", tokenizer_source="base"), tmp_path / "out")
    result = merged(out)
    b_tokens = DEFAULT[::-1] + ["ab"]  # A's "xy" is dropped
    for tensor in EMBEDS:
        assert result[tensor].shape == (68, 32)
        for i, token in enumerate(b_tokens):
            want = (row(src, "b", tensor, "ab") if token == "ab"
                    else 0.5 * row(src, "a", tensor, token) + 0.5 * row(src, "b", tensor, token))
            torch.testing.assert_close(result[tensor][i], want, msg=f"{tensor} row {i} ({token!r})")
    _, tokenizer = load_with_transformers(out)
    assert tokenizer.convert_ids_to_tokens(list(range(68))) == b_tokens and len(tokenizer) == 68


def test_model_source_writes_its_tokenizer_and_moves_the_config_token_ids(models, tmp_path):
    root, src = models
    out = merge_from_config(linear(root, "a", "a", "b", tokenizer_source=str(root / "b")), tmp_path / "out")
    result = merged(out)
    b_tokens = DEFAULT[::-1] + ["ab"]
    for i in (0, 30, 64, 67):
        token = b_tokens[i]
        want = (row(src, "b", "lm_head.weight", "ab") if token == "ab"
                else 0.5 * row(src, "a", "lm_head.weight", token) + 0.5 * row(src, "b", "lm_head.weight", token))
        torch.testing.assert_close(result["lm_head.weight"][i], want)
    model, tokenizer = load_with_transformers(out)
    assert tokenizer.convert_ids_to_tokens(list(range(68))) == b_tokens
    # the config is A's, but its special ids must name the same tokens in B's order (66 - i reversed)
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (65, 64, 66)
    assert model.config.bos_token_id == tokenizer.bos_token_id


def test_task_arithmetic_over_three_vocabularies(models, tmp_path):
    root, src = models
    cfg = {"merge_method": "task_arithmetic", "base_model": str(root / "c"), "tokenizer_source": "union",
           "models": [{"model": str(root / "a"), "parameters": {"weight": 1.0}},
                      {"model": str(root / "b"), "parameters": {"weight": 0.5}}]}
    result = merged(merge_from_config(cfg, tmp_path / "out"))
    tokens = ORDERS["c"][0] + ["xy", "z", "ab"]  # C's 67, then A's ordinary "z", then B's added "ab"
    for tensor in EMBEDS:
        emb = result[tensor]
        assert emb.shape == (69, 32)

        for i in (0, 5, 40):
            a, b, c = (row(src, name, tensor, tokens[i]) for name in "abc")
            torch.testing.assert_close(emb[i], c + 1.0 * (a - c) + 0.5 * (b - c))
        # A and the base have "xy": B takes the base's row (a zero task vector), so the result is A's row
        torch.testing.assert_close(emb[66], row(src, "a", tensor, "xy"))
        a_z, b_z = row(src, "a", tensor, "z"), row(src, "b", tensor, "z")
        mean = (a_z + b_z) / 2  # the base lacks "z": its row is the mean of A's and B's
        torch.testing.assert_close(emb[67], mean + (a_z - mean) + 0.5 * (b_z - mean))
        torch.testing.assert_close(emb[68], row(src, "b", tensor, "ab"))


def test_tokenizer_block_tokens_and_padding(models, tmp_path):
    root, src = models
    block = {"source": "union", "pad_to_multiple_of": 8,
             "tokens": {"<s>": {"source": str(root / "b"), "force": True},
                        "<new>": {"source": {"kind": "model_token", "model": str(root / "a"), "token": "q"}},
                        "k": {"source": {"kind": "zero"}, "force": True}}}
    out = merge_from_config(linear(root, "a", "a", "b", tokenizer=block), tmp_path / "out")
    emb = merged(out)["model.embed_tokens.weight"]
    tokens = DEFAULT + ["xy", "ab", "<new>"]
    assert emb.shape == (72, 32)  # 70 tokens rounded up to a multiple of 8
    t = "model.embed_tokens.weight"
    torch.testing.assert_close(emb[DEFAULT.index("<s>")], row(src, "b", t, "<s>"))  # forced from B in both
    torch.testing.assert_close(emb[69], row(src, "a", t, "q"))  # no model has "<new>": A's "q" in both
    assert torch.count_nonzero(emb[DEFAULT.index("k")]) == 0
    # padding: each model's rows averaged over its 70 aligned token rows, then merged 0.5 / 0.5
    aligned = {}
    for name in "ab":
        rows = []
        for token in tokens:
            if token == "<s>":
                rows.append(row(src, "b", t, "<s>"))
            elif token == "k":
                rows.append(torch.zeros(32))
            elif token == "<new>":
                rows.append(row(src, "a", t, "q"))
            elif token in vocab_of(name):
                rows.append(row(src, name, t, token))
            else:  # the one model that has it
                rows.append(row(src, "a" if token == "xy" else "b", t, token))
        aligned[name] = torch.stack(rows)
    want = 0.5 * aligned["a"].mean(0) + 0.5 * aligned["b"].mean(0)
    for i in (70, 71):
        torch.testing.assert_close(emb[i], want)
    model, tokenizer = load_with_transformers(out)
    assert len(tokenizer) == 70 and model.config.vocab_size == 72 and tokenizer.convert_tokens_to_ids("<new>") == 69


def test_without_tokenizer_source_rows_merge_by_index(models, tmp_path):
    root, src = models  # A and B both have 68 rows, in different orders: mergekit merges them by index
    result = merged(merge_from_config(linear(root, "a", "a", "b"), tmp_path / "out"))
    t = "model.embed_tokens.weight"
    torch.testing.assert_close(result[t], 0.5 * src["a"][t] + 0.5 * src["b"][t])
    assert json.loads((tmp_path / "out" / "tokenizer.json").read_text()) == \
        json.loads((root / "a" / "tokenizer.json").read_text())


def test_llava_language_model_embeddings_are_aligned(tmp_path):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    write_vlm(tmp_path / "a", seed=1)
    write_vlm(tmp_path / "b", seed=2, tokens=SPECIALS + CHARS[::-1], added=("ab",))
    src = {n: load_file(str(tmp_path / n / "model.safetensors")) for n in "ab"}
    b_vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS[::-1] + ["ab"])}
    out = merge_from_config(linear(tmp_path, "a", "a", "b", tokenizer_source="union"), tmp_path / "out")
    result = merged(out)
    heads = [n for n in result if n.endswith(("embed_tokens.weight", "lm_head.weight"))]
    assert len(heads) == 2
    for name in heads:
        assert result[name].shape == (68, 32)
        for i, token in enumerate(DEFAULT):
            want = 0.5 * src["a"][name][i] + 0.5 * src["b"][name][b_vocab[token]]
            torch.testing.assert_close(result[name][i], want)
        torch.testing.assert_close(result[name][67], src["b"][name][67])
    pos = next(n for n in result if n.endswith("position_embedding.weight"))  # vision: not a token table
    torch.testing.assert_close(result[pos], 0.5 * src["a"][pos] + 0.5 * src["b"][pos])
    model = LlavaForConditionalGeneration.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert model.config.text_config.vocab_size == 68 and len(processor.tokenizer) == 68
    assert model.config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<image>") == 4


# -- refusals: one line each ------------------------------------------------------------------------------
def test_different_vocab_sizes_without_a_tokenizer_source_are_refused(models, tmp_path, capsys):
    root, _ = models
    path = tmp_path / "merge.yaml"
    path.write_text(json.dumps(linear(root, "a", "a", "c")))  # 68 and 67 rows
    with pytest.raises(SystemExit) as info:
        main(["merge", str(path), str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and err.startswith("Error: ") and "\n" not in err
    assert "different vocabulary sizes" in err and "tokenizer_source" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, message", [
    ({"tokenizer_source": "union", "tokenizer": {"source": "base"}}, "both `tokenizer_source` and `tokenizer`"),
    ({"tokenizer": {"tokens": {"q": {"force": True}}}}, "has no `source`"),
    ({"tokenizer": {"tokens": {"q": {"source": {"kind": "model_token", "model": "A", "token": "q", "token_id": 3}}}}},
     "exactly one of `token` and `token_id`"),
    ({"tokenizer": {"tokens": {"q": {"source": "/elsewhere"}}}}, "which the merge does not use"),
    ({"tokenizer": {"tokens": {"q": {"source": {"kind": "one"}}}}}, "is not a row source"),
    ({"tokenizer": {"pad_to_multiple_of": 0}}, "not a positive integer"),
    ({"tokenizer": {"sorce": "base"}}, "unknown key 'sorce'"),
    ({"tokenizer_source": ["a", "b"]}, "is not a tokenizer source"),
])
def test_bad_tokenizer_config_is_one_line(models, extra, message):
    root, _ = models
    cfg = linear(root, "a", "a", "b", **extra)
    for tokens in (cfg.get("tokenizer") or {}).get("tokens", {}).values():  # "A" stands for model a's path
        if isinstance(tokens.get("source"), dict) and tokens["source"].get("model") == "A":
            tokens["source"]["model"] = str(root / "a")
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_bad_token_rows_and_missing_tokenizers_are_one_line(models, tmp_path):
    root, _ = models
    block = {"tokens": {"q": {"source": {"kind": "model_token", "model": str(root / "a"), "token": "ab"}}}}
    with pytest.raises(ModelError, match="has no row for token 'ab'"):
        merge_from_config(linear(root, "a", "a", "b", tokenizer=block), tmp_path / "out")
    bare = tmp_path / "bare"
    bare.mkdir()
    for file in ("model.safetensors", "config.json"):
        (bare / file).write_bytes((root / "a" / file).read_bytes())
    cfg = {**linear(root, "a", "a", "b", tokenizer_source="union"), "base_model": str(bare)}
    cfg["models"][0]["model"] = str(bare)
    with pytest.raises(EvosuiteError) as info:
        merge_from_config(cfg, tmp_path / "out")
    assert "has no tokenizer" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_base_tokens_past_its_rows_are_stripped(models, tmp_path):
    from evosuite.testing.models import char_tokenizer

    root, src = models
    longer = tmp_path / "d"  # A's weights (68 rows) beside a tokenizer with one more token, "pq" at id 68
    longer.mkdir()
    for file in ("model.safetensors", "config.json"):
        (longer / file).write_bytes((root / "a" / file).read_bytes())
    char_tokenizer(DEFAULT, ("xy", "pq")).save_pretrained(longer)
    cfg = linear(root, "a", "b", tokenizer_source="base")
    cfg["base_model"] = str(longer)
    cfg["models"].insert(0, {"model": str(longer), "parameters": {"weight": 0.5}})
    out = merge_from_config(cfg, tmp_path / "out")
    emb = merged(out)["model.embed_tokens.weight"]
    model, tokenizer = load_with_transformers(out)
    assert len(tokenizer) == 68 and "pq" not in tokenizer.get_vocab() and emb.shape == (68, 32)
    t = "model.embed_tokens.weight"
    torch.testing.assert_close(emb[67], row(src, "a", t, "xy"))  # only the base has "xy"
    torch.testing.assert_close(emb[9], 0.5 * row(src, "a", t, DEFAULT[9]) + 0.5 * row(src, "b", t, DEFAULT[9]))


def test_a_longer_tokenizer_source_resizes_the_embeddings(models, tmp_path):
    from evosuite.testing.models import char_tokenizer

    root, src = models
    longer = tmp_path / "tok"  # a tokenizer alone: A's 68 tokens, then "pq" and "zz", which no model has
    char_tokenizer(DEFAULT, ("xy", "pq", "zz")).save_pretrained(longer)
    out = merge_from_config(linear(root, "a", "a", "b", tokenizer_source=str(longer)), tmp_path / "out")
    result = merged(out)
    for tensor in EMBEDS:
        assert result[tensor].shape == (70, 32)  # resized to the tokenizer, as mergekit does
        assert torch.count_nonzero(result[tensor][68:]) == 0  # no model has them: zero rows
        torch.testing.assert_close(result[tensor][67], row(src, "a", tensor, "xy"))  # only A has "xy"
        i = DEFAULT.index("q")
        torch.testing.assert_close(result[tensor][i],
                                   0.5 * row(src, "a", tensor, "q") + 0.5 * row(src, "b", tensor, "q"))
    model, tokenizer = load_with_transformers(out)
    assert len(tokenizer) == 70 == model.config.vocab_size
