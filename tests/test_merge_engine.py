"""The merge engine: config parsing and errors, on-disk merges of tiny models, the in-memory merger."""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from evosuite.errors import ConfigError, ModelError
from evosuite.merge import MergePlan, TaskVectorMerger, load_config, merge_from_config
from evosuite.merge.config import resolve_parameters
from tests.factories import write_checkpoint

LAYERS = 3
SHAPES = {
    "model.embed_tokens.weight": (16, 8),
    **{f"model.layers.{i}.self_attn.q_proj.weight": (8, 8) for i in range(LAYERS)},
    **{f"model.layers.{i}.mlp.up_proj.weight": (12, 8) for i in range(LAYERS)},
    **{f"model.layers.{i}.input_layernorm.weight": (8,) for i in range(LAYERS)},
    "model.norm.weight": (8,),
    "lm_head.weight": (16, 8),
}


def make_model(path, seed, *, shapes=SHAPES, tokenizer=False, layers=LAYERS):
    return write_checkpoint(path, seed, shapes, layers=layers, tokenizer=tokenizer)


@pytest.fixture()
def zoo(tmp_path):
    base = make_model(tmp_path / "base", 0, tokenizer=True)
    a = make_model(tmp_path / "a", 1)
    b = make_model(tmp_path / "b", 2)
    return tmp_path, base, a, b


def load_dir(path):
    index = json.loads((path / "model.safetensors.index.json").read_text())
    out = {}
    for file in sorted(set(index["weight_map"].values())):
        out.update(load_file(str(path / file)))
    return out, index


def ta_config(root, **extra):
    return {"merge_method": "task_arithmetic", "base_model": str(root / "base"),
            "models": [{"model": str(root / "a"), "parameters": {"weight": [0.0, 1.0]}},
                       {"model": str(root / "b"), "parameters": {"weight": 0.5}}],
            "parameters": {"lambda": 0.8}, **extra}


def test_task_arithmetic_on_disk_matches_the_formula_with_gradients(zoo):
    root, base, a, b = zoo
    out = merge_from_config(ta_config(root), root / "out")
    merged, index = load_dir(out)
    assert set(merged) == set(SHAPES)
    for name in SHAPES:
        layer = int(name.split(".")[2]) if ".layers." in name else None
        t = layer / (LAYERS - 1) if layer is not None else 0.0  # outside the layers t = 0 (mergekit)
        expected = base[name] + 0.8 * (t * (a[name] - base[name]) + 0.5 * (b[name] - base[name]))
        assert torch.allclose(merged[name], expected, atol=1e-6), name
    assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in merged.values())
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == LAYERS
    assert (out / "tokenizer_config.json").is_file()
    card = (out / "README.md").read_text()
    assert "task_arithmetic" in card and "lambda: 0.8" in card


def test_per_tensor_filters(zoo):
    root, base, a, _ = zoo
    attn_only = [{"filter": "self_attn", "value": 1.0}, {"value": 0.0}]
    rest_only = [{"filter": "self_attn", "value": 0.0}, {"value": 1.0}]
    cfg = {"merge_method": "linear", "models": [{"model": str(root / "base"), "parameters": {"weight": attn_only}},
                                                {"model": str(root / "a"), "parameters": {"weight": rest_only}}]}
    merged, _ = load_dir(merge_from_config(cfg, root / "out"))
    q, up = "model.layers.1.self_attn.q_proj.weight", "model.layers.1.mlp.up_proj.weight"
    assert torch.equal(merged[q], base[q]) and torch.equal(merged[up], a[up])


def test_sharding_and_index(zoo):
    root, *_ = zoo
    out = merge_from_config(ta_config(root), root / "out", shard_size=600)
    merged, index = load_dir(out)
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    assert set(index["weight_map"]) == set(SHAPES)
    reference, _ = load_dir(merge_from_config(ta_config(root), root / "out2"))
    assert all(torch.equal(merged[k], reference[k]) for k in SHAPES)


