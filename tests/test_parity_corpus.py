"""The mergekit parity corpus (scripts/mergekit_parity_corpus.yaml) is well formed: every recipe is one evosuite's
parser accepts, or is marked as one it may refuse (with the reason); the parity script itself is not run here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from evosuite.errors import EvosuiteError
from evosuite.merge.config import load_config

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mergekit_parity.py"
PLACEHOLDERS = ("BASE", "A", "B", "BASE16", "A16", "B16", "ROWS32032", "SHUFFLED")


def parity_script():
    spec = importlib.util.spec_from_file_location("mergekit_parity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PARITY = parity_script()
CORPUS = PARITY.load_corpus()


def test_the_corpus_covers_the_shapes_and_families_it_promises():
    names = [e["name"] for e in CORPUS]
    assert len(names) == len(set(names)), "recipe names must be unique"
    methods = {e["recipe"]["merge_method"] for e in CORPUS}
    # mergekit 0.1.5's twenty methods (its merge_methods registry)
    assert methods == {"linear", "slerp", "nuslerp", "multislerp", "karcher", "task_arithmetic", "ties",
                       "dare_ties", "dare_linear", "breadcrumbs", "breadcrumbs_ties", "della", "della_linear",
                       "sce", "model_stock", "nearswap", "arcee_fusion", "passthrough", "ram", "ramplus_tl"}
    assert {f for e in CORPUS for f in e["families"]} == set(PARITY.FAMILIES)
    for entry in CORPUS:
        assert set(entry) <= {"name", "families", "recipe", "random", "mergekit_lacks", "evosuite_refusal", "note"}
        assert entry["families"] and set(entry["families"]) <= set(PARITY.FAMILIES), entry["name"]
        # every random method is flagged, so the script compares its statistics rather than its values
        # (arcee_fusion samples its ranking on tensors over 1e6 entries: the Mistral replicas' embeddings)
        random_methods = {"dare_ties", "dare_linear", "della", "della_linear", "arcee_fusion"}
        assert bool(entry.get("random")) == (entry["recipe"]["merge_method"] in random_methods), entry["name"]


def test_placeholders_become_paths_and_layer_counts():
    recipe = {"slices": [{"sources": [{"model": "A", "layer_range": [0, "{L}"]}]}], "tokenizer_source": "SHUFFLED"}
    resolved = PARITY.resolve(recipe, {"A": "/m/a", "SHUFFLED": "/m/s"}, 4)
    assert resolved == {"slices": [{"sources": [{"model": "/m/a", "layer_range": [0, 4]}]}],
                        "tokenizer_source": "/m/s"}


@pytest.mark.parametrize("entry", CORPUS, ids=[e["name"] for e in CORPUS])
def test_each_recipe_parses_or_is_refused_as_marked(entry):
    recipe = PARITY.resolve(entry["recipe"], {p: f"/models/{p.lower()}" for p in PLACEHOLDERS}, 4)
    assert isinstance(recipe.get("merge_method"), str)
    assert ("models" in recipe) != ("slices" in recipe)  # mergekit's rule: exactly one of them
    if entry.get("evosuite_refusal"):
        with pytest.raises(EvosuiteError):
            load_config(recipe)
        return
    try:
        load_config(recipe)
    except EvosuiteError as exc:
        pytest.fail(f"{entry['name']}: evosuite refuses a recipe the corpus expects it to parse: {exc}")
