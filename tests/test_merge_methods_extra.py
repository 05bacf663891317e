"""The merge methods mergekit added after TIES & co. (nuslerp, multislerp, karcher, sce, nearswap,
arcee_fusion, ram, ramplus_tl): each formula pinned on tensors of 2-8 entries whose results are worked
out by hand in the comments, then each method run end to end through `evosuite merge`."""

import json
import math

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from evosuite import plugin_manager
from evosuite.api import REQUIRED
from evosuite.cli import main
from evosuite.errors import ConfigError, ModelError
from evosuite.merge import load_config
from evosuite.plugins import merge_methods as mm
from tests.factories import write_checkpoint

R2 = math.sqrt(0.5)  # sin(pi/4) = cos(pi/4)


def T(*values):
    return torch.tensor(values, dtype=torch.float32)


def merge(method, tensors, base, model_params=None, **global_params):
    params = {**method.global_parameters, **global_params}
    model_params = model_params or [{} for _ in tensors]
    full = [{**method.model_parameters, **p} for p in model_params]
    return method.merge(tensors, base, full, params, generator=torch.Generator().manual_seed(0))


def close(actual, expected, tol=1e-5):
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.allclose(actual, expected, rtol=0, atol=tol), actual


def weights(*values):
    return [{"weight": v} for v in values]


NEW = ("nuslerp", "multislerp", "karcher", "sce", "nearswap", "arcee_fusion", "ram", "ramplus_tl")


def test_the_new_methods_are_registered_with_mergekits_parameters():
    plugin_manager.reset_host()
    registry = plugin_manager.get_host().registry("methods")
    assert set(NEW) <= set(registry.names())
    expected = {  # name -> (global defaults, per-model parameters), as mergekit declares them
        "nuslerp": ({"nuslerp_flatten": True, "nuslerp_row_wise": False}, {"weight"}),
        "multislerp": ({"normalize_weights": True, "eps": 1e-8}, {"weight"}),
        "karcher": ({"max_iter": 10, "tol": 1e-5}, set()),
        "sce": ({"select_topk": 1.0, "int8_mask": False}, set()),
        "nearswap": ({"t": REQUIRED}, set()),
        "arcee_fusion": ({}, set()),
        "ram": ({"epsilon": 1e-5}, set()),
        "ramplus_tl": ({"r": 0.1, "alpha": 0.2, "epsilon": 1e-5}, set()),
    }
    for name, (global_defaults, per_model) in expected.items():
        method = registry.get(name)
        assert dict(method.global_parameters) == global_defaults, name
        assert set(method.model_parameters) == per_model, name


# -- nuslerp -----------------------------------------------------------------------------------------------
def test_nuslerp_t_is_the_second_models_share_of_the_weights():
    a, b = T(1, 0), T(0, 1)  # orthogonal: theta = pi/2, sin(theta) = 1
    # weights 1, 1 -> t = 0.5: sin(pi/4) a + sin(pi/4) b
    close(merge(mm.NuSlerp(), [a, b], None, weights(1, 1)), [R2, R2])
    # weights 1, 3 -> t = 0.75: sin(pi/8) a + sin(3pi/8) b = [0.382683, 0.923880]
    close(merge(mm.NuSlerp(), [a, b], None, weights(1, 3)), [0.382683, 0.923880])
    # weights summing to ~0 -> t = 0.5
    close(merge(mm.NuSlerp(), [a, b], None, weights(1, -1)), [R2, R2])


def test_nuslerp_colinear_vectors_interpolate_linearly():
    # [1, 2] and [2, 4] point the same way (sin(theta) = 0): 0.25 a + 0.75 b
    close(merge(mm.NuSlerp(), [T(1, 2), T(2, 4)], None, weights(1, 3)), [1.75, 3.5])


