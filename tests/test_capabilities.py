"""The optional capabilities declared in ``evosuite.api``: their defaults, and a built-in or third-party
object offering them (the hook meta-tests in test_hookspecs.py check each is declared and exercised)."""

from __future__ import annotations

import pytest
import torch

from evosuite.api import DecoderLayers, LoadedModel, MergeMethod, MergeSpace
from evosuite.errors import ConfigError, ModelError
from evosuite.merge.in_memory import merge_once
from evosuite.models import load_model
from evosuite.plugin_manager import get
from evosuite.testing.models import write_llm


class Bare(LoadedModel):
    """A model that offers none of the optional capabilities."""


def test_a_model_without_optional_capabilities_says_so():
    model = Bare(None, name_or_path="bare")
    assert model.vocab_parameters() == [] and model.config_summary() == {} and model.tokenizer is None
    assert model.image_token is None and not model.classifies
    with pytest.raises(NotImplementedError):
        model.set_vocabulary(None, {})
    with pytest.raises(NotImplementedError):
        model.classify([], ["cat"])


def test_a_transformers_decoder_offers_decoder_layers_and_its_vocabulary(tmp_path):
    model = load_model(str(write_llm(tmp_path / "llm", layers=2)))
    assert isinstance(model, DecoderLayers)
    # A Llama keeps its decoder under ``model.`` and its head at ``lm_head.`` (transformers' LlamaForCausalLM).
    assert model.decoder_prefix == "model." and model.head_prefix == "lm_head."
    assert model.text_config.num_hidden_layers == 2
    assert model.vocab_parameters() == ["embed_tokens.weight", "lm_head.weight"]
    assert model.config_summary()["model_type"] == "llama"


def test_the_dfs_space_refuses_a_model_without_decoder_layers(tmp_path):
    model = load_model(str(write_llm(tmp_path / "llm", layers=2)))
    with pytest.raises(ModelError, match="is not a transformers decoder model"):
        get("spaces", "dfs")([model, Bare(None, name_or_path="bare")], ["a", "b"], None, model)


class Mean(MergeMethod):
    """A third-party method with no fast path: the in-memory merger calls ``merge``."""

    name = "mean"

    def merge(self, tensors, base, model_params, global_params, *, generator=None):
        return sum(tensors) / len(tensors)


def test_a_method_without_merge_flat_is_merged_through_merge():
    assert Mean.merge_flat is None and Mean.takes_deltas is False and Mean.check_sources is None
    out = {"w": torch.zeros(2, 2)}
    sources = [{"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}, {"w": torch.tensor([[3.0, 2.0], [1.0, 0.0]])}]
    merge_once(out, None, sources, Mean(), lambda name: ([{}, {}], {}))
    assert torch.equal(out["w"], torch.tensor([[2.0, 2.0], [2.0, 2.0]]))


def test_builtin_methods_offer_the_fast_path_and_their_search_parameters():
    ties = get("methods", "dare_ties")
    assert ties.takes_deltas and ties.merge_flat is not None  # task vectors, merged flat
    assert tuple(ties.search_parameters) == ("density", "weight")  # what the paper's PS evolves per source
    with pytest.raises(ConfigError):
        get("methods", "slerp").check_sources(3)  # slerp merges exactly two models


def test_a_space_without_the_optional_methods_keeps_the_defaults(tmp_path):
    MergeSpace.validate_options({"anything": 1})  # nothing to refuse without a model
    with pytest.raises(ConfigError, match="cannot score fixed baseline recipes"):
        MergeSpace.check_baselines([{"name": "x"}], ["a", "b"], True)
    MergeSpace.check_baselines(None, ["a", "b"], True)
    model = load_model(str(write_llm(tmp_path / "llm")))
    assert MergeSpace.post_load(model, "somewhere") is None
    # The dfs space's post_load leaves a standard model directory (no evosuite_dfs.json) as loaded.
    assert get("spaces", "dfs").post_load(model, str(tmp_path / "llm")) in (None, model)


def test_loading_asks_each_source_to_describe_itself_once(tmp_path, monkeypatch):
    from evosuite.config import parse_config
    from evosuite.loading import load_sources
    from evosuite.plugins.llm import CausalLM

    calls = []
    monkeypatch.setattr(CausalLM, "describe", lambda self: calls.append(self.name_or_path) or "runs as text")
    paths = [str(write_llm(tmp_path / "a")), str(write_llm(tmp_path / "b", seed=1))]
    _, _, notes = load_sources(parse_config({"sources": paths, "benchmark": "mgsm-ja", "carrier": "b"}))
    assert calls == paths  # once each, in source order
    assert notes[:2] == ["a: runs as text", "b: runs as text"]
