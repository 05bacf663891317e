"""evosuite merge on families whose layers are not named ``model.layers.N``, and on VLMs: gradient positions per
module, slices, the frankenmerge's config, refusals. Expected values are worked out by hand from mergekit's rules:
layer i of a module of n layers sits at t = i / (n - 1); tensors outside the layers at t = 0."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from evosuite.errors import ConfigError
from evosuite.merge import merge_from_config
from evosuite.testing.models import write_llava_next, write_tiny


def tensors(path):
    out = {}
    for file in sorted(path.glob("*.safetensors")):
        out.update(load_file(str(file)))
    return out


def gradient_linear(a, b):
    """Linear merge whose weights move from (a 0, b 1) at t = 0 to (a 1, b 0) at t = 1: output = t a + (1 - t) b."""
    return {"merge_method": "linear", "dtype": "float32",
            "models": [{"model": str(a), "parameters": {"weight": [0.0, 1.0]}},
                       {"model": str(b), "parameters": {"weight": [1.0, 0.0]}}]}


# family -> (a tensor of layer 1, a tensor outside the layers)
LAYER_NAMES = {
    "gpt2": ("transformer.h.1.attn.c_attn.weight", "transformer.wte.weight"),
    "falcon": ("transformer.h.1.self_attention.query_key_value.weight", "transformer.word_embeddings.weight"),
    "bert": ("encoder.layer.1.attention.self.query.weight", "embeddings.word_embeddings.weight"),
}


@pytest.mark.parametrize("family", sorted(LAYER_NAMES))
def test_gradients_reach_layers_not_named_model_layers(family, tmp_path):
    a = write_tiny(tmp_path / "a", family, seed=1, layers=4)
    b = write_tiny(tmp_path / "b", family, seed=2, layers=4)
    out = merge_from_config(gradient_linear(a, b), tmp_path / "out")
    merged, ta, tb = tensors(out), tensors(a), tensors(b)
    layer1, outside = LAYER_NAMES[family]
    # Layer 1 of 4: t = 1/3, so 1/3 of a and 2/3 of b.
    assert torch.allclose(merged[layer1], ta[layer1] / 3 + 2 * tb[layer1] / 3, atol=1e-6)
    assert not torch.allclose(merged[layer1], tb[layer1])
    assert torch.equal(merged[outside], tb[outside])  # t = 0 outside the layers


def test_gpt2_frankenmerge_writes_every_layer_and_loads(tmp_path):
    from transformers import GPT2LMHeadModel

    a = write_tiny(tmp_path / "a", "gpt2", seed=1, layers=4)
    b = write_tiny(tmp_path / "b", "gpt2", seed=2, layers=4)
    recipe = {"merge_method": "passthrough", "slices": [
        {"sources": [{"model": str(a), "layer_range": [0, 3]}]},
        {"sources": [{"model": str(b), "layer_range": [1, 4]}]}]}
    plan = merge_from_config(recipe, tmp_path / "out", dry_run=True)
    text = plan.describe()
    assert f"out 0-2 <- {a} layers 0-2" in text and f"out 3-5 <- {b} layers 1-3" in text
    out = merge_from_config(recipe, tmp_path / "out")
    merged, ta, tb = tensors(out), tensors(a), tensors(b)
    name = "transformer.h.{}.mlp.c_fc.weight"
    for out_layer, (src, layer) in enumerate([(ta, 0), (ta, 1), (ta, 2), (tb, 1), (tb, 2), (tb, 3)]):
        assert torch.equal(merged[name.format(out_layer)], src[name.format(layer)])
    assert json.loads((out / "config.json").read_text())["n_layer"] == 6
    model, info = GPT2LMHeadModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and len(model.transformer.h) == 6
    assert torch.equal(model.transformer.h[4].mlp.c_fc.weight, tb[name.format(2)])


def test_gpt2_without_the_transformer_prefix(tmp_path):
    # openai-community/gpt2 on the hub names its tensors h.N... (no transformer. prefix): the same layers.
    from transformers import GPT2LMHeadModel

    a = write_tiny(tmp_path / "a", "gpt2", seed=1, layers=4)
    weights = load_file(str(a / "model.safetensors"))
    save_file({k.removeprefix("transformer."): v for k, v in weights.items()}, str(a / "model.safetensors"),
              metadata={"format": "pt"})
    recipe = {"merge_method": "passthrough", "slices": [
        {"sources": [{"model": str(a), "layer_range": [0, 3]}]},
        {"sources": [{"model": str(a), "layer_range": [2, 4]}]}]}
    out = merge_from_config(recipe, tmp_path / "out")
    model, info = GPT2LMHeadModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and len(model.transformer.h) == 5
    # Output layer 3 is source layer 2.
    assert torch.equal(model.transformer.h[3].mlp.c_fc.weight, weights["transformer.h.2.mlp.c_fc.weight"])


def test_qwen2_frankenmerge_rebuilds_layer_types_and_loads(tmp_path):
    from transformers import AutoModelForCausalLM

    # max_window_layers 2: layers 0-1 attend fully, layers 2-3 in a sliding window.
    a = write_tiny(tmp_path / "a", "qwen2", seed=1, layers=4, use_sliding_window=True, sliding_window=8,
                   max_window_layers=2)
    source_types = json.loads((a / "config.json").read_text())["layer_types"]
    assert source_types == ["full_attention"] * 2 + ["sliding_attention"] * 2
    recipe = {"merge_method": "passthrough", "slices": [
        {"sources": [{"model": str(a), "layer_range": [0, 2]}]},
        {"sources": [{"model": str(a), "layer_range": [1, 3]}]},
        {"sources": [{"model": str(a), "layer_range": [2, 4]}]}]}
    out = merge_from_config(recipe, tmp_path / "out")
    config = json.loads((out / "config.json").read_text())
    # Output layers come from source layers 0, 1, 1, 2, 2, 3.
    assert config["num_hidden_layers"] == 6
    assert config["layer_types"] == ["full_attention"] * 3 + ["sliding_attention"] * 3
    model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and len(model.model.layers) == 6


@pytest.fixture()
def llava_next_pair(tmp_path):
    a = write_llava_next(tmp_path / "a", seed=1, text_layers=4, vision_layers=2)
    b = write_llava_next(tmp_path / "b", seed=2, text_layers=4, vision_layers=2)
    return a, b


def test_vlm_modules_get_positions_from_their_own_layer_counts(llava_next_pair, tmp_path):
    a, b = llava_next_pair
    recipe = gradient_linear(a, b)
    plan = merge_from_config(recipe, tmp_path / "out", dry_run=True)
    assert "x 2, gradient t = i/1" in plan.describe() and "x 4, gradient t = i/3" in plan.describe()
    out = merge_from_config(recipe, tmp_path / "out")
    merged, ta, tb = tensors(out), tensors(a), tensors(b)
    vision = [n for n in ta if ".vision_tower." in "." + n and ".layers.1." in n]
    text = [n for n in ta if "language_model." in n and ".layers.1." in n]
    assert vision and text
    for name in vision:  # vision layer 1 of 2: t = 1, all a (not t = 1/3 from the text model's 4 layers)
        assert torch.allclose(merged[name], ta[name], atol=1e-6), name
    for name in text:  # text layer 1 of 4: t = 1/3
        assert torch.allclose(merged[name], ta[name] / 3 + 2 * tb[name] / 3, atol=1e-6), name


def test_vlm_slices_are_refused(llava_next_pair, tmp_path):
    a, _ = llava_next_pair
    recipe = {"merge_method": "passthrough", "slices": [{"sources": [{"model": str(a), "layer_range": [0, 2]}]}]}
    with pytest.raises(ConfigError, match="2 stacks of layers"):
        merge_from_config(recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_llava_next_output_loads_with_no_missing_or_unexpected_keys(llava_next_pair, tmp_path):
    from transformers import LlavaNextForConditionalGeneration

    a, b = llava_next_pair
    out = merge_from_config(gradient_linear(a, b), tmp_path / "out")
    # The names transformers' own save_pretrained writes for this model (the sources were written by it).
    assert set(tensors(out)) == set(tensors(a))
    model, info = LlavaNextForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert torch.equal(model.model.image_newline, tensors(b)["image_newline"])  # outside the layers: t = 0, all b


def test_llava_next_sources_named_otherwise_merge_as_one(llava_next_pair, tmp_path):
    # The hub's llava-v1.6 checkpoints keep CLIP's vision_model. inside vision_tower.; save_pretrained drops it.
    a, b = llava_next_pair
    hub = tmp_path / "b-hub"
    shutil.copytree(b, hub)
    weights = load_file(str(hub / "model.safetensors"))
    renamed = {k.replace("vision_tower.", "vision_tower.vision_model.", 1): v for k, v in weights.items()}
    assert renamed != weights
    save_file(renamed, str(hub / "model.safetensors"), metadata={"format": "pt"})
    same = tensors(merge_from_config(gradient_linear(a, b), tmp_path / "out"))
    mixed = tensors(merge_from_config(gradient_linear(a, hub), tmp_path / "out-hub"))
    assert set(mixed) == set(same) and all(torch.equal(mixed[n], same[n]) for n in same)


def _write_raw(path, config, shapes, seed):
    g = torch.Generator().manual_seed(seed)
    path.mkdir()
    save_file({n: torch.randn(s, generator=g) for n, s in shapes.items()}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_unknown_family_is_inferred_from_names(tmp_path):
    config = {"model_type": "mystery", "depth": 3}
    shapes = {"emb.weight": (4, 2), **{f"trunk.blocks.{i}.w": (2, 2) for i in range(3)}}
    a, b = _write_raw(tmp_path / "a", config, shapes, 1), _write_raw(tmp_path / "b", config, shapes, 2)
    merged = tensors(merge_from_config(gradient_linear(a, b), tmp_path / "out"))
    ta, tb = tensors(a), tensors(b)
    assert torch.allclose(merged["trunk.blocks.1.w"], (ta["trunk.blocks.1.w"] + tb["trunk.blocks.1.w"]) / 2)  # t = 1/2
    assert torch.equal(merged["trunk.blocks.2.w"], ta["trunk.blocks.2.w"])


@pytest.mark.parametrize("config, shapes, message", [
    ({"model_type": "mystery", "num_hidden_layers": 2}, {"block_a.w": (2, 2), "block_b.w": (2, 2)},
     "no tensor name has a layer number"),
    # A family the table knows, whose tensors are named otherwise: refused, not merged as if it had no layers.
    ({"model_type": "falcon", "num_hidden_layers": 2}, {"model.layers.0.w": (2, 2), "model.layers.1.w": (2, 2)},
     "no tensor is named like its text layers"),
    # Layers missing from the tensors: transformers would fill them with random weights.
    ({"model_type": "llama", "num_hidden_layers": 3}, {"model.layers.0.w": (2, 2), "model.layers.1.w": (2, 2)},
     "says 3 text layers"),
])
def test_architecture_that_cannot_be_mapped_is_refused(config, shapes, message, tmp_path):
    a, b = _write_raw(tmp_path / "a", config, shapes, 1), _write_raw(tmp_path / "b", config, shapes, 2)
    with pytest.raises(ConfigError, match=message):
        merge_from_config(gradient_linear(a, b), tmp_path / "out")
    assert not (tmp_path / "out").exists()