def test_nuslerp_flattened_per_row_and_per_column():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 2.0]])
    # flattened (default): |a| = |b| = sqrt(5), a.b = 4 -> cos 0.8, sin 0.6; t = 0.5 gives
    # c = sin(theta / 2) / sin(theta) = sqrt(0.1) / 0.6 = 0.527046 times (a + b) = [1, 1, 0, 4]
    close(merge(mm.NuSlerp(), [a, b], None, weights(1, 1)), [[0.527046, 0.527046], [0.0, 2.108185]])
    # per row: row 0 orthogonal -> [R2, R2]; row 1 equal -> linear -> [0, 2]
    close(merge(mm.NuSlerp(), [a, b], None, weights(1, 1), nuslerp_flatten=False), [[R2, R2], [0.0, 2.0]])
    # per column (row_wise): column 0 is [1, 0] vs [0, 0]: a zero vector has cosine 0, so
    # sin(pi/4) [1, 0] + sin(pi/4) [0, 0]; column 1 is [0, 2] vs [1, 2]: cos = 4 / (2 sqrt 5) = 0.894427,
    # c = sqrt((1 - cos) / 2) / sin = 0.229753 / 0.447214 = 0.513743 times [1, 4]
    close(merge(mm.NuSlerp(), [a, b], None, weights(1, 1), nuslerp_flatten=False, nuslerp_row_wise=True),
          [[R2, 0.513743], [0.0, 2.054972]])


def test_nuslerp_with_a_base_interpolates_the_task_vectors():
    base, a, b = T(1, 1), T(2, 1), T(1, 2)  # task vectors [1, 0] and [0, 1]
    close(merge(mm.NuSlerp(), [a, b], base, weights(1, 1)), [1 + R2, 1 + R2])


def test_nuslerp_keeps_dtype_and_leaves_the_sources_alone():
    a, b = T(1, 0).bfloat16(), T(0, 1).bfloat16()
    out = merge(mm.NuSlerp(), [a, b], None, weights(1, 1))
    assert out.dtype == torch.bfloat16 and torch.equal(a, T(1, 0).bfloat16())


# -- multislerp --------------------------------------------------------------------------------------------
def test_multislerp_is_the_normalized_direction_mean_times_the_mean_norm():
    a, b = T(3, 0), T(0, 4)  # norms 3 and 4, directions e1 and e2
    # weights 0.5, 0.5: m = [0.5, 0.5] -> direction [R2, R2]; mean norm 3.5
    close(merge(mm.MultiSlerp(), [a, b], None, weights(1, 1)), [3.5 * R2, 3.5 * R2])
    # weights 0.25, 0.75: m = [0.25, 0.75], |m| = sqrt(0.625); mean norm 0.75 + 3 = 3.75
    close(merge(mm.MultiSlerp(), [a, b], None, weights(1, 3)), [1.185854, 3.557562])
    # not normalized: weights 1, 1 -> the same direction, norm 3 + 4 = 7
    close(merge(mm.MultiSlerp(), [a, b], None, weights(1, 1), normalize_weights=False), [7 * R2, 7 * R2])
    # eps 0.5: u = [3/3.5, 0], [0, 4/4.5]; m = [0.428571, 0.444444], |m| = 0.617417; the exponential map of
    # the zero tangent (norm taken as eps) gives cos(0.5) = 0.877583: 3.5 * 0.877583 * m / |m|
    close(merge(mm.MultiSlerp(), [a, b], None, weights(1, 1), eps=0.5), [2.132064, 2.211030])


def test_multislerp_with_a_base_and_three_models():
    base = T(1, 1, 1)
    models = [T(2, 1, 1), T(1, 3, 1), T(1, 1, 0)]  # task vectors [1,0,0], [0,2,0], [0,0,-1]
    # m = [1, 1, -1] / 3, direction [1, 1, -1] / sqrt 3; mean norm (1 + 2 + 1) / 3 = 4/3
    d = 4 / 3 / math.sqrt(3)  # 0.769800
    close(merge(mm.MultiSlerp(), models, base, weights(1, 1, 1)), [1 + d, 1 + d, 1 - d])


