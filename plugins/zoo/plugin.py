"""The tiny offline zoo as one plugin: its experiments (``evosuite run --plugin vlm|llm|clip``), its benchmarks
(``zoo-ja-vqa``, ``zoo-ja-math``, ``zoo-clip-union``) and its command (``evosuite zoo``).

The zoo depends on the built-ins (it builds models the llm, vlm and clip adapters load, and scores them with
the built-in metrics); no built-in depends on the zoo.
"""

from __future__ import annotations

from evosuite import hookimpl


@hookimpl
def register_experiments(register):
    from evosuite.plugins.zoo.experiments import ZooClipExperiment, ZooLLMExperiment, ZooVLMExperiment

    register(ZooVLMExperiment())
    register(ZooLLMExperiment())
    register(ZooClipExperiment())


@hookimpl
def register_benchmarks(register):
    from evosuite.plugins.zoo.benchmarks import ZooJapaneseMath, ZooJapaneseVQA
    from evosuite.plugins.zoo.clip_benchmark import ZooClipUnion

    register(ZooJapaneseVQA)
    register(ZooJapaneseMath)
    register(ZooClipUnion)


@hookimpl
def register_commands(cli):
    from evosuite.plugins.zoo.commands import add_zoo_command

    add_zoo_command(cli)
