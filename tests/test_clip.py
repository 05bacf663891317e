"""The ``clip`` plugin: OpenCLIP adapter, the CLIP zoo, the zero-shot classification benchmarks, and
``evosuite run --plugin clip`` end to end on the small test CLIP zoo (built once for this module)."""

from __future__ import annotations

import json

import pytest
import torch

from evosuite.errors import ConfigError, DataError, ModelError
from evosuite.plugin_manager import get
from tests.conftest import private_cache, run_cli


@pytest.fixture(scope="module")
def clip_zoo(tmp_path_factory):
    from evosuite.plugins.zoo.clip_build import build_clip_zoo, clip_zoo_path

    cache = tmp_path_factory.mktemp("evosuite-clip-cache")
    with private_cache(cache):
        root = build_clip_zoo("test", seed=0)
        assert root == clip_zoo_path("test", 0)
        assert build_clip_zoo("test", seed=0) == root  # cached: no second build
    return {"root": root, "cache": str(cache), "meta": json.loads((root / "zoo.json").read_text())}


@pytest.fixture(scope="module")
def models(clip_zoo):
    from evosuite.models import load_model
    from evosuite.plugin_manager import reset_host

    reset_host()
    root = clip_zoo["root"]
    return {name: load_model(str(root / name)) for name in ("base", "A", "B")}


def test_zoo_layout(clip_zoo):
    root, meta = clip_zoo["root"], clip_zoo["meta"]
    for name in ("base", "A", "B"):
        assert (root / name / "open_clip_config.json").is_file()
        assert (root / name / "open_clip_model.safetensors").is_file()
    assert len(meta["classes"]) == 24 and len(meta["subsets"]["A"]) == len(meta["subsets"]["B"]) == 12
    assert set(meta["subsets"]["A"]).isdisjoint(meta["subsets"]["B"])
    assert set(meta["table"]) >= {"base", "A", "B", "average (0.5, 0.5)"}


def test_detection_and_load(clip_zoo, models):
    from evosuite.models import find_adapter

    adapter = find_adapter(str(clip_zoo["root"] / "A"))
    assert adapter.name == "clip"
    assert adapter.detect_path("hf-hub:org/model") and not adapter.detect_path(str(clip_zoo["root"]))
    model = models["A"]
    assert model.adapter == "clip" and model.modality == "image-classification"
    with pytest.raises(ModelError, match="does not generate"):
        model.generate(["hi"])


def test_no_safetensors_needs_allow_pickle(clip_zoo, tmp_path):
    import shutil

    from evosuite.models import load_model

    target = tmp_path / "pickled"
    shutil.copytree(clip_zoo["root"] / "base", target)
    from safetensors.torch import load_file

    torch.save(load_file(str(target / "open_clip_model.safetensors")), target / "open_clip_pytorch_model.bin")
    (target / "open_clip_model.safetensors").unlink()
    with pytest.raises(ModelError, match="no safetensors"):
        load_model(str(target))
    loaded = load_model(str(target), allow_pickle=True)
    assert torch.equal(loaded.mergeable_parameters()["text_projection"],
                       load_model(str(clip_zoo["root"] / "base")).mergeable_parameters()["text_projection"])


def test_mergeable_names_and_layer_map(models):
    model = models["base"]
    names = model.mergeable_parameters()
    state = dict(model.module.named_parameters())
    assert set(names) == set(state) - {"logit_scale"}  # both towers, the temperature excluded
    assert "visual.conv1.weight" in names and "token_embedding.weight" in names and "text_projection" in names
    assert model.num_layers == 2
    assert model.layer_index("visual.transformer.resblocks.1.attn.in_proj_weight") == 1
    assert model.layer_index("transformer.resblocks.0.mlp.c_fc.weight") == 0
    assert model.layer_index("visual.conv1.weight") is None and model.layer_index("ln_final.weight") is None
    by_layer = {}
    for name in names:
        by_layer.setdefault(model.layer_index(name), set()).add(name.split(".")[0])
    assert by_layer[0] == by_layer[1] == {"visual", "transformer"}  # layer i of both towers in one group


def test_save_load_round_trip_is_exact(models, tmp_path):
    from evosuite.models import load_model

    model = models["B"]
    out = model.save(tmp_path / "copy", model_card="# card\n")
    assert (out / "README.md").read_text() == "# card\n"
    again = load_model(str(out))
    original = model.module.state_dict()
    for name, tensor in again.module.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    # open_clip itself loads the directory, offline
    import open_clip

    module, _, _ = open_clip.create_model_and_transforms(f"local-dir:{out}")
    assert torch.equal(module.state_dict()["visual.conv1.weight"], original["visual.conv1.weight"])


def test_clone_is_independent(models):
    model = models["A"]
    twin = model.clone()
    twin.mergeable_parameters()["visual.conv1.weight"].zero_()
    assert model.mergeable_parameters()["visual.conv1.weight"].abs().sum() > 0


