"""The merge engine: mergekit-compatible YAML configs merged tensor by tensor, on disk or in memory.

- ``config``: mergekit YAML -> validated dataclasses; ``parameters``: parameter values, their checks and
  per-tensor resolution; ``tokenizer_spec``: the ``tokenizer_source`` / ``tokenizer:`` block parsed.
- ``engine``: ``merge_from_config`` writes a Hugging Face model directory from memory-mapped sources:
  ``sources`` reads the models' safetensors, ``plan`` lays out the output tensors (``--dry-run``),
  ``writer`` computes and writes them with the configs, tokenizer and model card.
- ``in_memory``: ``TaskVectorMerger`` merges already loaded sources into preallocated tensors (the evolver).
- ``vocabulary`` / ``tokenizer``: mergekit's ``tokenizer_source``: the output vocabulary, embedding rows
  aligned by token string (``vocabulary.row_map`` maps any target vocabulary onto a source's rows).
- ``sparsify``: the trimming functions (magnitude, DARE, breadcrumbs, DELLA) the task-arithmetic family uses.

The merge methods themselves are plugins (``evosuite.plugins.merge_methods``).
"""

from evosuite.merge.config import MergeConfig, load_config
from evosuite.merge.engine import MergePlan, merge_from_config
from evosuite.merge.in_memory import TaskVectorMerger

__all__ = ["MergeConfig", "MergePlan", "TaskVectorMerger", "load_config", "merge_from_config"]
