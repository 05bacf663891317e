"""The merge methods' formulas, pinned on small tensors whose results are computed by hand."""

import math

import pytest
import torch

from evosuite import plugin_manager
from evosuite.architectures import resolve
from evosuite.errors import ConfigError
from evosuite.merge.config import evaluate, resolve_parameters
from evosuite.merge.sparsify import breadcrumbs_, kth_largest, magnitude_, random_
from evosuite.plugins import merge_methods as mm


def T(*values):
    return torch.tensor(values, dtype=torch.float32)


def merge(method, tensors, base, model_params, **global_params):
    params = {**{k: v for k, v in method.global_parameters.items()}, **global_params}
    full = [{**{k: v for k, v in method.model_parameters.items()}, **p} for p in model_params]
    return method.merge(tensors, base, full, params, generator=torch.Generator().manual_seed(0))


def close(actual, expected, tol=1e-6):
    assert torch.allclose(actual, torch.as_tensor(expected, dtype=actual.dtype), atol=tol), actual


def test_all_methods_registered_through_the_hook():
    plugin_manager.reset_host()
    names = plugin_manager.get_host().registry("methods").names()
    for name in ("linear", "slerp", "task_arithmetic", "ties", "dare_linear", "dare_ties", "breadcrumbs",
                 "breadcrumbs_ties", "della", "della_linear", "model_stock", "passthrough"):
        assert name in names


def test_linear_weighted_average_and_unnormalized_sum():
    a, b = T(1, 2), T(3, 4)
    close(merge(mm.LinearMerge(), [a, b], None, [{"weight": 1}, {"weight": 3}]), [2.5, 3.5])
    close(merge(mm.LinearMerge(), [a, b], None, [{"weight": 1}, {"weight": 3}], normalize=False), [10, 14])


def test_linear_casts_back_to_the_input_dtype():
    a, b = T(1, 2).to(torch.bfloat16), T(3, 4).to(torch.bfloat16)
    out = merge(mm.LinearMerge(), [a, b], None, [{"weight": 1}, {"weight": 1}])
    assert out.dtype == torch.bfloat16
    close(out.float(), [2, 3])


def test_task_arithmetic_sum_of_weighted_deltas_times_lambda():
    base, a, b = T(1, 1), T(2, 0), T(1, 3)  # deltas [1, -1] and [0, 2]
    # mixed = 0.5*[1,-1] + 1*[0,2] = [0.5, 1.5]; lambda 2 -> [1, 3]; + base
    close(merge(mm.TaskArithmetic(), [a, b], base, [{"weight": 0.5}, {"weight": 1}], **{"lambda": 2}), [2, 4])
    # normalize divides by the sum of weights (1.5) before lambda
    close(merge(mm.TaskArithmetic(), [a, b], base, [{"weight": 0.5}, {"weight": 1}], normalize=True),
          [1 + 0.5 / 1.5, 1 + 1.5 / 1.5])


def test_task_arithmetic_divisor_near_zero_becomes_one():
    base, a, b = T(0, 0), T(2, 4), T(1, 1)
    # weights sum to 0: divisor replaced by 1, so mixed = 0.5*[2,4] - 0.5*[1,1]
    close(merge(mm.TaskArithmetic(), [a, b], base, [{"weight": 0.5}, {"weight": -0.5}], normalize=True),
          [0.5, 1.5])


def test_ties_trims_elects_sign_and_takes_the_disjoint_mean():
    base = T(0, 0, 0, 0)
    a, b = T(3, -1, 2, -0.5), T(-2, 4, -3, 1)
    # density 0.5 keeps the two largest |delta|: a -> [3,0,2,0], b -> [0,4,-3,0]
    # sums [3,4,-1,0] -> signs + + - + ; kept: 3 | 4 | -3 | nothing (0, divisor 0 -> 1)
    params = [{"weight": 1, "density": 0.5}, {"weight": 1, "density": 0.5}]
    close(merge(mm.Ties(), [a, b], base, params), [3, 4, -3, 0])


def test_ties_weights_apply_before_the_sign_election():
    base = T(0, 0, 0, 0)
    a, b = T(3, -1, 2, -0.5), T(-2, 4, -3, 1)
    # weighted: a [6,0,4,0], b [0,4,-3,0]; sums [6,4,1,0] all +; element 2 keeps a only: 4 / weight 2
    params = [{"weight": 2, "density": 0.5}, {"weight": 1, "density": 0.5}]
    close(merge(mm.Ties(), [a, b], base, params), [3, 4, 2, 0])
    # without normalize, the kept weighted deltas are summed
    close(merge(mm.Ties(), [a, b], base, params, normalize=False), [6, 4, 4, 0])


def test_ties_lambda_and_base_offset():
    base, a = T(1, 1), T(3, 0)  # delta [2, -1]
    close(merge(mm.Ties(), [a], base, [{"weight": 1}], **{"lambda": 0.5}), [2, 0.5])


def test_magnitude_ranks_the_whole_tensor_not_each_row():
    delta = torch.tensor([[10.0, 9.0], [1.0, 2.0]]).view(-1)
    close(magnitude_(delta.clone(), 0.5), [10, 9, 0, 0])


