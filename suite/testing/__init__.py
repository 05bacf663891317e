"""A testing kit for plugin authors, shipped with evosuite.

Installing evosuite registers ``evosuite.testing.fixtures`` as a pytest plugin (the ``pytest11`` entry
point), so any test suite in the same environment gets these fixtures without a ``conftest.py``:

- ``evosuite_tiny_llm`` / ``evosuite_tiny_vlm``: paths to tiny random-weight models of the two families
  the tiny zoo has (a Llama causal LM; a LLaVA VLM around the same kind of LM), written once per session.
- ``evosuite_tiny_run_dir``: a small finished run directory, written with ``evosuite.run_store.RunStore``.
- ``evosuite_plugin_host``: a fresh plugin host for one test; ``.register(plugin, name)`` adds a plugin
  object, removed again when the test ends.

and ``evosuite.testing.checks`` has the helpers:

- ``check_plugin_registrations(module_or_plugin)``: the plugin's hooks are evosuite hooks, what it
  registers has names, descriptions, the right base class and the methods that class requires, and
  nothing clashes with the built-ins.
- ``check_benchmark(benchmark_cls, model)``: items, predictions and scores of a benchmark on a model.

and ``evosuite.testing.replicas`` writes tiny, seeded replicas of the real families the paper merged, with
their config quirks and vocabularies (``write_replica(hub_id, path)``, ``write_paper_zoo(root)``), and
``evosuite.testing.models`` tiny seeded models of other families, for tests of layer names: ``write_tiny(path,
"gpt2")`` (GPT-2, GPT-J, GPTBigCode, Falcon, BLOOM, GPT-NeoX, Phi-3, Qwen2, BERT) and ``write_llava_next(path)``.
"""

from evosuite.testing.checks import PluginReport, check_benchmark, check_plugin_registrations

__all__ = ["PluginReport", "check_benchmark", "check_plugin_registrations"]