def test_multislerp_zero_model_with_eps_zero_has_no_direction():
    # [0, 0] adds nothing to m = 0.5 [1, 0]; mean norm 0.5 * 0 + 0.5 * 2 = 1 -> [1, 0] (not NaN)
    close(merge(mm.MultiSlerp(), [T(0, 0), T(2, 0)], None, weights(1, 1), eps=0.0), [1.0, 0.0])


def test_multislerp_opposite_models():
    # two: the directions cancel, so it falls back to 0.5 a + 0.5 b
    close(merge(mm.MultiSlerp(), [T(1, 0), T(-1, 0)], None, weights(1, 1)), [0.0, 0.0])
    # three whose weighted directions cancel: refused in one line
    with pytest.raises(ModelError, match="weighted mean"):
        merge(mm.MultiSlerp(), [T(1, 0), T(-1, 0), T(0, 0)], None, weights(1, 1, 1))
    with pytest.raises(ConfigError, match="sum to 0"):
        merge(mm.MultiSlerp(), [T(1, 0), T(0, 1)], None, weights(1, -1))


# -- karcher -----------------------------------------------------------------------------------------------
def test_karcher_is_the_geodesic_mean_of_the_directions():
    a, b, c = T(1, 0), T(3, 0), T(0, 2)  # directions at 0, 0 and 90 degrees; norms 1, 3, 2
    # the Karcher mean of angles 0, 0, 90 on a circle is their mean, 30 degrees (the arithmetic mean of the
    # directions, [2, 1] / 3, points at 26.6 degrees); the scale is the mean norm (1 + 3 + 2) / 3 = 2
    close(merge(mm.Karcher(), [a, b, c], None), [2 * math.cos(math.pi / 6), 2 * math.sin(math.pi / 6)])
    # with no iteration it stays at the normalized arithmetic mean [2, 1] / sqrt 5, times 2
    close(merge(mm.Karcher(), [a, b, c], None, max_iter=0), [4 / math.sqrt(5), 2 / math.sqrt(5)])


def test_karcher_zero_models_drop_out_of_the_direction_not_of_the_scale():
    # [0, 0] has no direction: the mean of e1 and e2 is [R2, R2]; the scale still averages 0, 1, 1 -> 2/3
    close(merge(mm.Karcher(), [T(0, 0), T(1, 0), T(0, 1)], None), [2 / 3 * R2, 2 / 3 * R2])
    close(merge(mm.Karcher(), [T(0, 0), T(0, 0)], None), [0.0, 0.0])


# -- sce -----------------------------------------------------------------------------------------------------
def test_sce_energy_weights_and_sign_consensus():
    base = T(1, 1, 1, 1)
    a, b = base + T(2, -1, 0.5, 1), base + T(1, 2, -1, 1)
    # energies mean(d^2): a 6.25/4, b 7/4 -> weights 25/53, 28/53
    # sums [3, 1, -0.5, 2] -> signs + + - +; entry 0: (25*2 + 28*1) / 53 = 78/53; entry 1: only b (2);
    # entry 2: only b (-1); entry 3: both 1
    close(merge(mm.Sce(), [a, b], base), [1 + 78 / 53, 3, 0, 2])


def test_sce_select_topk_keeps_the_highest_variance_entries():
    base = T(1, 1, 1, 1)
    a, b = base + T(2, -1, 0.5, 1), base + T(1, 2, -1, 1)
    # variances ((d_a - d_b) / 2)^2 = [0.25, 2.25, 0.5625, 0]: 3 non-zero, k = int(3 * 0.5) = 1 -> entry 1
    # masked a [0,-1,0,0], b [0,2,0,0]: sum +1 -> only b's 2 is kept (weights 0.2, 0.8; divided back out)
    close(merge(mm.Sce(), [a, b], base, select_topk=0.5), [1, 3, 1, 1])
    close(merge(mm.Sce(), [a, b], base, select_topk=0.0), [1, 1, 1, 1])


