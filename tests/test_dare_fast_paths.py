"""DARE-TIES as the search merges it: the chunked sign election, kept draws, sources subtracted in place.

Expected values are written out here from the method's definition (mergekit 0.1.5's dare_ties: keep each
entry with probability density, rescale by sum|delta| / sum|kept|, weight, elect the sign of the sum, add
the kept entries of that sign), in float64, from the same seeded draws.
"""

from __future__ import annotations

import pytest
import torch

from evosuite.merge.in_memory import TaskVectorMerger, tensor_seed
from evosuite.merge.sparsify import Scratch
from evosuite.plugins.merge_methods.task_arithmetic import ELECTION_CHUNK, DareTies, TaskArithmetic

NAME = "layers.0.mlp.up_proj.weight"
SHAPE = (3, ELECTION_CHUNK + 1000)  # over three chunks of the election


def family(seed=0, shape=SHAPE):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g) * 0.02
    return base, [base + torch.randn(shape, generator=g) * 0.01 for _ in range(2)]


def dare_ties_by_hand(base, sources, densities, weights, generator):
    """base + the kept entries (of the elected sign) of the rescaled, weighted, randomly trimmed deltas."""
    base64 = base.double().reshape(-1)
    trimmed = []
    for src, density, weight in zip(sources, densities, weights):
        delta = src.double().reshape(-1) - base64
        if density < 1:
            keep = torch.rand(delta.numel(), generator=generator).double() < density
            kept = delta * keep
            delta = kept * (delta.abs().sum() / kept.abs().sum())
        trimmed.append(delta * weight)
    total = sum(trimmed)
    sign = torch.where(total >= 0, 1.0, -1.0).double()
    merged = sum(t * (torch.sign(t) == sign) for t in trimmed)
    return (base64 + merged).reshape(base.shape)


def test_dare_ties_over_several_chunks_is_the_formula():
    base, sources = family()
    densities, weights = (0.3, 0.7), (0.8, 1.3)
    n = base.numel()
    out = torch.empty(n)
    DareTies().merge_flat([(s - base).reshape(-1) for s in sources], base.reshape(-1),
                          [{"density": d, "weight": w} for d, w in zip(densities, weights)],
                          dict(DareTies.global_parameters), generator=torch.Generator().manual_seed(11), out=out,
                          work=Scratch("cpu"), shape=SHAPE)
    expected = dare_ties_by_hand(base, sources, densities, weights, torch.Generator().manual_seed(11))
    assert torch.allclose(out.double().view(SHAPE), expected, rtol=0, atol=1e-6)
    # both signs won somewhere and entries were dropped: the election and the trim were exercised
    assert (expected > base.double()).any() and (expected < base.double()).any()
    assert (out.view(SHAPE) == base).float().mean() > 0.05


@pytest.mark.parametrize("keep_draws", [False, True])
def test_a_search_with_kept_draws_merges_what_fresh_draws_give(keep_draws):
    base, sources = family(1)
    merger = TaskVectorMerger({NAME: base}, [{NAME: s} for s in sources], DareTies(), keep_draws=keep_draws)
    held = merger.extra_bytes()
    out = {NAME: torch.empty(SHAPE)}
    # the second candidate does not trim source 0 (density 1: no draws), so source 1 replays the first ones;
    # the last one changes the seed, which draws again
    for densities, weights, seed in (((0.3, 0.7), (0.8, 1.3), 5), ((1.0, 0.4), (1.1, 0.6), 5),
                                     ((0.6, 0.2), (1.5, 0.9), 5), ((0.5, 0.5), (1.0, 1.0), 6)):
        merger.merge_into(out, lambda name, d=densities, w=weights: (
            [{"density": a, "weight": b} for a, b in zip(d, w)], dict(DareTies.global_parameters)), seed=seed)
        generator = torch.Generator().manual_seed(tensor_seed(seed, NAME))
        expected = dare_ties_by_hand(base, sources, densities, weights, generator)
        assert torch.allclose(out[NAME].double(), expected, rtol=0, atol=1e-6), (densities, seed)
    if keep_draws:  # one float32 draw per entry per source, stated in the merger's memory
        assert merger.extra_bytes() - held >= 2 * base.numel() * 4
    else:
        assert merger.draws is None


def test_kept_draws_are_ignored_by_a_method_without_draws():
    base, sources = family(2)
    assert DareTies.replays_draws and not TaskArithmetic.replays_draws
    merger = TaskVectorMerger({NAME: base}, [{NAME: s} for s in sources], TaskArithmetic(), keep_draws=True)
    assert merger.draws is None


def test_a_bfloat16_source_is_subtracted_from_the_float32_base_as_its_exact_value():
    base, sources = family(3)
    low = [s.to(torch.bfloat16) for s in sources]
    merger = TaskVectorMerger({NAME: base}, [{NAME: s} for s in low], TaskArithmetic())
    out = {NAME: torch.empty(SHAPE)}
    merger.merge_into(out, lambda name: ([{"weight": 0.5}, {"weight": 0.25}], dict(TaskArithmetic.global_parameters)))
    # float32 arithmetic in the method's order: the widened source minus the base, weighted, summed, + base
    expected = (low[0].float() - base) * 0.5 + (low[1].float() - base) * 0.25 + base
    assert torch.equal(out[NAME], expected)


@pytest.mark.parametrize("method", ["della", "dare_linear"])
def test_kept_draws_replay_the_masks_fresh_draws_give(method):
    from evosuite.plugin_manager import get

    merge = get("methods", method)
    assert merge.replays_draws
    base, sources = family(4)
    out = {True: {NAME: torch.empty(SHAPE)}, False: {NAME: torch.empty(SHAPE)}}
    mergers = {k: TaskVectorMerger({NAME: base}, [{NAME: s} for s in sources], merge, keep_draws=k)
               for k in (True, False)}
    for densities in ((0.4, 0.7), (0.6, 0.3)):
        params = [{"density": d, "weight": 1.0, "epsilon": 0.1} for d in densities]
        for keep, merger in mergers.items():
            merger.merge_into(out[keep], lambda name, p=params: (p, dict(merge.global_parameters)), seed=3)
        dropped = out[True][NAME] == base  # entries no source kept (a trim happened)
        assert 0.05 < float(dropped.float().mean()) < 0.95
        assert torch.equal(out[True][NAME], out[False][NAME]), densities
