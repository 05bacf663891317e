"""The llm and vlm adapters on tiny random models: loading, layer map, mergeability, generation."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from evosuite.errors import ModelError
from evosuite.models import check_mergeable, find_adapter, load_model
from evosuite.plugin_manager import get_host
from tests.factories import write_llm, write_vlm


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {"llm": write_llm(root / "llm", seed=1), "llm2": write_llm(root / "llm2", seed=2),
            "vlm": write_vlm(root / "vlm", seed=3), "deep": write_llm(root / "deep", seed=4, layers=3),
            "wide": write_llm(root / "wide", seed=5, hidden=48)}


def test_adapters_are_registered_and_detect_their_family(paths):
    registry = get_host().registry("models")
    assert {"llm", "vlm"} <= set(registry.names())
    assert find_adapter(str(paths["llm"])).name == "llm"
    assert find_adapter(str(paths["vlm"])).name == "vlm"


def test_llm_and_vlm_share_canonical_names_and_layer_map(paths):
    llm, vlm = load_model(str(paths["llm"])), load_model(str(paths["vlm"]))
    assert llm.adapter == "llm" and vlm.adapter == "vlm" and vlm.modality == "image-text"
    assert set(llm.mergeable_parameters()) == set(vlm.mergeable_parameters())
    names = llm.mergeable_parameters()
    assert {"embed_tokens.weight", "norm.weight", "lm_head.weight", "layers.1.mlp.up_proj.weight"} <= set(names)
    assert llm.layer_index("layers.1.self_attn.q_proj.weight") == 1
    assert llm.layer_index("embed_tokens.weight") is None and llm.num_layers == 2
    # vision tower and projector are not mergeable
    assert not any("vision" in n or "projector" in n for n in vlm.mergeable_parameters())
    # the canonical tensors are the live weights
    vlm.mergeable_parameters()["norm.weight"].fill_(3.0)
    assert torch.all(vlm.module.model.language_model.norm.weight == 3.0)


def test_mergeability_errors_name_the_tensor_and_models(paths):
    llm, llm2 = load_model(str(paths["llm"])), load_model(str(paths["llm2"]))
    check_mergeable({"a": llm, "b": llm2})
    with pytest.raises(ModelError, match=r"tensor 'layers.2.*' is in 'deep' but not in 'a'"):
        check_mergeable({"a": llm, "deep": load_model(str(paths["deep"]))})
    with pytest.raises(ModelError, match=r"tensor 'embed_tokens.weight' has shape \(\d+, 32\) in 'a' but \(\d+, 48\)"):
        check_mergeable({"a": llm, "wide": load_model(str(paths["wide"]))})


def test_tokenizer_mismatch_names_the_token(paths, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(paths["llm2"], other)
    tokenizer = json.loads((other / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["ZZ"] = vocab.pop("z")
    (other / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ModelError, match="tokenizers of 'a' and 'b' differ"):
        check_mergeable({"a": load_model(str(paths["llm"])), "b": load_model(str(other))})


def test_unknown_architecture_says_what_to_declare(paths, tmp_path):
    odd = tmp_path / "odd"
    shutil.copytree(paths["llm"], odd)
    config = json.loads((odd / "config.json").read_text())
    config["model_type"] = "falcon"
    (odd / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="no model adapter accepts"):
        load_model(str(odd))


def test_safetensors_only_unless_allowed(paths, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save(load_model(str(paths["llm"])).module.state_dict(), pickled / "pytorch_model.bin")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(paths["llm"] / name, pickled)
    with pytest.raises(ModelError) as info:
        load_model(str(pickled))
    assert "safetensors" in str(info.value) and "--allow-pickle" in str(info.value)
    assert load_model(str(pickled), allow_pickle=True).num_layers == 2


def test_batched_generation_equals_one_at_a_time(paths):
    llm = load_model(str(paths["llm"]))
    prompts = ["abc", "hello there friend", "q: 12", "あいう"]
    batched = llm.generate(prompts, max_new_tokens=6, batch_size=4)
    single = [llm.generate([p], max_new_tokens=6)[0] for p in prompts]
    assert batched == single and len(set(batched)) > 1

    vlm = load_model(str(paths["vlm"]))
    images = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    vprompts = ["scene: <image> q: color?", "<image> what is it", "文：<image> 問："]
    batched = vlm.generate(vprompts, images, max_new_tokens=5, num_beams=2)
    single = [vlm.generate([p], [i], max_new_tokens=5, num_beams=2)[0] for p, i in zip(vprompts, images)]
    assert batched == single


def test_stop_strings_cut_the_completion(paths):
    llm = load_model(str(paths["llm"]))
    full = llm.generate(["abc"], max_new_tokens=10)[0]
    assert len(full) >= 2
    cut = llm.generate(["abc"], max_new_tokens=10, stop=[full[1]])[0]
    assert cut == full[:full.index(full[1])].strip()


def test_saved_vlm_is_in_the_hub_layout_and_loads_back(paths, tmp_path):
    vlm = load_model(str(paths["vlm"]))
    out = vlm.save(tmp_path / "saved", model_card="# card")
    with safe_open(str(out / "model.safetensors"), "pt") as handle:
        keys = set(handle.keys())
    # llava-hf checkpoints on the hub store these names; loading them is what users do
    assert "language_model.model.layers.0.self_attn.q_proj.weight" in keys
    assert any(k.startswith("vision_tower.") for k in keys)
    assert any(k.startswith("multi_modal_projector.") for k in keys)
    again = load_model(str(out))
    for name, tensor in vlm.module.state_dict().items():
        assert torch.equal(tensor, again.module.state_dict()[name]), name
    assert (out / "README.md").read_text() == "# card"
    assert (out / "processor_config.json").exists() or (out / "preprocessor_config.json").exists()