# -- nearswap ------------------------------------------------------------------------------------------------
def test_nearswap_takes_near_values_and_moves_toward_far_ones():
    base, other = T(0, 0, 1, 2), T(0.05, 1, 1, 6)
    # t = 0.1: |diff| 0.05 -> w = min(2, 1) = 1 -> 0.05; |diff| 1 -> w 0.1 -> 0.1;
    # |diff| 0 -> floor 1e-6 -> w 1 -> 1; |diff| 4 -> w 0.025 -> 0.025 * 6 + 0.975 * 2 = 2.1
    close(merge(mm.NearSwap(), [other], base, t=0.1), [0.05, 0.1, 1, 2.1])
    close(merge(mm.NearSwap(), [other], base, t=0.0), base)
    # |diff| 5e-7 is floored to 1e-6: w = 1e-7 / 1e-6 = 0.1 -> 0.1 * 5e-7 = 5e-8 (unfloored: w 0.2 -> 1e-7)
    close(merge(mm.NearSwap(), [T(5e-7)], T(0.0), t=1e-7), [5e-8], tol=1e-10)


# -- arcee_fusion ----------------------------------------------------------------------------------------------
def test_arcee_fusion_importance_is_the_change_times_the_rows_kl():
    from evosuite.plugins.merge_methods.arcee_fusion import importance

    # p = softmax([1, 0]) = [e, 1] / (1 + e), q = [0.5, 0.5] (each + 1e-8):
    # KL = p0 ln(2 p0) + p1 ln(2 p1) = 0.731059 * 0.379885 - 0.268941 * 0.620115 = 0.110944
    close(importance(torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2)), [[0.110944, 0.0]], tol=1e-6)


def test_arcee_fusion_keeps_outlier_changes_only():
    base = torch.zeros(4)
    other = T(0.1, 0.2, 0.3, 2.0)
    # one row: importances are |diff| times one KL, sorted [0.1, 0.2, 0.3, 2.0]; with n = 4 the quantile
    # indices are floor(q * 3): median [1] = 0.2, q1 [0] = 0.1, q3 [2] = 0.3 -> threshold 0.2 + 1.5 * 0.2 = 0.5
    close(merge(mm.ArceeFusion(), [other], base), [0, 0, 0, 2.0])


def test_arcee_fusion_kl_is_per_row():
    base = torch.zeros(2, 4)
    other = torch.tensor([[3.0, 3.0, 3.0, 3.0], [0.1, 0.2, 0.4, 1.0]])
    # row 0 changes most, but uniformly: softmax unchanged, KL 0, importance 0. Row 1: k * [0.1, 0.2, 0.4, 1]
    # with k > 0. Sorted: [0, 0, 0, 0, .1k, .2k, .4k, 1k]; n = 8: median [3] = 0, q1 [1] = 0, q3 [5] = 0.2k
    # -> threshold 0.3k: row 1's 0.4 and 1.0 are taken, row 0 stays the base's
    close(merge(mm.ArceeFusion(), [other], base), [[0, 0, 0, 0], [0, 0, 0.4, 1.0]])


# -- ram / ramplus_tl ------------------------------------------------------------------------------------------
RAM_BASE = T(0, 1, 2, 0, 0)
RAM_MODELS = [T(2, 1, 3, 1e-6, 0), T(4, 1, 2, 0.5, 1)]  # task vectors [2,0,1,1e-6,0] and [4,0,0,0.5,1]


def test_ram_averages_the_task_vectors_that_change_an_entry():
    # entry 0: both change it -> mean 3; entry 1: none -> base; entry 2: only a -> 1; entry 3: a's 1e-6 is
    # within epsilon, so only b's 0.5 (not 0.500001); entry 4: only b -> 1
    close(merge(mm.Ram(), RAM_MODELS, RAM_BASE), [3, 1, 3, 0.5, 1], tol=1e-7)