def test_classification_on_the_zoo(clip_zoo, models):
    bench = get("benchmarks", "zoo-clip-union")(data_dir=str(clip_zoo["root"]))
    items = bench.items("test")
    assert len(items) == 144 and {"id", "image", "label", "subset"} <= set(items[0])
    results = {name: bench.evaluate(m, "test", items=items) for name, m in models.items()}
    table = clip_zoo["meta"]["table"]
    for name, result in results.items():
        assert result.score == pytest.approx(table[name]["union"], abs=1e-3)  # build-time scores agree
        assert set(result.metrics) == {"accuracy", "accuracy_A", "accuracy_B", "accuracy_low", "accuracy_high"}
        assert result.metrics["accuracy_low"] < result.score < result.metrics["accuracy_high"]
    assert results["base"].score > 1 / 24  # better than chance
    assert results["A"].metrics["accuracy_A"] > results["B"].metrics["accuracy_A"]
    assert results["B"].metrics["accuracy_B"] > results["A"].metrics["accuracy_B"]
    predicted = models["A"].classify([items[0]["image"]], bench.class_names(), templates=bench.templates())
    assert 0 <= predicted[0] < 24


def test_benchmark_scores_known_predictions(clip_zoo):
    bench = get("benchmarks", "zoo-clip-union")(data_dir=str(clip_zoo["root"]))
    items = [{"id": 0, "label": "red circle", "subset": "A"}, {"id": 1, "label": "pink star", "subset": "B"},
             {"id": 2, "label": "blue square", "subset": "A"}, {"id": 3, "label": "orange star", "subset": "B"}]
    result = bench.score(items, ["red circle", "pink star", "green square", "orange circle"], split="test")
    assert result.score == 0.5 and result.metrics["accuracy_A"] == 0.5 and result.metrics["accuracy_B"] == 0.5
    # Wilson, 2 of 4, z = 1.96: centre 0.5, half-width sqrt(0.0625 + 1.96^2 / 64) = 0.3500
    assert result.metrics["accuracy_low"] == pytest.approx(0.1500, abs=1e-3)
    assert result.metrics["accuracy_high"] == pytest.approx(0.8500, abs=1e-3)
    assert [r["correct"] for r in result.items] == [True, True, False, False]
    assert bench.item_scores(items, ["red circle", "x", "blue square", "y"]) == [1.0, 0.0, 1.0, 0.0]


def test_benchmark_refuses_text_models(clip_zoo):
    bench = get("benchmarks", "zoo-clip-union")(data_dir=str(clip_zoo["root"]))

    class TextModel:
        modality = "text"
        name_or_path = "lm"

    with pytest.raises(ModelError, match="classifies images"):
        bench.predict(TextModel(), [])
    with pytest.raises(DataError, match="no built CLIP zoo"):
        get("benchmarks", "zoo-clip-union")(data_dir=str(clip_zoo["root"] / "nowhere")).items("test")


def test_generic_benchmark_on_zoo_data(clip_zoo, models):
    """The generic benchmark, on the zoo's parquet files, gives the zoo benchmark's score (same code path)."""
    root = clip_zoo["root"]
    task = root / "tasks" / "zoo-clip-union"
    generic = get("benchmarks", "image-classification")(dataset=str(task), split="test", search_split="search",
                                                        templates=["a {}"])
    zoo = get("benchmarks", "zoo-clip-union")(data_dir=str(root))
    assert generic.items("search")[0]["label"] == zoo.items("search")[0]["label"]
    assert generic.evaluate(models["A"], "test").score == zoo.evaluate(models["A"], "test").score
    # a single parquet file, and errors
    single = get("benchmarks", "image-classification")(dataset=str(task / "test.parquet"), templates="a {}")
    assert len(single.items("test", limit=10, seed=0)) == 10
    with pytest.raises(ConfigError, match="needs a dataset"):
        get("benchmarks", "image-classification")()
    with pytest.raises(ConfigError, match="needs a"):
        get("benchmarks", "image-classification")(dataset=str(task), templates=["no slot"])
    with pytest.raises(DataError, match="no column"):
        get("benchmarks", "image-classification")(dataset=str(task), label_column="nope",
                                                  class_names=["x"]).items("test")


def test_source_in_carrier_and_ps_space(models):
    from evosuite.summary import _source_in_carrier

    a, b, base = models["A"], models["B"], models["base"]
    shell = _source_in_carrier(a, b)()
    for name, tensor in b.mergeable_parameters().items():
        assert torch.equal(shell.mergeable_parameters()[name], tensor)
    space = get("spaces", "ps")([a, b], ["a", "b"], base, a, method="task_arithmetic", granularity="layer")
    assert space.dimension == 4
    merged = space.candidate([0.0] * 4)  # zero weights: the base model
    for name, tensor in base.mergeable_parameters().items():
        assert torch.allclose(merged.mergeable_parameters()[name], tensor), name


