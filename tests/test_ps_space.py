"""The PS merge space: genome layout, decoding, in-place candidates and references."""

from __future__ import annotations

import pytest
import torch

from evosuite.errors import ConfigError
from evosuite.models import load_model
from evosuite.plugin_manager import get_host
from tests.factories import write_llm, write_vlm


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("ps")
    base = load_model(str(write_llm(root / "base", seed=0, layers=4)))
    a = load_model(str(write_llm(root / "a", seed=1, layers=4)))
    b = load_model(str(write_llm(root / "b", seed=2, layers=4)))
    return base, a, b


def space(models, **options):
    base, a, b = models
    cls = get_host().registry("spaces").get("ps")
    return cls([a, b], ["a", "b"], base, b, seed=0, **options)


def params(model):
    return {k: v.clone() for k, v in model.mergeable_parameters().items()}


def test_genome_layout_follows_granularity(models):
    assert space(models).dimension == 4  # one density and one weight per source
    assert space(models, granularity="layer").dimension == 16
    assert space(models, granularity=3).dimension == 8
    assert space(models, method="task_arithmetic").dimension == 2  # it has no density
    with pytest.raises(ConfigError, match="granularity 'rows'"):
        space(models, granularity="rows")
    with pytest.raises(ConfigError, match="unknown option 'lamda'"):
        space(models, method_options={"lamda": 1.0})
    with pytest.raises(ConfigError, match="unknown option 'metod'"):
        space(models, metod="ties")


def test_a_genome_that_keeps_one_source_rebuilds_it(models):
    base, a, b = models
    ps = space(models, ranges={"weight": [0.0, 1.0]})
    # density 1 (no trimming) for both, weight 1 for a and 0 for b: base + delta_a == a
    candidate = ps.candidate([1.0, 1.0, 1.0, 0.0])
    merged = candidate.mergeable_parameters()
    for name, tensor in a.mergeable_parameters().items():
        torch.testing.assert_close(merged[name], tensor, atol=1e-6, rtol=0)


def test_task_arithmetic_weights_add_task_vectors(models):
    base, a, b = models
    ps = space(models, method="task_arithmetic", ranges={"weight": [0.0, 2.0]})
    merged = ps.candidate([0.5, 0.25]).mergeable_parameters()  # weights 1.0 and 0.5
    name = "layers.2.mlp.down_proj.weight"
    w0, wa, wb = (m.mergeable_parameters()[name] for m in (base, a, b))
    expected = w0 + (wa - w0) + 0.5 * (wb - w0)
    torch.testing.assert_close(merged[name], expected, atol=1e-6, rtol=0)


def test_per_layer_genes_touch_only_their_layers(models):
    base, a, b = models
    ps = space(models, method="task_arithmetic", granularity=2, ranges={"weight": [0.0, 1.0]})
    # group 0 (layers 0-1): only a; group 1 (layers 2-3): only b
    merged = ps.candidate([1.0, 0.0, 0.0, 1.0]).mergeable_parameters()
    torch.testing.assert_close(merged["layers.1.self_attn.q_proj.weight"],
                               a.mergeable_parameters()["layers.1.self_attn.q_proj.weight"], atol=1e-6, rtol=0)
    torch.testing.assert_close(merged["layers.3.self_attn.q_proj.weight"],
                               b.mergeable_parameters()["layers.3.self_attn.q_proj.weight"], atol=1e-6, rtol=0)
    # tensors outside the layers take the mean of the groups: weights 0.5 and 0.5
    name = "embed_tokens.weight"
    w0, wa, wb = (m.mergeable_parameters()[name] for m in (base, a, b))
    mean = w0 + 0.5 * (wa - w0) + 0.5 * (wb - w0)
    torch.testing.assert_close(merged[name], mean, atol=1e-6, rtol=0)
    recipe = ps.recipe([1.0, 0.0, 0.0, 1.0])
    assert recipe["groups"][1] == {"layers": [2, 3], "sources": {"a": {"weight": 0.0}, "b": {"weight": 1.0}}}


