"""What a merge space contributes to reports, model cards and the command line comes from the space itself
(``MergeSpace.describe``, ``figure``, ``card_tags``, ``loading_note``, ``cli_options``): a third-party space
gets the same treatment as the built-ins. Also the pipeline's per-stage options and the Ray workers' environment.
"""

from __future__ import annotations

import click
import pytest
import yaml

from evosuite import hookimpl
from evosuite.api import MergeSpace
from evosuite.config import parse_config
from evosuite.errors import ConfigError
from evosuite.model_card import model_card
from evosuite.pipeline import set_stage_option, space_class


class KnobSpace(MergeSpace):
    name = "knob"
    description = "a space that only turns a knob"
    options = {"knob": "low"}
    card_tags = ("knob-merge", "toy")
    cli_options = {"knob": ("How far to turn the knob.", ("low", "high"))}

    @classmethod
    def describe(cls, recipe):
        return [("p", f"The knob is at {recipe['knob']}.")]

    @classmethod
    def loading_note(cls, recipe):
        return "Turn the knob back before loading." if recipe["knob"] == "high" else None


class KnobPlugin:
    @hookimpl
    def register_merge_spaces(self, register):
        register(KnobSpace)


def _summary(recipe):
    return {"benchmark": "mgsm-ja", "metric": "accuracy", "split": "test", "evaluations": 4, "seed": 0,
            "test_scores": {"a": 0.1, "merged": 0.2}, "test_metrics": {}, "recipe": recipe,
            "stages": {"knob": {"search_fitness": 0.2}}, "sources": ["a", "b"]}


def _config():
    return parse_config({"sources": [{"name": "a", "model": "org/a"}, {"name": "b", "model": "org/b"}],
                         "benchmark": "mgsm-ja", "space": {"name": "knob"}})


def test_a_third_party_space_tags_and_explains_its_model_card(register_plugin):
    register_plugin(KnobPlugin(), "knob-plugin")
    card = model_card(_summary({"space": "knob", "knob": "high"}), _config())
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["tags"][-2:] == ["knob-merge", "toy"]  # its tags, not its name
    assert "Turn the knob back before loading." in card
    plain = model_card(_summary({"space": "knob", "knob": "low"}), _config())
    assert "Turn the knob back" not in plain and "any `transformers` loader reads it" in plain


def test_a_third_party_space_describes_its_recipe_in_the_report(register_plugin):
    from evosuite.report.render import _recipes

    register_plugin(KnobPlugin(), "knob-plugin")

    class Data:
        space_class = staticmethod(space_class)

        @staticmethod
        def stage_recipes():
            return {"knob": {"space": "knob", "knob": "high"}, "old": {"space": "gone", "x": 1}}

    blocks = _recipes(Data(), {}, "figures")
    assert ("p", "The knob is at high.") in blocks
    # A space no installed plugin registers: the base class's default, the recipe as YAML.
    assert ("code", "space: gone\nx: 1\n", "yaml") in blocks


def test_a_space_flag_is_the_same_as_a_stage_option(register_plugin):
    from evosuite.commands.run import _parse_stage_options, add_space_flags

    register_plugin(KnobPlugin(), "knob-plugin")
    seen = {}

    @click.command()
    @click.pass_context
    def command(ctx):
        seen["flags"] = ctx.meta.get("evosuite.space_flags", [])

    add_space_flags(command)
    command.main(["--knob-knob", "high"], standalone_mode=False)
    assert seen["flags"] == [("knob", "knob", "high")]
    with pytest.raises(click.BadParameter):  # the space's declared values are checked by the flag
        command.main(["--knob-knob", "sideways"], standalone_mode=False)
    assert _parse_stage_options(["knob.knob=high"], []) == seen["flags"]
    given = ["dfs.repeats=2", "dfs.scale_range=[0, 1.5]", "dfs.scales=off", "x.flag=true"]
    # Values are parsed as YAML, but only true/false are flags: "off" is the word.
    assert _parse_stage_options(given, []) == [("dfs", "repeats", 2), ("dfs", "scale_range", [0, 1.5]),
                                               ("dfs", "scales", "off"), ("x", "flag", True)]
    with pytest.raises(ConfigError, match="is not STAGE.KEY=VALUE"):
        _parse_stage_options(["scales=off"], [])


def test_a_stage_option_goes_to_the_space_or_to_its_pipeline_stage():
    assert set_stage_option("dfs", "dfs", "scales", "off") == {"name": "dfs", "options": {"scales": "off"}}
    assert set_stage_option({"name": "ps+dfs", "options": {"dfs": {"repeats": 2}, "budgets": {"ps": 3}}},
                            "dfs", "scales", "hop") == {
        "name": "ps+dfs", "options": {"dfs": {"repeats": 2, "scales": "hop"}, "budgets": {"ps": 3}}}
    with pytest.raises(ConfigError, match="stage 'dfs', but the run's space is 'ps'"):
        set_stage_option({"name": "ps"}, "dfs", "scales", "off")


def test_workers_get_the_whole_environment_but_what_ray_sets(monkeypatch):
    from evosuite.ray_pool import _worker_env

    monkeypatch.setenv("SOME_PLUGIN_SETTING", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = _worker_env()
    assert env["SOME_PLUGIN_SETTING"] == "42" and env["OMP_NUM_THREADS"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in env and "RAY_ADDRESS" not in env
