"""The PS space's in-memory merger at real scale's terms: it merges on the candidate's device and keeps no
copy of any model (a bfloat16 source is never copied whole to float32); kept deltas are an explicit option."""

from __future__ import annotations

import pytest
import torch

from evosuite.models import load_model
from evosuite.plugins.ps_space import ParameterSpace
from tests.factories import write_llm


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("mem")
    return [str(write_llm(root / name, seed=seed, layers=2, hidden=64)) for name, seed in
            (("base", 0), ("a", 1), ("b", 2))]


def space_over(paths, *, dtype="float32", device="cpu", **options):
    base, a, b = (load_model(p, dtype=dtype, device=device) for p in paths)
    return ParameterSpace([a, b], ["a", "b"], base, b, seed=0, **options), (base, a, b)


def test_the_merge_runs_on_the_candidates_device(paths):
    # "meta" stands in for a GPU: tensors there have shapes but no data, and a CPU merger could not copy them
    space, _ = space_over(paths, device="meta", method="task_arithmetic")
    assert space._merger.device.type == "meta"
    candidate = space.candidate([0.5] * space.dimension)
    assert {t.device.type for t in candidate.mergeable_parameters().values()} == {"meta"}
    assert {b.device.type for b in space._merger.work._buffers.values()} == {"meta"}


def test_no_float32_copy_of_a_bfloat16_source(paths):
    space, (base, a, b) = space_over(paths, dtype="bfloat16")
    params = a.mergeable_parameters()
    largest = max(t.numel() for t in params.values())
    model_floats = sum(t.numel() for t in params.values())
    space.candidate([0.3] * space.dimension)
    merger = space._merger
    assert merger.deltas is None
    # what it holds: scratch of one tensor each for the base, the two sources, the output and DARE's mask
    held = merger.extra_bytes()
    assert held <= 8 * largest * 4 < model_floats * 4  # far from one float32 copy of a model
    # the sources and base are the loaded tensors themselves, in their own dtype
    assert merger.sources[0]["norm.weight"].data_ptr() == params["norm.weight"].data_ptr()
    assert {t.dtype for t in merger.sources[0].values()} == {torch.bfloat16}


def test_kept_deltas_are_an_option_with_the_same_result(paths):
    genome = [0.2, 0.9, 0.7, 0.4]
    lean, _ = space_over(paths)
    kept, _ = space_over(paths, precompute_deltas=True)
    lean_out = {k: v.clone() for k, v in lean.candidate(genome).mergeable_parameters().items()}
    kept_out = kept.candidate(genome).mergeable_parameters()
    assert all(torch.equal(lean_out[k], kept_out[k]) for k in lean_out)
    floats = sum(t.numel() for t in kept._merger.sources[0].values())
    # two float32 task vectors of the whole model, on top of the scratch
    assert kept._merger.extra_bytes() >= 2 * floats * 4 > lean._merger.extra_bytes()


def test_a_float32_candidate_is_written_in_place_from_the_base_as_loaded(paths):
    space, (base, a, b) = space_over(paths, method="task_arithmetic")
    out = space.candidate([0.25, 0.75]).mergeable_parameters()  # genes map weights onto [0, 2]: 0.5 and 1.5
    work = space._merger.work._buffers
    assert ("out", torch.float32) not in work and ("base", torch.float32) not in work  # no model-sized scratch
    pb, pa, pc = (m.mergeable_parameters() for m in (base, a, b))
    for name in ("norm.weight", "layers.0.mlp.up_proj.weight"):
        expected = pb[name].double() + 0.5 * (pa[name].double() - pb[name].double()) \
            + 1.5 * (pc[name].double() - pb[name].double())
        assert torch.allclose(out[name].double(), expected, atol=1e-6)


def test_dare_keeps_exactly_the_entries_whose_draw_is_below_the_density():
    from evosuite.merge.sparsify import random_

    delta = torch.linspace(-1.0, 1.0, 1000)
    kept = random_(delta.clone(), 0.3, generator=torch.Generator().manual_seed(7), rescale=False)
    draws = torch.rand(1000, generator=torch.Generator().manual_seed(7))
    assert torch.equal(kept != 0, (draws < 0.3) & (delta != 0))
    assert torch.equal(kept[draws < 0.3], delta[draws < 0.3])


@pytest.mark.parametrize("dtype, sizes", [("float32", "2.0"), ("bfloat16", "4.0")])
def test_the_speed_options_say_what_memory_they_hold(paths, dtype, sizes):
    # 4 bytes a merged entry per source: 2 sources are 2 float32 models' worth, 4 bfloat16 models' worth
    assert space_over(paths, dtype=dtype)[0].memory_note() is None
    for option in ("precompute_deltas", "keep_draws"):
        space, _ = space_over(paths, dtype=dtype, **{option: True})
        floats = sum(t.numel() for t in space._out.values())
        note = space.memory_note()
        assert note.startswith(f"{option} holds {8 * floats / 2**30:.2f} GiB ({sizes} model sizes)"), note