def test_magnitude_keeps_at_least_one_entry():
    close(magnitude_(T(1, -5, 2, 3), 0.1), [0, -5, 0, 0])  # int(0.4) = 0 -> k = 1


def test_magnitude_ties_at_the_threshold_follow_argsort():
    delta = torch.tensor([1.0, 3.0, 2.0, 2.0, -2.0, 0.5])
    k = 3  # 3 and two of the three 2s
    expected = torch.zeros_like(delta)
    keep = torch.argsort(delta.abs(), descending=True)[:k]
    expected[keep] = delta[keep]
    out = magnitude_(delta.clone(), 0.5)
    assert torch.equal(out, expected) and int((out != 0).sum()) == k


def test_magnitude_rescale_preserves_l1():
    out = magnitude_(T(4, -3, 2, 1), 0.5, rescale=True)  # keeps [4,-3], L1 10/7
    close(out, [4 * 10 / 7, -3 * 10 / 7, 0, 0], 1e-5)


def test_kth_largest_is_exact_on_large_tensors():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3_000_000, generator=g).abs()
    for k in (1, 1000, 1_500_000, 2_999_999):
        assert kth_largest(x, k)[0] == float(x.sort(descending=True).values[k - 1])


def test_dare_keeps_density_fraction_and_preserves_l1():
    delta = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    before = float(delta.abs().sum())
    out = random_(delta.clone(), 0.3, generator=torch.Generator().manual_seed(7))
    kept = float((out != 0).float().mean())
    assert abs(kept - 0.3) < 0.01
    assert abs(float(out.abs().sum()) - before) / before < 1e-4
    # rescaled by the L1 ratio, which is close to but not exactly 1 / density
    nz = out != 0
    ratio = float((out[nz] / delta[nz]).mean())
    assert ratio == pytest.approx(before / float(delta[nz].abs().sum()), rel=1e-5)