def test_run_plugin_clip_end_to_end(clip_zoo, tmp_path):
    env = {"EVOSUITE_CACHE": clip_zoo["cache"], "EVOSUITE_ZOO_VARIANT": "test"}
    result = run_cli("run", "--plugin", "clip", "--budget", "4", "--seed", "0", "--run-dir", str(tmp_path / "run"),
                     env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["benchmark"] == "zoo-clip-union" and summary["evaluations"] == 4
    assert set(summary["test_scores"]) == {"expert-a", "expert-b", "equal-weight", "task-arithmetic", "ties-0.5",
                                           "dare-ties-0.5", "merged"}
    model_dir = tmp_path / "run" / "model"
    assert (model_dir / "open_clip_config.json").is_file()
    from evosuite.models import load_model

    exported = load_model(str(model_dir))
    bench = get("benchmarks", "zoo-clip-union")(data_dir=str(clip_zoo["root"]))
    assert bench.evaluate(exported, "test").score == pytest.approx(summary["test_scores"]["merged"])


def test_experiment_refuses_other_spaces():
    with pytest.raises(ConfigError, match="no settings for space"):
        get("experiments", "clip").config(space="dfs")


def test_pixel_memo_forgets_collected_images(models):
    import gc

    from PIL import Image

    model = models["base"].clone()
    model._memo = type(model._memo)()  # a memo of its own (clones share their model's)
    image = Image.new("RGB", (32, 32), (200, 10, 10))
    first = model.embed_images([image])
    assert len(model._memo.entries) == 1 and model._memo.bytes > 0
    assert torch.equal(model.embed_images([image]), first)
    del image
    gc.collect()
    assert not model._memo.entries and model._memo.bytes == 0


def _check_scores(best: tuple[str, float], *, a: float, b: float, average: float, ta11: float) -> dict[str, float]:
    """Union accuracies for the builder's self-check: every grid merge at 0.30 except ``best``."""
    from evosuite.plugins.zoo import clip_check

    scores = {name: 0.30 for name in clip_check.grid()}
    scores.update({"A": a, "B": b, "average (0.5, 0.5)": average, "task arithmetic (1, 1)": ta11, best[0]: best[1]})
    return scores


def test_self_check_passes_a_zoo_whose_uneven_merge_beats_experts_and_hand_recipes():
    from evosuite.plugins.zoo import clip_check

    grid = clip_check.grid()
    assert len(grid) == 16 and len(set(grid.values())) == 16  # 4 x 4 weights, the hand recipes once each
    assert grid["average (0.5, 0.5)"] == (0.5, 0.5) and grid["task arithmetic (0.25, 0.5)"] == (0.25, 0.5)
    checks = clip_check.verdict(_check_scores(("task arithmetic (0.25, 0.5)", 0.76), a=0.45, b=0.62, average=0.70,
                                              ta11=0.40))
    # By hand: 0.76 - max(0.45, 0.62) = 0.14 >= 0.10; 0.76 - max(0.70, 0.40) = 0.06 >= 0.03.
    assert checks["best_simple_merge"] == "task arithmetic (0.25, 0.5)"
    assert checks["merge_over_experts"] == pytest.approx(0.14)
    assert checks["merge_over_hand_recipes"] == pytest.approx(0.06)
    assert checks["ok"] and checks["hand_recipes_off_optimum"]
    assert "WARNING" not in clip_check.describe(checks)


def test_self_check_flags_a_zoo_whose_merge_barely_beats_an_expert():
    from evosuite.plugins.zoo import clip_check

    # The best merge is the equal-weight average, 0.05 above expert B: below both margins.
    checks = clip_check.verdict(_check_scores(("average (0.5, 0.5)", 0.67), a=0.45, b=0.62, average=0.67, ta11=0.40))
    assert checks["best_simple_merge"] == "average (0.5, 0.5)"
    assert checks["merge_over_experts"] == pytest.approx(0.05) and checks["merge_over_hand_recipes"] == 0
    assert not checks["ok"] and not checks["hand_recipes_off_optimum"]
    assert "WARNING: less than 0.10 over an expert" in clip_check.describe(checks)


def test_zoo_records_its_self_check_on_its_own_split(clip_zoo):
    meta = clip_zoo["meta"]
    checks = meta["checks"]
    assert checks["split"] == "check" and meta["tasks"]["zoo-clip-union"]["check"].endswith("check.parquet")
    assert get("benchmarks", "zoo-clip-union").splits == ("search", "test")  # never scored by a run
    assert {"best_simple_merge", "merge_over_experts", "merge_over_hand_recipes", "ok"} <= set(checks)
    assert checks["ok"] == (checks["merge_over_experts"] >= 0.10)