def test_ramplus_tl_scales_unique_entries_by_the_overlap_ratio():
    # a changes entries 0 (shared) and 2 (alone): rho = 1/1; b changes 0 (shared), 3 and 4 (alone): rho = 1/2
    # r 0.5, alpha 5: lambda_a = 1 + 0.5 * 1 = 1.5, lambda_b = 1 + 0.5 * 0.5 = 1.25 on their unique entries
    close(merge(mm.RamPlusTL(), RAM_MODELS, RAM_BASE, r=0.5, alpha=5.0), [3, 1, 3.5, 0.625, 1.25], tol=1e-7)
    # defaults r 0.1, alpha 0.2: both rho are clamped to 0.2 -> lambda 1.02
    close(merge(mm.RamPlusTL(), RAM_MODELS, RAM_BASE), [3, 1, 3.02, 0.51, 1.02], tol=1e-6)


def test_ramplus_tl_a_model_with_no_unique_entry_takes_alpha():
    base = T(0, 0)
    a, b = T(1, 0), T(3, 2)  # a only shares entry 0 (rho = 1 / epsilon -> clamped to alpha); b alone on 1
    # entry 0: mean 2; entry 1: b's 2 * (1 + 0.5 * min(1/1, 5)) = 2 * 1.5 = 3
    close(merge(mm.RamPlusTL(), [a, b], base, r=0.5, alpha=5.0), [2, 3], tol=1e-7)


# -- source counts ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, count, message", [
    ("nuslerp", 3, "exactly 2"), ("nuslerp", 1, "exactly 2"), ("nearswap", 2, "exactly 1"),
    ("arcee_fusion", 2, "exactly 1")])
def test_source_counts_are_checked(name, count, message):
    with pytest.raises(ConfigError, match=message):
        plugin_manager.get("methods", name).check_sources(count)


@pytest.mark.parametrize("method, params, extra", [
    (mm.NuSlerp(), weights(1, 1), {}), (mm.MultiSlerp(), weights(1, 2), {}), (mm.Karcher(), [{}, {}], {}),
    (mm.NearSwap(), [{}], {"t": 0.5}), (mm.ArceeFusion(), [{}], {})])
def test_methods_given_the_models_themselves_leave_them_untouched(method, params, extra):
    from evosuite.merge.sparsify import Scratch

    base = T(1, 2, 3, 4, 5, 6)
    sources = [T(2, 0, 3, 1, 5, 9), T(0, 2, 1, 4, 4, 6)][:len(params)]
    copies = [s.clone() for s in sources]
    global_params = {**method.global_parameters, **extra}
    method.merge_flat(sources, base.clone(), params, global_params, generator=torch.Generator().manual_seed(0),
                      out=torch.empty(6), work=Scratch("cpu"), shape=(2, 3))
    assert all(torch.equal(s, c) for s, c in zip(sources, copies))


def test_in_memory_merger_gives_nuslerp_the_base():
    from evosuite.merge import TaskVectorMerger

    # the PS space passes the run's base to every method: nuslerp then interpolates the task vectors
    base, a, b = {"w": T(1, 1)}, {"w": T(2, 1)}, {"w": T(1, 2)}
    out = {"w": torch.zeros(2)}
    TaskVectorMerger(base, [a, b], mm.NuSlerp()).merge_into(
        out, lambda name: (weights(1, 1), dict(mm.NuSlerp.global_parameters)))
    close(out["w"], [1 + R2, 1 + R2])


# -- end to end: `evosuite merge` on tiny models ---------------------------------------------------------------
LAYERS = 3
SHAPES = {
    "model.embed_tokens.weight": (8, 4),
    **{f"model.layers.{i}.self_attn.q_proj.weight": (4, 4) for i in range(LAYERS)},
    **{f"model.layers.{i}.input_layernorm.weight": (4,) for i in range(LAYERS)},
    "model.norm.weight": (4,),
    "lm_head.weight": (8, 4),
}


def make_model(path, seed):
    return write_checkpoint(path, seed, SHAPES, layers=LAYERS)


@pytest.fixture()
def zoo(tmp_path):
    return tmp_path, {name: make_model(tmp_path / name, seed) for seed, name in enumerate(("base", "a", "b", "c"))}


def run_merge(root, recipe):
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    main(["merge", str(path), str(root / "out")])
    index = json.loads((root / "out" / "model.safetensors.index.json").read_text())
    merged = {}
    for file in sorted(set(index["weight_map"].values())):
        merged.update(load_file(str(root / "out" / file)))
    assert set(merged) == set(SHAPES)
    for name, shape in SHAPES.items():
        assert merged[name].shape == shape and merged[name].dtype == torch.float32, name
    return merged


