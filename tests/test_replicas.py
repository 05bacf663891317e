"""The architecture-faithful replicas (evosuite.testing.replicas) and the vlm adapter's image_mode option.

Expected values are the real checkpoints' facts (/work/shared/paper/FACTS.md) or worked by hand in comments,
never read back from the module under test.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from evosuite.config import parse_config
from evosuite.errors import ConfigError, ModelError
from evosuite.loading import load_sources
from evosuite.models import check_mergeable, load_model
from evosuite.testing.replicas import REPLICAS, write_paper_zoo, write_replica

MISTRAL, SHISA, WIZARD, ABEL = ("mistralai/Mistral-7B-v0.1", "augmxnt/shisa-gamma-7b-v1",
                                "WizardLMTeam/WizardMath-7B-V1.1", "GAIR/Abel-7B-002")
LLAVA, LLAMA, QWEN2 = "llava-hf/llava-v1.6-mistral-7b-hf", "meta-llama/Llama-2-7b-hf", "Qwen/Qwen2-0.5B"
MISTRAL_FAMILY = (MISTRAL, SHISA, WIZARD, ABEL, LLAVA)
JAPANESE = "問題：りんごが3個と、みかんが12個あります。合わせて何個ですか？答えは 15 個です。"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return write_paper_zoo(tmp_path_factory.mktemp("paper-zoo"))


def _config(path) -> dict:
    return json.loads((path / "config.json").read_text())


def _text_config(path) -> dict:
    config = _config(path)
    return config.get("text_config", config)


def _tokenizer(path):
    from transformers import AutoProcessor, AutoTokenizer

    if "vision_config" in _config(path):
        return AutoProcessor.from_pretrained(path).tokenizer
    return AutoTokenizer.from_pretrained(path)


def test_the_zoo_is_laid_out_by_hub_id(zoo, tmp_path):
    assert set(zoo) == set(REPLICAS) == {MISTRAL, SHISA, WIZARD, ABEL, LLAVA, LLAMA, QWEN2}
    for name, path in zoo.items():
        assert path == path.parents[1] / name and (path / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="no replica of 'org/unknown'"):
        write_replica("org/unknown", tmp_path / "x")


@pytest.mark.parametrize("name, model_type, rows, tokens", [
    # FACTS.md: 32000 rows for Mistral-7B-v0.1, shisa-gamma and WizardMath, 32032 for Abel-7B-002, 32064 for
    # llava-v1.6-mistral-7b-hf (32000 + <image> + <pad>, padded to a multiple of 64); Llama-2-7b: 32000.
    (MISTRAL, "mistral", 32000, 32000), (SHISA, "mistral", 32000, 32000), (WIZARD, "mistral", 32000, 32000),
    (ABEL, "mistral", 32032, 32000), (LLAVA, "llava_next", 32064, 32002), (LLAMA, "llama", 32000, 32000),
    # Qwen2 scaled down: 1021 pieces + 3 specials in 1152 rows (a multiple of 128, like 151936).
    (QWEN2, "qwen2", 1152, 1024),
])
def test_each_replica_loads_with_plain_transformers_classes(zoo, name, model_type, rows, tokens):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    path = zoo[name]
    auto = AutoModelForImageTextToText if name == LLAVA else AutoModelForCausalLM
    model = auto.from_pretrained(path)
    assert model.config.model_type == model_type
    assert model.get_input_embeddings().weight.shape[0] == rows == _text_config(path)["vocab_size"]
    assert len(_tokenizer(path)) == tokens
    # stored in bfloat16, as the real checkpoints are
    assert _config(path)["dtype"] == "bfloat16"
    with safe_open(path / "model.safetensors", "pt") as weights:
        assert {weights.get_slice(k).get_dtype() for k in weights.keys()} == {"BF16"}


def test_mistral_config_quirks(zoo):
    base = _config(zoo[MISTRAL])
    # Mistral-7B-v0.1: rope_theta 1e4, sliding window 4096, 32768 positions, GQA, bos 1 / eos 2, untied head
    assert base["rope_parameters"]["rope_theta"] == 1e4 and base["sliding_window"] == 4096
    assert base["max_position_embeddings"] == 32768
    assert base["num_key_value_heads"] < base["num_attention_heads"]
    assert (base["bos_token_id"], base["eos_token_id"], base["tie_word_embeddings"]) == (1, 2, False)
    for name in (SHISA, WIZARD, ABEL):
        config = _config(zoo[name])
        assert {k: config[k] for k in ("rope_parameters", "sliding_window", "max_position_embeddings")} == \
            {k: base[k] for k in ("rope_parameters", "sliding_window", "max_position_embeddings")}
    # LLaVA-NeXT's text model is Mistral-7B-Instruct-v0.2's: rope_theta 1e6, no sliding window
    llava = _config(zoo[LLAVA])
    assert llava["text_config"]["rope_parameters"]["rope_theta"] == 1e6
    assert llava["text_config"]["sliding_window"] is None
    assert llava["vision_feature_layer"] == -2 and llava["image_token_index"] == 32000
    assert llava["vision_config"]["model_type"] == "clip_vision_model"
    # the real pinpoints [[336,672],[672,336],[672,672],[1008,336],[336,1008]] scaled to a 56 px tower (1/6)
    assert llava["vision_config"]["image_size"] == 56 and llava["vision_config"]["patch_size"] == 14
    assert llava["image_grid_pinpoints"] == [[h * 56 // 336, w * 56 // 336] for h, w in
                                             [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]]
    # Llama-2: no GQA, 4096 positions, no sliding window; Qwen2: tied embeddings, rope_theta 1e6
    llama, qwen = _config(zoo[LLAMA]), _config(zoo[QWEN2])
    assert llama["num_key_value_heads"] == llama["num_attention_heads"] and llama["max_position_embeddings"] == 4096
    assert "sliding_window" not in llama
    assert qwen["tie_word_embeddings"] is True and qwen["rope_parameters"]["rope_theta"] == 1e6


def test_added_and_special_tokens_are_the_real_ones(zoo):
    llava = _tokenizer(zoo[LLAVA])
    assert llava.convert_tokens_to_ids(["<image>", "<pad>"]) == [32000, 32001]
    assert llava.pad_token == "<pad>" and llava.pad_token_id == 32001
    assert _tokenizer(zoo[WIZARD]).pad_token == "<s>"  # WizardMath-7B-V1.1 pads with <s>
    for name in (MISTRAL, SHISA, ABEL, LLAMA):
        tokenizer = _tokenizer(zoo[name])
        assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3, 258]) == ["<unk>", "<s>", "</s>", "<0x00>", "<0xFF>"]
    qwen = _tokenizer(zoo[QWEN2])
    assert qwen.bos_token is None and qwen.eos_token == qwen.pad_token == "<|endoftext|>"
    assert qwen.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [1021, 1022, 1023]


@pytest.mark.parametrize("name", [MISTRAL, ABEL, LLAVA, LLAMA, QWEN2])
def test_japanese_text_round_trips(zoo, name):
    tokenizer = _tokenizer(zoo[name])
    ids = tokenizer(JAPANESE).input_ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == JAPANESE
    assert len(ids) < len(JAPANESE.encode())  # kana and common kanji are pieces, not all bytes


def test_mistral_tokenizer_pieces_and_byte_fallback(zoo):
    tokenizer = _tokenizer(zoo[MISTRAL])
    ids = tokenizer("鬱").input_ids
    # <s>, the word-start piece, then "鬱" (not in the vocabulary) as its UTF-8 bytes E9 AC B1 at 3 + byte
    assert ids[0] == 1 and ids[-3:] == [3 + 0xE9, 3 + 0xAC, 3 + 0xB1]
    assert tokenizer.convert_ids_to_tokens(tokenizer("答えは何ですか").input_ids)[1:] == \
        ["▁", "答え", "は", "何", "ですか"]


def test_the_mistral_family_shares_its_first_32000_token_strings(zoo):
    reference = _tokenizer(zoo[MISTRAL]).convert_ids_to_tokens(list(range(32000)))
    assert len(set(reference)) == 32000
    for name in (SHISA, WIZARD, ABEL, LLAVA):
        assert _tokenizer(zoo[name]).convert_ids_to_tokens(list(range(32000))) == reference
    llama = _tokenizer(zoo[LLAMA]).convert_ids_to_tokens(list(range(32000)))
    assert llama[:259] == reference[:259] and llama != reference and set(llama) == set(reference)


def _weights(path) -> dict[str, torch.Tensor]:
    with safe_open(path / "model.safetensors", "pt") as f:
        # a VLM's language model is stored as the hub's llava checkpoints store it: language_model.model.*
        return {k.removeprefix("language_model.").removeprefix("model."): f.get_tensor(k).float() for k in f.keys()}


def test_finetunes_are_the_base_plus_a_seeded_task_vector(zoo, tmp_path):
    base = _weights(zoo[MISTRAL])
    deltas = {}
    for name in (SHISA, WIZARD, ABEL, LLAVA):
        tuned = _weights(zoo[name])
        weight = "layers.1.mlp.up_proj.weight"
        delta = tuned[weight] - base[weight]
        ratio = (delta.norm() / base[weight].norm()).item()
        assert 0.05 < ratio < 0.5, (name, ratio)  # a task vector, not a different model
        assert torch.allclose(tuned["embed_tokens.weight"][:32000], base["embed_tokens.weight"], atol=0.05)
        deltas[name] = delta.flatten()
    cosine = torch.nn.functional.cosine_similarity(deltas[SHISA], deltas[WIZARD], dim=0)
    assert abs(cosine) < 0.2  # independent perturbations
    again = write_replica(SHISA, tmp_path / "again")
    weight = "layers.1.mlp.up_proj.weight"
    assert torch.equal(_weights(again)[weight], _weights(zoo[SHISA])[weight])
    other = write_replica(SHISA, tmp_path / "other", seed=1)
    assert not torch.equal(_weights(other)["norm.weight"], _weights(zoo[SHISA])["norm.weight"])


@pytest.mark.parametrize("name, adapter", [(MISTRAL, "llm"), (SHISA, "llm"), (WIZARD, "llm"), (ABEL, "llm"),
                                           (LLAVA, "vlm"), (LLAMA, "llm"), (QWEN2, "llm")])
def test_evosuite_loads_each_replica(zoo, name, adapter):
    model = load_model(str(zoo[name]))
    assert model.adapter == adapter and model.num_layers == 4
    assert model.generate(["答えは"], max_new_tokens=2) != [None]
    if name == QWEN2:  # tied: the head is the embedding matrix
        assert model.module.lm_head.weight.data_ptr() == model.module.model.embed_tokens.weight.data_ptr()


def test_other_families_do_not_pass_as_mistral(zoo):
    base = load_model(str(zoo[MISTRAL]))
    for name in (LLAMA, QWEN2):  # Llama-2: 4 kv heads, not 2; Qwen2: q/k/v biases and a tied head
        with pytest.raises(ModelError):
            check_mergeable({"base": base, name: load_model(str(zoo[name]))})


# -- image_mode ----------------------------------------------------------------------------------------------
# A 100 x 20 px image (width x height) on the 56 px / patch 14 tower, by hand:
# - single: resize the short side to 56 and centre-crop 56 x 56 -> (56 / 14)^2 = 16 tokens.
# - anyres: LLaVA-NeXT picks the pinpoint (h, w) keeping most of the image's 2000 px at least waste:
#   (56,112): scale min(112/100, 56/20) = 1.12 -> 112 x 22 px, 2000 kept, 6272 - 2000 = 4272 wasted;
#   (56,168): scale 1.68 -> 2000 kept, 7408 wasted; (112,112): 1.12 -> 2000 kept, 10544 wasted;
#   (112,56) and (168,56): scale 0.56 -> 56 x 11 px, 616 kept. Best (56,112): 1 x 2 tiles of 4 x 4 patches,
#   a 4 x 8 feature grid. The image's aspect 100/20 = 5 exceeds the grid's 8/4 = 2, so rows are unpadded:
#   new height int(20 * 8/100) = 1, padding (4 - 1) // 2 = 1 row each side -> 2 x 8 = 16 features
#   + 2 image_newline + the 16-token base image = 34 tokens.
WIDE = (100, 20)


def _image_tokens(model, size) -> int:
    encoded = model._encode(["<image>\nこれは何ですか？"], [Image.new("RGB", size, (180, 40, 40))])
    return int((encoded["input_ids"] == 32000).sum())


def test_single_and_anyres_feed_the_hand_computed_image_tokens(zoo):
    anyres = load_model(str(zoo[LLAVA]))  # the default: what the checkpoint's processor does
    single = load_model(str(zoo[LLAVA]), options={"image_mode": "single"})
    assert anyres.image_mode == "anyres" and single.image_mode == "single"
    assert _image_tokens(single, WIDE) == 16 and _image_tokens(anyres, WIDE) == 34
    # generation feeds exactly those features (transformers refuses a placeholder/feature count mismatch)
    image = Image.new("RGB", WIDE, (180, 40, 40))
    for model in (single, anyres):
        [answer] = model.generate(["<image>\nこれは何ですか？"], [image], max_new_tokens=3)
        assert isinstance(answer, str)
    # the most anyres gives: base 16 + the (112,112) grid's 8 x 8 features + 8 newlines = 88
    assert single.describe() == "image_mode single: 16 image tokens per image (one 56 px image, patch 14)"
    assert anyres.describe().startswith("image_mode anyres: up to 88 image tokens per image (16 for the 56 px")


def test_single_mode_is_a_plain_llava_model_with_the_same_weights_and_exports_as_one(zoo, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    anyres = load_model(str(zoo[LLAVA]))
    single = load_model(str(zoo[LLAVA]), options={"image_mode": "single"})
    assert type(single.module).__name__ == "LlavaForConditionalGeneration"
    tiled = dict(anyres.module.named_parameters())
    plain = dict(single.module.named_parameters())
    assert set(tiled) - set(plain) == {"model.image_newline"}
    assert all(torch.equal(plain[k], tiled[k]) for k in plain)
    assert set(single.mergeable_parameters()) == set(anyres.mergeable_parameters())
    out = single.save(tmp_path / "exported")
    assert _config(out)["model_type"] == "llava" and _config(out)["image_seq_length"] == 16
    assert not any("image_newline" in k for k in _weights(out))
    assert type(AutoModelForImageTextToText.from_pretrained(out)).__name__ == "LlavaForConditionalGeneration"
    assert type(AutoProcessor.from_pretrained(out)).__name__ == "LlavaProcessor"
    reloaded = load_model(str(out))
    assert reloaded.image_mode == "single" and _image_tokens(reloaded, WIDE) == 16


def test_image_mode_errors_are_one_line(zoo, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown option 'image_mod' for model adapter 'vlm'.*image_mode"):
        load_model(str(zoo[LLAVA]), options={"image_mod": "single"})
    with pytest.raises(ConfigError, match=r"unknown image_mode 'tiles'.*anyres, single"):
        load_model(str(zoo[LLAVA]), options={"image_mode": "tiles"})
    with pytest.raises(ConfigError, match=r"unknown option 'image_mode' for model adapter 'llm'"):
        load_model(str(zoo[SHISA]), options={"image_mode": "single"})
    plain = load_model(str(zoo[LLAVA]), options={"image_mode": "single"}).save(tmp_path / "plain")
    with pytest.raises(ConfigError, match="'llava' model, which has no anyres tiling"):
        load_model(str(plain), options={"image_mode": "anyres"})


class _Messages:
    def __init__(self):
        self.lines = []

    def message(self, text):
        self.lines.append(text)


def test_source_options_reach_the_adapter_and_the_log_names_the_image_tokens(zoo, tmp_path):
    other = write_replica(LLAVA, tmp_path / "llava-seed1", seed=1)
    config = parse_config({"benchmark": "ja-vg-vqa", "sources": [
        {"name": "tiled", "model": str(zoo[LLAVA])},
        {"name": "plain", "model": str(other), "options": {"image_mode": "single"}}]})
    assert config.sources[1].options == {"image_mode": "single"} and config.sources[0].options == {}
    reporter = _Messages()
    models, _, _ = load_sources(config, reporter.message)
    assert models["plain"].image_mode == "single" and models["tiled"].image_mode == "anyres"
    assert "plain: image_mode single: 16 image tokens per image (one 56 px image, patch 14)" in reporter.lines
    with pytest.raises(ConfigError, match=r"sources\[0\].options must be a mapping"):
        parse_config({"benchmark": "x", "sources": [{"model": "a", "options": "single"}, {"model": "b"}]})
    with pytest.raises(ConfigError, match="a source takes name, model, adapter and options"):
        parse_config({"benchmark": "x", "sources": [{"model": "a", "image_mode": "single"}, {"model": "b"}]})
