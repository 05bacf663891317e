"""Per-stage settings of a ``ps+dfs`` pipeline: budgets and optimizer options (the paper's DFS ran a
population of 128 after about 1000 PS trials)."""

from __future__ import annotations

import pytest

from evosuite.config import parse_config
from evosuite.errors import ConfigError
from evosuite.pipeline import Plan


def pipeline(**options):
    return parse_config({"sources": ["a", "b"], "base_model": "base", "benchmark": "mgsm-ja", "budget": 30,
                         "optimizer": {"name": "cmaes", "options": {"sigma0": 0.2}},
                         "space": {"name": "ps+dfs", "options": options}})


def test_each_stage_gets_its_budget_and_optimizer_options():
    plan = Plan(pipeline(budgets={"ps": 20, "dfs": 128}, optimizers={"dfs": {"popsize": 128}}))
    ps, dfs = plan.stages
    assert (ps.budget, dfs.budget) == (20, 128)
    assert ps.optimizer_options == {"sigma0": 0.2}  # the run's options
    assert dfs.optimizer_options == {"sigma0": 0.2, "popsize": 128}  # updated for this stage only
    even = Plan(pipeline()).stages
    assert [s.budget for s in even] == [15, 15] and even[1].optimizer_options == {"sigma0": 0.2}


@pytest.mark.parametrize("options, message", [
    ({"optimizers": {"dfs": {"pop": 3}}}, "unknown option 'pop' for optimizer 'cmaes'"),
    ({"optimizers": {"pss": {"popsize": 3}}}, "optimizers names 'pss', which is not a stage of 'ps\\+dfs'"),
    ({"budgets": {"dfs2": 3}}, "budgets names 'dfs2', which is not a stage"),
    ({"optimizers": {"dfs": {"popsize": 0}}}, "optimizer option popsize is 0"),  # a stage's values, up front
])
def test_per_stage_mistakes_are_one_line(options, message):
    with pytest.raises(ConfigError, match=message):
        Plan(pipeline(**options))