def layer_t(name):
    """The gradient position mergekit gives a tensor: layer / (layers - 1), 0 outside the layers."""
    return int(name.split(".")[2]) / (LAYERS - 1) if ".layers." in name else 0.0


def entries(root, *names, **params):
    return [{"model": str(root / n), **({"parameters": params} if params else {})} for n in names]


def slerp_reference(v0, v1, t):
    """Textbook slerp of two whole tensors, in float64."""
    v0, v1 = v0.double(), v1.double()
    theta = torch.acos(torch.dot(v0.flatten(), v1.flatten()) / (v0.norm() * v1.norm()))
    return ((torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)).float()


def test_end_to_end_nuslerp_with_a_weight_gradient(zoo):
    root, m = zoo
    recipe = {"merge_method": "nuslerp", "models": [{"model": str(root / "a"), "parameters": {"weight": 1.0}},
                                                    {"model": str(root / "b"), "parameters": {"weight": [0.0, 3.0]}}]}
    merged = run_merge(root, recipe)
    for name in SHAPES:
        w = 3.0 * layer_t(name)
        close(merged[name], slerp_reference(m["a"][name], m["b"][name], w / (1 + w)))


def test_end_to_end_nuslerp_with_a_base_slerps_the_task_vectors(zoo):
    # mergekit: with a base_model, nuslerp interpolates (a - base) and (b - base) and adds the base back
    root, m = zoo
    recipe = {"merge_method": "nuslerp", "base_model": str(root / "base"),
              "models": entries(root, "a", "b", weight=1.0)}
    merged = run_merge(root, recipe)
    for name in SHAPES:
        base = m["base"][name]
        close(merged[name], slerp_reference(m["a"][name] - base, m["b"][name] - base, 0.5) + base)


def test_end_to_end_multislerp(zoo):
    root, m = zoo
    merged = run_merge(root, {"merge_method": "multislerp", "models": entries(root, "a", "b", "c", weight=1.0)})
    for name in SHAPES:
        xs = [m[k][name].double() for k in "abc"]
        direction = sum(x / x.norm() for x in xs)
        close(merged[name], (direction / direction.norm() * sum(x.norm() for x in xs) / 3).float())


def test_end_to_end_karcher_of_two_is_the_scaled_midpoint(zoo):
    root, m = zoo
    merged = run_merge(root, {"merge_method": "karcher", "models": entries(root, "a", "b")})
    for name in SHAPES:
        a, b = m["a"][name].double(), m["b"][name].double()
        mid = a / a.norm() + b / b.norm()  # the geodesic midpoint of two directions
        close(merged[name], (mid / mid.norm() * (a.norm() + b.norm()) / 2).float())


def test_end_to_end_sce(zoo):
    root, m = zoo
    merged = run_merge(root, {"merge_method": "sce", "base_model": str(root / "base"),
                              "models": entries(root, "a", "b", "c")})
    for name in SHAPES:
        deltas = torch.stack([m[k][name] - m["base"][name] for k in "abc"]).double()
        energy = (deltas ** 2).flatten(1).mean(1)
        w = (energy / energy.sum()).view(-1, *[1] * (deltas.dim() - 1))
        majority = torch.where(deltas.sum(0) >= 0, 1.0, -1.0)
        kept = (deltas.sign() == majority).double() * w
        close(merged[name], (m["base"][name] + (deltas * kept).sum(0) / kept.sum(0)).float())


def test_end_to_end_nearswap_with_a_t_gradient(zoo):
    root, m = zoo
    merged = run_merge(root, {"merge_method": "nearswap", "base_model": str(root / "base"),
                              "models": entries(root, "a"), "parameters": {"t": [0.0, 0.5]}})
    for name in SHAPES:
        a, b = m["base"][name], m["a"][name]
        w = (0.5 * layer_t(name) / (a - b).abs()).clamp(0, 1)
        close(merged[name], w * b + (1 - w) * a)
    first = "model.layers.0.self_attn.q_proj.weight"  # t = 0 on layer 0: nothing is swapped
    assert torch.equal(merged[first], m["base"][first])


