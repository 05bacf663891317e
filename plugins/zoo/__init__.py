"""The tiny seeded model zoo: a bilingual miniature of the paper's world, built on the CPU.

``evosuite.plugins.zoo.build.build_zoo`` returns a directory of Hugging Face models and parquet tasks;
``evosuite.plugins.zoo.prompts`` holds the prompt builders and generation settings the benchmarks use.
"""
