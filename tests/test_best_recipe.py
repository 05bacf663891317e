"""A ps run's best_recipe.yaml is a merge recipe: `evosuite merge` rebuilds the exported model from it exactly,
DARE masks included (both draw them from the run's seed and the tensor's checkpoint name)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from evosuite.errors import ConfigError
from evosuite.merge import merge_from_config
from evosuite.merge.config import load_config
from tests import toy_plugin
from tests.conftest import run_cli, write_fake_distribution
from tests.factories import write_llm


def tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    out = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(shard))
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("best-recipe")
    models = {name: str(write_llm(root / name, seed=seed, layers=4))
              for name, seed in (("base", 0), ("a", 1), ("b", 2))}
    source = Path(toy_plugin.__file__).read_text()
    site = write_fake_distribution(root / "site", "evosuite-toy", "evosuite_toy", source)
    config = {"sources": [{"name": "a", "model": models["a"]}, {"name": "b", "model": models["b"]}],
              "base_model": models["base"], "benchmark": "toy-echo", "budget": 4, "seed": 5, "baselines": [],
              # per-layer groups (filter items in the recipe) and densities well below 1 (DARE drops entries)
              "space": {"name": "ps", "options": {"method": "dare_ties", "granularity": 2,
                                                  "ranges": {"density": [0.2, 0.6]}}}}
    (root / "exp.yaml").write_text(yaml.safe_dump(config))
    result = run_cli("run", "--config", str(root / "exp.yaml"), "--run-dir", str(root / "run"), "--quiet",
                     env={"PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    return root / "run", site


def test_best_recipe_rebuilds_the_exported_model_exactly(run, tmp_path):
    run_dir, site = run
    recipe = yaml.safe_load((run_dir / "best_recipe.yaml").read_text())
    assert recipe["merge_method"] == "dare_ties" and recipe["seed"] == 5
    densities = [item["value"] for m in recipe["models"] for item in m["parameters"]["density"]]
    assert max(densities) < 0.61  # DARE really drops entries: equal tensors need equal masks
    merged = run_cli("merge", str(run_dir / "best_recipe.yaml"), str(tmp_path / "out"),
                     env={"PYTHONPATH": str(site)})
    assert merged.returncode == 0, merged.stderr
    exported, rebuilt = tensors(run_dir / "model"), tensors(tmp_path / "out")
    assert set(rebuilt) == set(exported)
    different = [name for name in exported if not torch.equal(exported[name], rebuilt[name])]
    assert different == []


def test_the_recipe_seed_is_the_one_used(run, tmp_path):
    # Another seed draws other masks: the rebuild above matched because the recipe's seed was honoured.
    run_dir, _ = run
    merge_from_config(run_dir / "best_recipe.yaml", tmp_path / "out", seed=6)
    exported, rebuilt = tensors(run_dir / "model"), tensors(tmp_path / "out")
    name = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(exported[name], rebuilt[name])


def test_a_recipe_seed_must_be_an_integer(run):
    run_dir, _ = run
    recipe = yaml.safe_load((run_dir / "best_recipe.yaml").read_text())
    assert load_config(recipe).seed == 5
    with pytest.raises(ConfigError, match="seed: 'five'"):
        load_config({**recipe, "seed": "five"})
    with pytest.raises(ConfigError, match="holds no merge recipe: the carrier keeps"):
        load_config({"no_mergekit_recipe": "the carrier keeps weights the merge leaves as they are", "genome": []})
