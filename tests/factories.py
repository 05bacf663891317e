"""Tiny random Hugging Face models written to disk in seconds, for tests that need no trained zoo."""

from evosuite.testing.models import CHARS, SPECIALS, char_tokenizer, text_config, write_llm, write_vlm  # noqa: F401