def test_candidates_reuse_one_buffer_and_leave_sources_alone(models):
    base, a, b = models
    before = params(b)
    ps = space(models)
    first = ps.candidate([0.2, 0.9, 0.7, 0.4])
    pointer = first.mergeable_parameters()["layers.0.mlp.up_proj.weight"].data_ptr()
    second = ps.candidate([0.9, 0.1, 0.3, 0.8])
    assert second is first
    assert second.mergeable_parameters()["layers.0.mlp.up_proj.weight"].data_ptr() == pointer
    for name, tensor in b.mergeable_parameters().items():
        assert torch.equal(tensor, before[name]), "the carrier source must not be modified"


def test_dare_is_reproducible_for_a_seed(models):
    one = params(space(models).candidate([0.3, 0.6, 0.5, 0.5]))
    two = params(space(models).candidate([0.3, 0.6, 0.5, 0.5]))
    assert all(torch.equal(one[k], two[k]) for k in one)


def test_equal_weight_reference_is_the_average(models):
    base, a, b = models
    merged = space(models).references()["equal-weight"]().mergeable_parameters()
    name = "norm.weight"
    torch.testing.assert_close(merged[name], (a.mergeable_parameters()[name] + b.mergeable_parameters()[name]) / 2)


def test_vlm_carrier_keeps_its_vision_tower(tmp_path):
    base = load_model(str(write_llm(tmp_path / "base", seed=0)))
    lm = load_model(str(write_llm(tmp_path / "lm", seed=1)))
    vlm = load_model(str(write_vlm(tmp_path / "vlm", seed=2)))
    ps = get_host().registry("spaces").get("ps")([lm, vlm], ["lm", "vlm"], base, vlm, seed=0,
                                                 ranges={"weight": [0.0, 1.0]})
    candidate = ps.candidate([1.0, 1.0, 1.0, 0.0])
    assert candidate.modality == "image-text"
    vision = dict(candidate.module.model.vision_tower.named_parameters())
    for name, tensor in vlm.module.model.vision_tower.named_parameters():
        assert torch.equal(vision[name], tensor)
    torch.testing.assert_close(candidate.mergeable_parameters()["layers.0.mlp.up_proj.weight"],
                               lm.mergeable_parameters()["layers.0.mlp.up_proj.weight"], atol=1e-6, rtol=0)
    recipe, why = ps.mergekit_recipe([1.0, 1.0, 1.0, 0.0])
    assert recipe is None and "vision_tower" in why  # a recipe would merge the towers too


def test_a_genome_as_a_merge_recipe(models):
    base, a, b = models
    recipe, why = space(models).mergekit_recipe([0.3, 0.6, 0.5, 0.5])
    assert why == ""
    # default ranges: density [0, 1], weight [0, 2]
    assert [m["parameters"] for m in recipe["models"]] == [
        {"density": pytest.approx(0.3), "weight": pytest.approx(1.2)},
        {"density": pytest.approx(0.5), "weight": pytest.approx(1.0)}]
    assert [m["model"] for m in recipe["models"]] == [a.name_or_path, b.name_or_path]
    assert recipe["base_model"] == base.name_or_path and recipe["merge_method"] == "dare_ties"
    assert recipe["seed"] == 0 and recipe["dtype"] == "float32"
    per_layer, _ = space(models, granularity=2).mergekit_recipe([0.1] * 4 + [0.9] * 4)
    assert per_layer["models"][0]["parameters"]["density"] == [
        {"filter": "model.layers.0.", "value": pytest.approx(0.1)},
        {"filter": "model.layers.1.", "value": pytest.approx(0.1)},
        {"filter": "model.layers.2.", "value": pytest.approx(0.9)},
        {"filter": "model.layers.3.", "value": pytest.approx(0.9)},
        {"value": pytest.approx(0.5)}]  # outside the layers: the groups' mean
