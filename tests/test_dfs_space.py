"""The DFS merge space: genome layout, paths run in place, KV cache with repeated layers, export and load."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from evosuite.errors import ConfigError
from evosuite.models import load_model
from evosuite.plugin_manager import get_host
from evosuite.plugins.dfs_path import DFS_FILE, layers_of
from evosuite.plugins.dfs_space import load_dfs_model
from tests.factories import write_llm, write_vlm

PROMPTS = ["hello there", "ab", "what is 12 + 7?"]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("dfs")
    a = load_model(str(write_llm(root / "a", seed=1, layers=3)))
    b = load_model(str(write_llm(root / "b", seed=2, layers=3)))
    vlm = load_model(str(write_vlm(root / "vlm", seed=3, layers=3)))
    return {"a": a, "b": b, "vlm": vlm}


def dfs(sources, names, carrier, **options):
    cls = get_host().registry("spaces").get("dfs")
    return cls(sources, names, None, carrier, seed=0, **options)


def text_space(zoo, **options):
    return dfs([zoo["a"], zoo["b"]], ["a", "b"], zoo["b"], **options)


def logits(model, prompts=PROMPTS, **encode):
    inputs = model._encode(prompts, encode.get("images"))
    with torch.no_grad():
        return model.module(**inputs).logits


def snapshot(model):
    return {k: v.clone() for k, v in model.mergeable_parameters().items()}


def test_genome_layout_and_options(zoo):
    space = text_space(zoo)
    assert space.num_slots == 2 * 3 * 3  # (A's 3 layers + B's 3 layers) x r = 3
    assert space.dimension == 18 + 2 * 3 * 3  # matrix: one gene per ordered cross-source layer pair
    assert text_space(zoo, scales="hop").dimension == 18 + 18
    off = text_space(zoo, scales="off", repeats=2)
    assert off.dimension == off.num_slots == 12
    genome = off.encode([(0, 0), (1, 1), (0, 2), (1, 0)])
    assert [step["scale"] for step in off.recipe(genome)["path"]] == [1.0] * 4
    with pytest.raises(ConfigError, match="scales 'full'"):
        text_space(zoo, scales="full")
    with pytest.raises(ConfigError, match="unknown option 'repeat'"):
        text_space(zoo, repeat=2)
    with pytest.raises(ConfigError, match="embeddings_from 'c'"):
        text_space(zoo, embeddings_from="c")
    with pytest.raises(ConfigError, match="genome has 3 genes"):
        space.candidate([0.5] * 3)


def test_initial_genome_is_the_papers(zoo):
    space = text_space(zoo)
    genome = space.initial_genome()
    include = genome[:space.num_slots]
    assert [g > 0.5 for g in include] == [True] * 3 + [False] * 15  # first repetition of A's layers on
    assert all(g == 0.5 for g in genome[space.num_slots:])  # scale genes decode to 1
    assert space.recipe(genome)["path"] == [{"source": "a", "layer": i, "scale": 1.0} for i in range(3)]


def test_path_of_model_a_is_model_a(zoo):
    a = zoo["a"]
    for options in ({}, {"scales": "hop"}, {"scales": "off"}):
        candidate = text_space(zoo, **options).candidate(text_space(zoo, **options).initial_genome())
        assert torch.equal(logits(candidate), logits(a))
    candidate = text_space(zoo).candidate(text_space(zoo).initial_genome())
    assert candidate.generate(PROMPTS, max_new_tokens=6) == a.generate(PROMPTS, max_new_tokens=6)
    assert candidate.generate(PROMPTS, max_new_tokens=6, num_beams=3) == a.generate(PROMPTS, max_new_tokens=6,
                                                                                      num_beams=3)


def test_scales_of_one_on_a_single_source_path_change_nothing(zoo):
    space = text_space(zoo, scales="hop")
    reference = logits(space.candidate(space.encode([(0, 0), (0, 2), (0, 1)])))
    # Every scale gene set to something else: within one source no scale applies.
    genome = space.encode([(0, 0), (0, 2), (0, 1)])
    genome[space.num_slots:] = [0.9] * (space.dimension - space.num_slots)
    assert torch.equal(logits(space.candidate(genome)), reference)
    # Scales of exactly 1 on transitions between sources are skipped too: same numbers as no scale at all.
    mixed = [(0, 0), (1, 1), (0, 2)]
    with_ones = logits(space.candidate(space.encode([(0, 0), (1, 1, 1.0), (0, 2, 1.0)])))
    assert torch.equal(with_ones, logits(text_space(zoo, scales="off").candidate(
        text_space(zoo, scales="off").encode(mixed))))


def test_scales_change_the_output(zoo):
    space = text_space(zoo)
    plain = logits(space.candidate(space.encode([(0, 0), (1, 1), (0, 2)])))
    scaled = logits(space.candidate(space.encode([(0, 0), (1, 1, 1.5), (0, 2)])))
    assert not torch.allclose(plain, scaled)
    recipe = space.recipe(space.encode([(0, 0), (1, 1, 1.5), (0, 2, 0.5)]))
    assert [(s["source"], s["layer"], s["scale"]) for s in recipe["path"]] == [("a", 0, 1.0), ("b", 1, 1.5),
                                                                               ("a", 2, 0.5)]


def test_matrix_scale_depends_on_the_pair_of_layers(zoo):
    space = text_space(zoo)
    genome = space.encode([(0, 0), (1, 1, 1.5)])
    # The same transition A0 -> B1 reached again in a later repetition uses the same W[A0, B1].
    later = space.encode([(0, 0), (1, 1, 1.5), (0, 0), (1, 1)])
    assert space.recipe(later)["path"][3]["scale"] == 1.5
    assert space.recipe(genome)["path"][1]["scale"] == 1.5
    with pytest.raises(ConfigError, match="second scale"):
        space.encode([(0, 0), (1, 1, 1.5), (0, 0), (1, 1, 0.5)])
    hop = text_space(zoo, scales="hop")  # one scale per slot: the two hops may differ
    path = hop.recipe(hop.encode([(0, 0), (1, 1, 1.5), (0, 0), (1, 1, 0.5)]))["path"]
    assert [step["scale"] for step in path] == [1.0, 1.5, 1.0, 0.5]


def test_cross_source_path_runs_in_place_without_copies(zoo):
    a, b = zoo["a"], zoo["b"]
    before = snapshot(b)
    space = text_space(zoo)
    first = space.candidate(space.encode([(0, 0), (1, 2, 1.3), (0, 1), (1, 0)]))
    wrapped = layers_of(first)
    pointers = [w.layer.mlp.up_proj.weight.data_ptr() for w in wrapped]
    assert pointers == [a.module.model.layers[0].mlp.up_proj.weight.data_ptr(),
                        b.module.model.layers[2].mlp.up_proj.weight.data_ptr(),
                        a.module.model.layers[1].mlp.up_proj.weight.data_ptr(),
                        b.module.model.layers[0].mlp.up_proj.weight.data_ptr()]
    assert first.module.model.embed_tokens.weight.data_ptr() == a.module.model.embed_tokens.weight.data_ptr()
    assert first.module.lm_head.weight.data_ptr() == a.module.lm_head.weight.data_ptr()
    assert first.generate(PROMPTS, max_new_tokens=4)
    second = space.candidate(space.encode([(1, 1), (0, 2), (0, 0), (0, 1)]))
    assert second is first and second.num_layers == 4
    assert layers_of(second)[0].layer is b.module.model.layers[1]
    assert second.mergeable_parameters()["layers.1.mlp.up_proj.weight"].data_ptr() == \
        a.module.model.layers[2].mlp.up_proj.weight.data_ptr()
    # The sources are untouched: weights, cache indices, layer count.
    assert all(torch.equal(t, before[k]) for k, t in b.mergeable_parameters().items())
    assert [layer.self_attn.layer_idx for layer in b.module.model.layers] == [0, 1, 2]
    assert b.num_layers == 3 and len(b.module.model.layers) == 3
    assert torch.equal(logits(b), logits(b))  # b still runs as itself


def _greedy_without_cache(module, ids, steps):
    ids = ids.clone()
    with torch.no_grad():
        for _ in range(steps):
            out = module(input_ids=ids, use_cache=False).logits[:, -1]
            ids = torch.cat([ids, out.argmax(-1, keepdim=True)], dim=1)
    return ids


def test_repeated_layers_keep_their_own_kv_cache(zoo):
    space = text_space(zoo)
    # A0 three times, B0 twice, with cross-source hops: layer_idx collisions everywhere.
    genome = space.encode([(0, 0), (1, 0, 1.2), (0, 0, 0.9), (0, 1), (1, 0), (0, 0), (1, 2, 1.1)])
    candidate = space.candidate(genome)
    assert candidate.num_layers == 7
    ids = candidate.tokenizer(["what is 3?"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        cached = candidate.module.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                                           do_sample=False, pad_token_id=0)
    assert torch.equal(cached, _greedy_without_cache(candidate.module, ids, 6))
    batched = candidate.generate(PROMPTS, max_new_tokens=6)
    assert batched == [candidate.generate([p], max_new_tokens=6)[0] for p in PROMPTS]
    beams = candidate.generate(PROMPTS, max_new_tokens=6, num_beams=3)
    assert beams == [candidate.generate([p], max_new_tokens=6, num_beams=3)[0] for p in PROMPTS]


def test_empty_path_is_a_valid_candidate(zoo):
    space = text_space(zoo)
    candidate = space.candidate([0.0] * space.dimension)
    assert candidate.num_layers == 0 and space.recipe([0.0] * space.dimension)["path"] == []
    assert len(candidate.generate(PROMPTS[:2], max_new_tokens=3)) == 2


def test_vlm_carrier_feeds_the_path_with_its_vision_tower(zoo):
    vlm, a = zoo["vlm"], zoo["a"]
    space = dfs([vlm, a], ["vlm", "a"], vlm)
    assert space.embeddings_source == 0  # the VLM carrier's embeddings, whatever the source order
    assert dfs([a, vlm], ["a", "vlm"], vlm).embeddings_source == 1
    images = [Image.new("RGB", (16, 16), (200, 30, 30)), Image.new("RGB", (16, 16), (10, 200, 90))]
    prompts = ["<image> what is this?", "<image> colour?"]
    own = space.candidate(space.initial_genome())
    assert own.modality == "image-text"
    assert torch.equal(logits(own, prompts, images=images), logits(vlm, prompts, images=images))
    cross = space.candidate(space.encode([(0, 0), (1, 1, 1.4), (0, 2), (1, 2, 0.7)]))
    assert cross.module.model.vision_tower is not vlm.module.model.vision_tower  # own module tree...
    assert cross.module.model.vision_tower.embeddings.patch_embedding.weight.data_ptr() == \
        vlm.module.model.vision_tower.embeddings.patch_embedding.weight.data_ptr()  # ...sharing the weights
    with_images = logits(cross, prompts, images=images)
    swapped = logits(cross, prompts, images=images[::-1])
    assert not torch.allclose(with_images, swapped)  # the image reaches the path
    assert len(cross.generate(prompts, images=images, max_new_tokens=4)) == 2
    assert len(cross.generate(prompts, images=images, max_new_tokens=4, num_beams=2)) == 2


@pytest.mark.parametrize("scaled", [True, False])
def test_export_and_load_round_trip(zoo, tmp_path, scaled):
    space = text_space(zoo, scales="hop")
    steps = [(0, 0), (1, 1, 1.3 if scaled else 1.0), (0, 0, 0.6 if scaled else 1.0), (0, 2), (1, 2, 1.0)]
    genome = space.encode(steps)
    candidate = space.candidate(genome)
    expected, generated = logits(candidate), candidate.generate(PROMPTS, max_new_tokens=6)
    out = space.export(genome, tmp_path / "model", model_card="# dfs\n")
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 5
    assert (out / DFS_FILE).is_file() == scaled
    assert (out / "README.md").read_text() == "# dfs\n"
    for loaded in (load_model(str(out)), load_dfs_model(out)):
        assert loaded.num_layers == 5
        assert torch.equal(logits(loaded), expected)
        assert loaded.generate(PROMPTS, max_new_tokens=6) == generated
    if scaled:
        record = json.loads((out / DFS_FILE).read_text())
        assert record["scales"] == [1.0, 1.3, 0.6, 1.0, 1.0]
        reloaded = load_model(str(out))
        # Canonical names of the standard 5-layer model; saving the loaded model again keeps the scales.
        names = zoo["a"].mergeable_parameters()
        per_layer = [k[len("layers.0."):] for k in names if k.startswith("layers.0.")]
        assert set(reloaded.mergeable_parameters()) == {k for k in names if zoo["a"].layer_index(k) is None} | {
            f"layers.{i}.{n}" for i in range(5) for n in per_layer}
        again = reloaded.save(tmp_path / "again")
        assert torch.equal(logits(load_model(str(again))), expected)
        # A saved path can itself be a source (model A) of another DFS merge: its scales come along.
        nested = dfs([reloaded, zoo["b"]], ["dfs", "b"], zoo["b"])
        assert torch.equal(logits(nested.candidate(nested.initial_genome())), expected)
    else:
        # All scales 1: a plain transformers model, nothing evosuite-specific needed.
        from transformers import AutoModelForCausalLM

        plain = AutoModelForCausalLM.from_pretrained(out)
        with torch.no_grad():
            assert torch.equal(plain(**candidate._encode(PROMPTS, None)).logits, expected)


def test_vlm_export_round_trip(zoo, tmp_path):
    vlm, a = zoo["vlm"], zoo["a"]
    space = dfs([vlm, a], ["vlm", "a"], vlm, scales="hop")
    genome = space.encode([(0, 0), (1, 1, 1.4), (0, 2, 0.8)])
    images = [Image.new("RGB", (16, 16), (200, 30, 30))]
    expected = logits(space.candidate(genome), ["<image> what?"], images=images)
    loaded = load_model(str(space.export(genome, tmp_path / "vlm")))
    assert loaded.modality == "image-text" and loaded.num_layers == 3
    assert torch.equal(logits(loaded, ["<image> what?"], images=images), expected)


def test_export_with_a_tied_embeddings_source(zoo, tmp_path):
    from transformers import LlamaForCausalLM

    from tests.factories import char_tokenizer, text_config

    config = text_config(layers=3)
    config.tie_word_embeddings = True
    torch.manual_seed(5)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "tied")
    char_tokenizer().save_pretrained(tmp_path / "tied")
    tied = load_model(str(tmp_path / "tied"))
    space = dfs([tied, zoo["b"]], ["tied", "b"], zoo["b"])  # untied carrier, tied embeddings source
    genome = space.encode([(0, 0), (1, 1, 1.2), (0, 2)])
    expected = logits(space.candidate(genome))
    loaded = load_model(str(space.export(genome, tmp_path / "out")))
    assert loaded.module.config.tie_word_embeddings is True
    assert torch.equal(logits(loaded), expected)


def test_a_dfs_run_saves_a_model_that_loads_back_exactly(zoo, tmp_path, register_plugin):
    from evosuite.config import parse_config
    from evosuite.runner import run_experiment
    from evosuite.tui import make_reporter
    from tests import toy_plugin

    register_plugin(toy_plugin, "toy")
    config = parse_config({
        "sources": [{"name": "a", "model": zoo["a"].name_or_path}, {"name": "b", "model": zoo["b"].name_or_path}],
        "benchmark": {"name": "toy-echo", "options": {"items": 2}}, "budget": 4, "seed": 1,
        "space": {"name": "dfs", "options": {"repeats": 2, "scales": "hop"}},
    })
    summary = run_experiment(config, tmp_path / "run", make_reporter(quiet=True))
    assert summary["recipe"]["space"] == "dfs" and len(summary["best_genome"]) == 2 * 12
    steps = [(0 if s["source"] == "a" else 1, s["layer"], s["scale"]) for s in summary["recipe"]["path"]]
    loaded = load_model(summary["model_dir"])
    assert loaded.num_layers == len(steps)
    space = dfs([zoo["a"], zoo["b"]], ["a", "b"], zoo["b"], repeats=2, scales="hop")
    assert torch.equal(logits(loaded), logits(space.candidate(summary["best_genome"])))
