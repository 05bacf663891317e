"""mergekit recipes as people publish them (issue 20): each read as mergekit 0.1.5 reads it, or refused in one
line. Expected values are worked out by hand in the comments, on tiny hand-written tensors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from evosuite.cli import main
from evosuite.errors import ConfigError
from evosuite.merge import load_config, merge_from_config
from evosuite.merge.config import evaluate
from evosuite.merge.sparsify import breadcrumbs_, della_, magnitude_
from evosuite.plugins import merge_methods as mm

LAYERS = 3
Q = "model.layers.{}.self_attn.q_proj.weight"


def write_model(path, tensors, *, dtype=torch.float32):
    """A model directory holding exactly ``tensors`` (cast to ``dtype``)."""
    path.mkdir(parents=True)
    save_file({k: v.to(dtype).contiguous() for k, v in tensors.items()}, str(path / "model.safetensors"),
              metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": LAYERS}))
    return path


def constant_model(path, value, *, dtype=torch.float32):
    """Every tensor filled with ``value``: 3 layers of a 2x2 q_proj, a 4x2 embedding, a norm."""
    names = {Q.format(i): (2, 2) for i in range(LAYERS)}
    names |= {"model.embed_tokens.weight": (4, 2), "model.norm.weight": (2,)}
    return write_model(path, {n: torch.full(s, float(value)) for n, s in names.items()}, dtype=dtype)


def merged(out):
    index = json.loads((out / "model.safetensors.index.json").read_text())
    result = {}
    for file in set(index["weight_map"].values()):
        result.update(load_file(str(out / file)))
    return result


@pytest.fixture()
def zero_one(tmp_path):
    """A base of zeros and models of ones and twos: every task vector entry is 1 (or 2)."""
    return (constant_model(tmp_path / "base", 0), constant_model(tmp_path / "one", 1),
            constant_model(tmp_path / "two", 2))


def ta(base, *models, **extra):
    return {"merge_method": "task_arithmetic", "base_model": str(base),
            "models": [{"model": str(m), "parameters": {"weight": 1.0}} for m in models], **extra}


# -- filters and parameter lists -----------------------------------------------------------------------
def test_star_filter_matches_every_tensor_and_other_filters_are_plain_substrings():
    items = [{"filter": "*", "value": 0.3}, {"value": 0.9}]
    assert evaluate(items, "model.norm.weight", 0.0) == 0.3
    assert evaluate([{"filter": "mlp", "value": 1}, {"filter": "*", "value": 2}], "model.norm.weight", 0) == 2
    # no wildcards otherwise: "self_attn*" is the literal text, found in no tensor name
    assert evaluate([{"filter": "self_attn*", "value": 1}, {"value": 5}], Q.format(0), 0) == 5


def test_star_filter_last_is_the_catch_all_on_disk(zero_one, tmp_path):
    base, one, _ = zero_one
    cfg = ta(base, one)
    cfg["models"][0]["parameters"]["weight"] = [{"filter": "self_attn", "value": 0.25}, {"filter": "*", "value": 0.5}]
    result = merged(merge_from_config(cfg, tmp_path / "out"))
    assert torch.equal(result[Q.format(1)], torch.full((2, 2), 0.25))  # 0 + 0.25 * (1 - 0)
    assert torch.equal(result["model.norm.weight"], torch.full((2,), 0.5))  # the "*" item


def test_boolean_lists_pick_an_item_by_layer_position(zero_one, tmp_path):
    # mergekit: booleans are not interpolated, item int(t * (len - 1)): t = 0, 0.5, 1 -> False, False, True
    assert [evaluate([False, True], "x", t) for t in (0.0, 0.5, 1.0)] == [False, False, True]
    base, one, two = zero_one
    cfg = ta(base, one, two, parameters={"normalize": [False, True]})
    cfg["models"][1]["parameters"]["weight"] = 3.0
    result = merged(merge_from_config(cfg, tmp_path / "out"))
    # mixed = 1 * 1 + 3 * 2 = 7; normalized by 1 + 3 = 4 only in the last layer
    assert torch.equal(result[Q.format(0)], torch.full((2, 2), 7.0))
    assert torch.equal(result[Q.format(1)], torch.full((2, 2), 7.0))
    assert torch.equal(result[Q.format(2)], torch.full((2, 2), 1.75))


def test_boolean_scalars_and_lists_are_checked_against_numbers():
    with pytest.raises(ConfigError, match="not a parameter value"):
        load_config({"merge_method": "linear", "models": [{"model": "a", "parameters": {"weight": [1, True]}}]})


# -- TIES density 0 -------------------------------------------------------------------------------------
def test_magnitude_trimming_at_density_zero_drops_everything():
    delta = torch.tensor([3.0, -1.0, 2.0])
    assert torch.equal(magnitude_(delta, 0.0), torch.zeros(3))  # mergekit: zeros, not the largest entry


def test_ties_density_gradient_from_zero_keeps_the_base_in_the_first_layer(zero_one, tmp_path):
    base, one, two = zero_one
    cfg = {"merge_method": "ties", "base_model": str(base),
           "models": [{"model": str(m), "parameters": {"weight": 1.0, "density": [0, 1]}} for m in (one, two)]}
    result = merged(merge_from_config(cfg, tmp_path / "out"))
    assert torch.equal(result[Q.format(0)], torch.zeros(2, 2))  # density 0: both deltas zeroed
    # last layer, density 1: deltas 1 and 2 share the sign; disjoint mean (1 + 2) / (1 + 1) = 1.5
    assert torch.equal(result[Q.format(2)], torch.full((2, 2), 1.5))


# -- parameters a method does not use --------------------------------------------------------------------
def slerp_with_weights(base, other):
    return {"merge_method": "slerp", "base_model": str(base), "parameters": {"t": 0.5},
            "models": [{"model": str(base), "parameters": {"weight": 1.0}},
                       {"model": str(other), "parameters": {"weight": 0.3}}]}


def test_unused_parameters_are_ignored_with_a_warning_or_refused_with_strict(zero_one, tmp_path, capsys):
    _, one, two = zero_one
    cfg = slerp_with_weights(one, two)
    config = load_config(cfg)
    assert any("'weight'" in w and "slerp" in w for w in config.warnings)
    with pytest.raises(ConfigError, match="does not use parameter 'weight'"):
        load_config(cfg, strict=True)
    result = merged(merge_from_config(cfg, tmp_path / "out"))
    # ones and twos are collinear: slerp is linear there, 0.5 * 1 + 0.5 * 2
    assert torch.equal(result[Q.format(0)], torch.full((2, 2), 1.5))
    assert "does not use parameter 'weight'" in capsys.readouterr().err


def test_model_stock_accepts_per_model_weights(zero_one, tmp_path):
    base, one, two = zero_one
    cfg = {"merge_method": "model_stock", "base_model": str(base),
           "models": [{"model": str(m), "parameters": {"weight": 1.0}} for m in (one, two)]}
    result = merged(merge_from_config(cfg, tmp_path / "out"))
    # task vectors 1 and 2 point the same way: cos = 1, t = 2 * 1 / (1 + 1) = 1 -> base + mean = 1.5
    assert torch.allclose(result[Q.format(0)], torch.full((2, 2), 1.5))


def test_strict_flag_on_the_command_line(zero_one, tmp_path, capsys):
    import yaml

    _, one, two = zero_one
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(slerp_with_weights(one, two)))
    with pytest.raises(SystemExit) as info:
        main(["merge", str(recipe), str(tmp_path / "out"), "--strict"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and err.startswith("Error:") and "'weight'" in err and "\n" not in err
    assert not (tmp_path / "out").exists()
    main(["merge", str(recipe), str(tmp_path / "out")])
    assert (tmp_path / "out" / "model.safetensors.index.json").is_file()


# -- refused or accepted forms ----------------------------------------------------------------------------
def test_plain_strings_in_models_are_refused_as_mergekit_refuses_them():
    with pytest.raises(ConfigError, match=r"models\[0\] is a plain string") as info:
        load_config({"merge_method": "linear", "models": ["some/model"]})
    assert "- model: some/model" in info.value.fix


def test_single_default_module_merges_like_top_level_models(zero_one, tmp_path):
    base, one, _ = zero_one
    module = {"models": [{"model": str(one), "parameters": {"weight": 0.5}}], "parameters": {"lambda": 3.0}}
    cfg = {"merge_method": "task_arithmetic", "base_model": str(base), "parameters": {"lambda": 100.0},
           "modules": {"default": module}}
    result = merged(merge_from_config(cfg, tmp_path / "out"))
    # the module's lambda (3) wins over the global one: 0 + 3 * 0.5 * 1
    assert torch.equal(result[Q.format(1)], torch.full((2, 2), 1.5))


def test_multi_module_recipes_are_refused_in_one_line():
    cfg = {"merge_method": "linear", "modules": {"text_decoder": {"models": [{"model": "a"}]},
                                                   "vision_tower": {"models": [{"model": "a"}]}}}
    with pytest.raises(ConfigError, match="'text_decoder', 'vision_tower'") as info:
        load_config(cfg)
    assert "\n" not in str(info.value)


def test_residual_weight_is_an_unused_key():
    cfg = {"merge_method": "passthrough",
           "slices": [{"sources": [{"model": "a", "layer_range": [0, 2]}], "residual_weight": 0.5}]}
    assert any("residual_weight" in w for w in load_config(cfg).warnings)


@pytest.mark.parametrize("value, message", [("chatml", "bundled"), ("hello", "neither"), (3, "not a chat template")])
def test_chat_templates_mergekit_would_not_read_from_the_recipe_are_refused(value, message):
    with pytest.raises(ConfigError, match=message):
        load_config({"merge_method": "linear", "models": [{"model": "a", "parameters": {"weight": 1}}],
                     "chat_template": value})


def test_chat_template_is_written_into_the_output_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    from evosuite.testing.models import write_llm

    write_llm(tmp_path / "m", seed=1)
    template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    cfg = {"merge_method": "linear", "models": [{"model": str(tmp_path / "m"), "parameters": {"weight": 1}}],
           "chat_template": template}
    tokenizer = AutoTokenizer.from_pretrained(merge_from_config(cfg, tmp_path / "out"))
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert text == "[user] hi\n"


# -- LoRA adapters ----------------------------------------------------------------------------------------
def write_adapter(path, tensors, **config):
    path.mkdir()
    save_file(tensors, str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", **config}))


def test_model_plus_lora_merges_the_adapter_in(zero_one, tmp_path):
    base, one, _ = zero_one
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0], [-1.0]])  # rank 1: B @ A = outer(b, a)
    write_adapter(tmp_path / "lora", {
        "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight": a,
        "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight": b,
        "base_model.model.model.embed_tokens.lora_embedding_A": torch.tensor([[1.0, 0.0, 0.0, 2.0]]),
        "base_model.model.model.embed_tokens.lora_embedding_B": torch.tensor([[1.0], [1.0]]),
    }, r=1, lora_alpha=2)
    cfg = {"merge_method": "linear", "models": [{"model": f"{one}+{tmp_path / 'lora'}",
                                                 "parameters": {"weight": 1.0}}]}
    result = merged(merge_from_config(cfg, tmp_path / "out"))
    # scaling = lora_alpha / r = 2; q_proj: 1 + 2 * [[3, 6], [-1, -2]]
    assert torch.equal(result[Q.format(1)], torch.tensor([[7.0, 13.0], [-1.0, -3.0]]))
    assert torch.equal(result[Q.format(0)], torch.ones(2, 2))  # not adapted
    # embedding: (B @ A)^T = rows [1, 1], [0, 0], [0, 0], [2, 2]; times 2, plus 1
    assert torch.equal(result["model.embed_tokens.weight"], torch.tensor([[3.0, 3.0], [1, 1], [1, 1], [5, 5]]))


def test_rslora_scaling_and_unknown_adapter_tensors(zero_one, tmp_path):
    base, one, _ = zero_one
    write_adapter(tmp_path / "rs", {
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.ones(4, 2),
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.ones(2, 4),
    }, r=4, lora_alpha=2, use_rslora=True)
    cfg = {"merge_method": "linear", "models": [{"model": f"{one}+{tmp_path / 'rs'}", "parameters": {"weight": 1}}]}
    result = merged(merge_from_config(cfg, tmp_path / "out"))
    # B @ A = 4 everywhere; rsLoRA scaling = 2 / sqrt(4) = 1 -> 1 + 4
    assert torch.equal(result[Q.format(0)], torch.full((2, 2), 5.0))
    write_adapter(tmp_path / "bad", {"base_model.model.model.mystery.lora_A.weight": torch.ones(1, 2),
                                     "base_model.model.model.mystery.lora_B.weight": torch.ones(2, 1)}, r=1)
    cfg["models"][0]["model"] = f"{one}+{tmp_path / 'bad'}"
    with pytest.raises(ConfigError, match="model.mystery"):
        merge_from_config(cfg, tmp_path / "out2")


# -- precision: mergekit's compute dtype --------------------------------------------------------------------
def lambda_recipe(base, one, **extra):
    # 0 + 3 * (0.3 * (1 - 0)). float32: 0.9, written as bfloat16 0.8984375 (230 / 256).
    # bfloat16 (mergekit): the weight is held as bfloat16 0.30078125 (77 / 256); times 3 = 0.90234375
    # (231 / 256), exact in bfloat16.
    cfg = ta(base, one, parameters={"lambda": 3.0}, **extra)
    cfg["models"][0]["parameters"]["weight"] = 0.3
    return cfg


def test_bfloat16_checkpoints_compute_in_bfloat16_unless_told_float32(tmp_path):
    base, one = constant_model(tmp_path / "b", 0, dtype=torch.bfloat16), constant_model(tmp_path / "o", 1,
                                                                                          dtype=torch.bfloat16)
    narrow = merged(merge_from_config(lambda_recipe(base, one), tmp_path / "bf"))[Q.format(0)]
    assert narrow.dtype == torch.bfloat16 and torch.all(narrow.float() == 0.90234375)
    precise = merged(merge_from_config(lambda_recipe(base, one), tmp_path / "fp", compute_dtype="float32"))
    assert precise[Q.format(0)].dtype == torch.bfloat16 and torch.all(precise[Q.format(0)].float() == 0.8984375)


def test_recipe_dtype_is_the_compute_dtype_and_out_dtype_the_written_one(tmp_path):
    base, one = constant_model(tmp_path / "b", 0), constant_model(tmp_path / "o", 1)  # float32 checkpoints
    plain = merged(merge_from_config(lambda_recipe(base, one), tmp_path / "f32"))[Q.format(0)]
    assert plain.dtype == torch.float32 and torch.allclose(plain, torch.full((2, 2), 0.9))
    cfg = lambda_recipe(base, one, dtype="bfloat16", out_dtype="float32")
    wide = merged(merge_from_config(cfg, tmp_path / "mixed"))[Q.format(0)]
    assert wide.dtype == torch.float32 and torch.all(wide == 0.90234375)  # computed in bfloat16


def test_compute_dtype_flag_on_the_command_line(tmp_path, capsys):
    import yaml

    base, one = constant_model(tmp_path / "b", 0), constant_model(tmp_path / "o", 1)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(lambda_recipe(base, one, dtype="bfloat16")))
    main(["merge", str(recipe), str(tmp_path / "out"), "--compute-dtype", "float32", "--dry-run"])
    assert "computed in:  float32" in capsys.readouterr().out


# -- trimming and model_stock edge cases ---------------------------------------------------------------------
def test_breadcrumbs_keeps_an_exact_count_when_magnitudes_tie_at_a_cut_off():
    # n = 5, density 0.4 -> keep 2; gamma 0.2 -> drop the 1 largest (5); so drop the 2 smallest: 1 and one 2.
    delta = torch.tensor([2.0, 1.0, 2.0, 5.0, 2.0])
    out = breadcrumbs_(delta.clone(), 0.4, 0.2)
    assert int(torch.count_nonzero(out)) == 2 and set(out[out != 0].tolist()) == {2.0}
    assert out[1] == 0 and out[3] == 0


def test_della_ranks_along_axis_one_of_three_dimensional_tensors():
    # shape (2, 2, 3): along axis 1 (size 2) the entries at index 1 are the larger ones. With density 0.5 and
    # epsilon 0.4999999 the kept probability is ~0 for the smaller and ~1 for the larger of each pair.
    delta = torch.zeros(2, 2, 3)
    delta[:, 0, :] = torch.tensor([5.0, 6.0, 7.0])
    delta[:, 1, :] = torch.tensor([8.0, 9.0, 10.0])
    out = della_(delta.reshape(-1).clone(), 0.5, 0.4999999, shape=(2, 2, 3),
                 generator=torch.Generator().manual_seed(0), rescale=False).view(2, 2, 3)
    assert torch.equal(out[:, 0, :], torch.zeros(2, 3)) and torch.equal(out[:, 1, :], delta[:, 1, :])


def test_model_stock_keeps_the_base_where_the_factor_is_singular():
    base, a, b = torch.tensor([1.0, 1.0]), torch.tensor([2.0, 3.0]), torch.tensor([0.0, -1.0])
    # task vectors [1, 2] and [-1, -2]: cos = -1, 1 + (2 - 1) * cos = 0 -> no finite t: keep the base
    out = mm.ModelStock().merge([a, b], base, [{}, {}], {"filter_wise": False})
    assert torch.equal(out, base)