def test_end_to_end_arcee_fusion(zoo):
    root, m = zoo
    merged = run_merge(root, {"merge_method": "arcee_fusion", "base_model": str(root / "base"),
                              "models": entries(root, "a")})
    for name in SHAPES:
        base, other = m["base"][name].double(), m["a"][name].double()
        p, q = other.softmax(-1) + 1e-8, base.softmax(-1) + 1e-8
        score = (other - base).abs() * (p * (p / q).log()).sum(-1, keepdim=True)
        s = score.flatten().sort().values
        n = s.numel() - 1
        threshold = s[n // 2] + 1.5 * (s[3 * n // 4] - s[n // 4])
        close(merged[name], torch.where(score >= threshold, other, base).float())


@pytest.mark.parametrize("method", ["ram", "ramplus_tl"])
def test_end_to_end_ram(zoo, method):
    root, m = zoo
    # Zero the changes of model a on half of each tensor so that entries of one model exist.
    for name in SHAPES:
        m["a"][name].view(-1)[::2] = m["base"][name].view(-1)[::2]
    save_file(m["a"], str(root / "a" / "model.safetensors"), metadata={"format": "pt"})
    merged = run_merge(root, {"merge_method": method, "base_model": str(root / "base"),
                              "models": entries(root, "a", "b")})
    for name in SHAPES:
        da, db = (m[k][name] - m["base"][name] for k in "ab")
        ca, cb = da.abs() > 1e-5, db.abs() > 1e-5
        lam_a = lam_b = 1.0
        if method == "ramplus_tl":  # rho = shared / unique entries; lambda = 1 + 0.1 * min(rho, 0.2)
            lam_a = 1 + 0.1 * min(float((ca & cb).sum()) / max(float((ca & ~cb).sum()), 1e-5), 0.2)
            lam_b = 1 + 0.1 * min(float((ca & cb).sum()) / max(float((cb & ~ca).sum()), 1e-5), 0.2)
        expected = torch.where(ca & cb, (da + db) / 2, torch.where(ca, lam_a * da, torch.where(cb, lam_b * db, 0)))
        close(merged[name], m["base"][name] + expected)


def test_recipes_with_mergekits_parameter_names_load():
    for recipe in (
        {"merge_method": "nuslerp", "models": [{"model": "A", "parameters": {"weight": 0.5}},
                                               {"model": "B", "parameters": {"weight": 0.5}}],
         "parameters": {"nuslerp_flatten": False, "nuslerp_row_wise": True}},
        {"merge_method": "multislerp", "models": [{"model": "A", "parameters": {"weight": 1}}],
         "parameters": {"normalize_weights": False, "eps": 1e-6}},
        {"merge_method": "karcher", "models": [{"model": "A"}, {"model": "B"}],
         "parameters": {"max_iter": 20, "tol": 1e-6}},
        {"merge_method": "sce", "base_model": "C", "models": [{"model": "A"}], "parameters": {"select_topk": 0.1}},
        {"merge_method": "nearswap", "base_model": "C", "models": [{"model": "A"}], "parameters": {"t": 0.001}},
        {"merge_method": "arcee_fusion", "base_model": "C", "models": [{"model": "A"}]},
        {"merge_method": "ram", "base_model": "C", "models": [{"model": "A"}], "parameters": {"epsilon": 1e-4}},
        {"merge_method": "ramplus_tl", "base_model": "C", "models": [{"model": "A"}],
         "parameters": {"r": 0.2, "alpha": 0.5, "epsilon": 1e-4}},
    ):
        assert load_config(recipe).method.name == recipe["merge_method"]
    with pytest.raises(ConfigError, match="`t`"):
        load_config({"merge_method": "nearswap", "base_model": "C", "models": [{"model": "A"}]})