def test_dtype_override(zoo):
    root, *_ = zoo
    merged, _ = load_dir(merge_from_config(ta_config(root), root / "out", dtype="bfloat16"))
    assert all(t.dtype == torch.bfloat16 for t in merged.values())
    assert json.loads((root / "out" / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_refuses_to_overwrite_without_force_and_replaces_with_it(zoo):
    root, *_ = zoo
    out = root / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="--force"):
        merge_from_config(ta_config(root), out)
    assert (out / "keep.txt").is_file()
    # --force never deletes a file evosuite did not write (issue 18): it replaces only an earlier merge's output
    with pytest.raises(ConfigError, match="evosuite did not write"):
        merge_from_config(ta_config(root), out, force=True)
    assert (out / "keep.txt").is_file()
    (out / "keep.txt").unlink()
    merge_from_config(ta_config(root), out)
    first = (out / "model.safetensors.index.json").stat().st_mtime_ns
    merge_from_config(ta_config(root), out, force=True)
    assert (out / "model.safetensors.index.json").stat().st_mtime_ns >= first and (out / ".evosuite-merge").is_file()
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []


def test_failure_leaves_nothing_behind(zoo):
    root, *_ = zoo
    cfg = ta_config(root)
    cfg["models"][1]["parameters"]["weight"] = [{"filter": "mlp", "value": 0.5}]  # no value for other tensors
    with pytest.raises(ConfigError, match="no value"):
        merge_from_config(cfg, root / "out")
    assert not (root / "out").exists()
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []


def test_dry_run_writes_nothing(zoo):
    root, *_ = zoo
    plan = merge_from_config(ta_config(root), root / "out", dry_run=True)
    assert isinstance(plan, MergePlan) and len(plan.jobs) == len(SHAPES)
    assert "task_arithmetic" in plan.describe()
    assert not (root / "out").exists()


def test_shape_mismatch_names_tensor_and_both_models(tmp_path):
    make_model(tmp_path / "base", 0)
    shapes = dict(SHAPES, **{"model.layers.1.mlp.up_proj.weight": (10, 8)})
    make_model(tmp_path / "a", 1, shapes=shapes)
    cfg = {"merge_method": "task_arithmetic", "base_model": str(tmp_path / "base"),
           "models": [{"model": str(tmp_path / "a"), "parameters": {"weight": 1.0}}]}
    with pytest.raises(ModelError) as info:
        merge_from_config(cfg, tmp_path / "out")
    text = str(info.value)
    assert "model.layers.1.mlp.up_proj.weight" in text and "base" in text and str(tmp_path / "a") in text
    assert "\n" not in text


def test_missing_model(zoo):
    root, *_ = zoo
    cfg = ta_config(root)
    cfg["models"][0]["model"] = str(root / "nope")
    with pytest.raises(ModelError, match="not found"):
        merge_from_config(cfg, root / "out")


@pytest.mark.parametrize("change, message", [
    ({"merge_method": "tie"}, "unknown merge method 'tie'"),
    ({"parameters": {"lamda": 1}}, "valid parameters"),
    ({"base_model": None}, "needs a `base_model`"),
    ({"models": []}, "either `models` or `slices`"),
    ({"frobnicate": 1}, "unknown key"),
    ({"dtype": "int3"}, "unknown dtype"),
    ({"tokenizer_source": "union", "tokenizer": {"source": "base"}}, "both `tokenizer_source` and `tokenizer`"),
])
def test_config_errors_are_one_line(zoo, change, message):
    root, *_ = zoo
    cfg = {**ta_config(root), **change}
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_unknown_method_lists_valid_ones(zoo):
    root, *_ = zoo
    with pytest.raises(ConfigError) as info:
        load_config({**ta_config(root), "merge_method": "nope"})
    assert "ties" in str(info.value) and "slerp" in str(info.value)


def test_required_weight_and_slerp_count(zoo):
    root, *_ = zoo
    cfg = ta_config(root)
    del cfg["models"][1]["parameters"]
    with pytest.raises(ConfigError, match="no `weight`"):
        load_config(cfg)
    slerp = {"merge_method": "slerp", "base_model": str(root / "base"), "parameters": {"t": 0.5},
             "models": [{"model": str(root / "a")}, {"model": str(root / "b")}]}
    with pytest.raises(ConfigError, match="exactly 1"):
        load_config(slerp)
    with pytest.raises(ConfigError, match="`t`"):
        load_config({**slerp, "parameters": {}, "models": [{"model": str(root / "a")}]})


def test_yaml_file_and_base_not_listed(zoo):
    root, base, a, _ = zoo
    cfg = {"merge_method": "slerp", "base_model": str(root / "base"), "parameters": {"t": 0.0},
           "models": [{"model": str(root / "a")}]}
    path = root / "merge.yaml"
    path.write_text(yaml.safe_dump(cfg))
    merged, _ = load_dir(merge_from_config(path, root / "out"))
    assert all(torch.allclose(merged[k], base[k]) for k in SHAPES)  # t = 0 gives the base


def test_missing_tokenizer_warns(zoo, capsys):
    root, *_ = zoo
    cfg = {**ta_config(root), "base_model": str(root / "a")}  # no tokenizer_source: the base's files are copied
    merge_from_config(cfg, root / "out")
    assert "no tokenizer" in capsys.readouterr().err


def test_passthrough_slices_frankenmerge(zoo):
    root, base, a, b = zoo
    cfg = {"merge_method": "passthrough", "slices": [
        {"sources": [{"model": str(root / "a"), "layer_range": [0, 2]}]},
        {"sources": [{"model": str(root / "b"), "layer_range": [1, 3]}]}]}
    out = merge_from_config(cfg, root / "out")
    merged, _ = load_dir(out)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 4
    for out_layer, (src, layer) in enumerate([(a, 0), (a, 1), (b, 1), (b, 2)]):
        name = "model.layers.{}.mlp.up_proj.weight"
        assert torch.equal(merged[name.format(out_layer)], src[name.format(layer)])
    assert torch.equal(merged["model.embed_tokens.weight"], a["model.embed_tokens.weight"])
    assert torch.equal(merged["lm_head.weight"], b["lm_head.weight"])


def test_slice_sources_need_equal_lengths(zoo):
    root, *_ = zoo
    cfg = {"merge_method": "linear", "slices": [{"sources": [
        {"model": str(root / "a"), "layer_range": [0, 2], "parameters": {"weight": 1}},
        {"model": str(root / "b"), "layer_range": [0, 3], "parameters": {"weight": 1}}]}]}
    with pytest.raises(ConfigError, match="different numbers of layers"):
        load_config(cfg)


@pytest.mark.parametrize("method, extra", [
    ("ties", {"density": 0.5}), ("dare_ties", {"density": 0.5}), ("dare_linear", {"density": 0.3}),
    ("breadcrumbs_ties", {"density": 0.6, "gamma": 0.05}), ("della", {"density": 0.5, "epsilon": 0.1}),
])
def test_in_memory_merger_equals_the_on_disk_engine(zoo, method, extra):
    root, base, a, b = zoo
    cfg = {"merge_method": method, "base_model": str(root / "base"),
           "models": [{"model": str(root / "a"), "parameters": {"weight": [0.3, 0.9], **extra}},
                      {"model": str(root / "b"), "parameters": {"weight": 0.5, **extra}}]}
    on_disk, _ = load_dir(merge_from_config(cfg, root / "out", seed=5))
    config = load_config(cfg)
    merger = TaskVectorMerger(base, [a, b], config.method)
    out = {k: torch.empty_like(v) for k, v in base.items()}
    pointers = {k: v.data_ptr() for k, v in out.items()}

    def params_for(name):
        layer = int(name.split(".")[2]) if ".layers." in name else None
        t = layer / (LAYERS - 1) if layer is not None else 0.0
        models = [resolve_parameters(config.method.model_parameters, [e.parameters, config.parameters], name, t,
                                     owner=e.model) for e in config.models]
        return models, resolve_parameters(config.method.global_parameters, [config.parameters], name, t, owner="m")

    for _ in range(2):  # reusable: a second candidate gives the same tensors, in the same memory
        merger.merge_into(out, params_for, seed=5)
        for k in SHAPES:
            assert torch.equal(out[k], on_disk[k]), k
    assert {k: v.data_ptr() for k, v in out.items()} == pointers
    merger.merge_into(out, params_for, seed=6)
    if method.startswith(("dare", "della")):
        assert not torch.equal(out["lm_head.weight"], on_disk["lm_head.weight"])