def test_dare_is_reproducible_for_a_seed_and_independent_of_threads():
    delta = torch.randn(100_000, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = random_(delta.clone(), 0.5, generator=torch.Generator().manual_seed(3))
        torch.set_num_threads(2)
        two = random_(delta.clone(), 0.5, generator=torch.Generator().manual_seed(3))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    other = random_(delta.clone(), 0.5, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(one, other)


def test_dare_rescale_skipped_for_tiny_norms():
    delta = torch.full((1000,), 1e-12)
    out = random_(delta.clone(), 0.5, generator=torch.Generator().manual_seed(0))
    assert set(out.unique().tolist()) <= {0.0, 1e-12} or torch.allclose(out[out != 0], delta[out != 0])


def test_dare_ties_and_dare_linear_defaults():
    assert mm.DareTies.global_parameters["rescale"] is True and mm.DareTies.global_parameters["normalize"] is False
    assert mm.DareLinear.global_parameters["rescale"] is True and mm.DareLinear.global_parameters["normalize"] is False
    assert mm.Ties.global_parameters["normalize"] is True and mm.Ties.global_parameters["rescale"] is False
    assert mm.TaskArithmetic.global_parameters["normalize"] is False
    assert mm.LinearMerge.global_parameters["normalize"] is True
    assert mm.Ties.model_parameters["density"] == 1.0
    assert mm.Ties.random is False and mm.DareTies.random is True


def test_slerp_quarter_turn_and_endpoints():
    base, other = T(1, 0), T(0, 1)
    s = math.sin(math.pi / 4)
    close(merge(mm.SlerpMerge(), [other], base, [{}], t=0.5), [s, s])
    close(merge(mm.SlerpMerge(), [other], base, [{}], t=0.0), [1, 0])
    close(merge(mm.SlerpMerge(), [other], base, [{}], t=1.0), [0, 1])
    # t = 1/3 of a quarter turn: angle pi/6 from the base
    close(merge(mm.SlerpMerge(), [other], base, [{}], t=1 / 3), [math.cos(math.pi / 6), math.sin(math.pi / 6)])


def test_slerp_nearly_parallel_is_linear():
    base, other = T(1, 0), T(2, 0.001)  # |dot| > 0.9995
    close(merge(mm.SlerpMerge(), [other], base, [{}], t=0.25), [1.25, 0.00025])


def test_slerp_uses_the_whole_tensor_not_rows():
    base = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    other = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    s = math.sin(math.pi / 4)
    close(merge(mm.SlerpMerge(), [other], base, [{}], t=0.5), [[s, s], [s, s]])


def test_breadcrumbs_drops_top_gamma_and_the_smallest():
    delta = torch.arange(1, 11, dtype=torch.float32)
    # density 0.5 keeps 5; gamma 0.1 drops the single largest; the 4 smallest go too
    close(breadcrumbs_(delta, 0.5, 0.1), [0, 0, 0, 0, 5, 6, 7, 8, 9, 0])


def test_breadcrumbs_gives_up_top_removal_to_reach_density():
    delta = torch.arange(1, 11, dtype=torch.float32)
    # density 0.95 keeps int(9.5) = 9; gamma 0.2 would drop 2 top entries, cut to 1 so that 9 fit
    close(breadcrumbs_(delta, 0.95, 0.2), [1, 2, 3, 4, 5, 6, 7, 8, 9, 0])


def test_della_keeps_large_entries_more_often():
    g = torch.Generator().manual_seed(123)  # not the merge's seed: the same stream would correlate the draws
    delta = torch.randn(400, 1000, generator=g)
    out = merge(mm.DellaLinear(), [delta], torch.zeros_like(delta), [{"weight": 1, "density": 0.5, "epsilon": 0.3}],
                rescale=False)
    kept = out != 0
    order = delta.abs().argsort(dim=1)
    low = kept.gather(1, order[:, :100]).float().mean()
    high = kept.gather(1, order[:, -100:]).float().mean()
    assert abs(float(kept.float().mean()) - 0.5) < 0.01
    assert float(low) == pytest.approx(0.2 + 0.03, abs=0.02)  # probabilities 0.2 .. 0.26 on the bottom tenth
    assert float(high) == pytest.approx(0.8 - 0.03, abs=0.02)


def test_della_rejects_epsilon_outside_the_density_band():
    with pytest.raises(ConfigError):
        merge(mm.Della(), [T(1, 2, 3)], T(0, 0, 0), [{"weight": 1, "density": 0.1, "epsilon": 0.2}])


def test_model_stock_interpolates_by_the_angle():
    base, a, b = T(0, 0), T(1, 0), T(1, 1)
    c = 1 / math.sqrt(2)
    t = 2 * c / (1 + c)
    close(merge(mm.ModelStock(), [a, b], base, [{}, {}]), [t * 1.0, t * 0.5], 1e-5)
    # orthogonal task vectors: t = 0, the base
    close(merge(mm.ModelStock(), [T(1, 0), T(0, 1)], base, [{}, {}]), [0, 0])


def test_passthrough_copies_with_scale():
    close(merge(mm.Passthrough(), [T(1, -2)], None, [{"scale": 0.5}]), [0.5, -1])


def test_check_sources_counts():
    with pytest.raises(ConfigError, match="exactly 1"):
        mm.SlerpMerge().check_sources(2)
    with pytest.raises(ConfigError, match="at least 2"):
        mm.ModelStock().check_sources(1)


def test_gradients_filters_and_positions():
    assert evaluate([0, 1], "x", 0.5) == pytest.approx(0.5)
    assert evaluate([0, 1, 0], "x", 0.25) == pytest.approx(0.5)
    assert evaluate([0, 1, 0], "x", 1.0) == pytest.approx(0.0)
    spec = [{"filter": "self_attn", "value": 0.2}, {"filter": "mlp", "value": [0, 1]}, {"value": 9}]
    assert evaluate(spec, "model.layers.1.self_attn.q_proj.weight", 0.0) == 0.2
    assert evaluate(spec, "model.layers.1.mlp.up_proj.weight", 0.75) == pytest.approx(0.75)
    assert evaluate(spec, "model.norm.weight", 0.0) == 9
    names = [f"model.layers.{i}.mlp.up_proj.weight" for i in range(5)]
    layout = resolve({"model_type": "llama", "num_hidden_layers": 5}, names)
    module, layer = layout.locate("model.layers.2.mlp.up_proj.weight")
    assert (layer, module.t(layer)) == (2, 0.5)  # t = 2 / (5 - 1)
    assert layout.locate("model.embed_tokens.weight") == layout.locate("lm_head.weight") == (None, None)


def test_parameter_scopes_and_required():
    from evosuite.api import REQUIRED

    defaults = {"weight": REQUIRED, "density": 1.0}
    got = resolve_parameters(defaults, [{"weight": 0.3}, {"density": 0.5, "weight": 9}], "t", 0.0, owner="m")
    assert got == {"weight": 0.3, "density": 0.5}
    with pytest.raises(ConfigError, match="weight"):
        resolve_parameters(defaults, [{"weight": [{"filter": "mlp", "value": 1}]}], "attn", 0.0, owner="m")


def test_magnitude_ties_in_a_large_bfloat16_task_vector_follow_argsort():
    # bfloat16 task vectors take few distinct values: the threshold is tied and, past a few dozen entries,
    # torch's unstable sort orders the tied entries neither by index nor in reverse. mergekit keeps
    # argsort(|delta|, descending)[:k]; so must the trim.
    g = torch.Generator().manual_seed(5)
    base = torch.randn(300_000, generator=g).to(torch.bfloat16)
    tuned = (base.float() + 0.01 * torch.randn(300_000, generator=g)).to(torch.bfloat16)
    delta = tuned.float() - base.float()
    for density in (0.3, 0.5):
        k = int(density * delta.numel())
        expected = torch.zeros_like(delta)
        keep = torch.argsort(delta.abs(), descending=True)[:k]
        expected[keep] = delta[keep]
        threshold = float(delta.abs()[keep[-1]])
        assert int((delta.abs() == threshold).sum()) > int((delta.abs()[keep] == threshold).sum()) > 100  # a real tie
        assert torch.equal(magnitude_(delta.clone(), density), expected)
