"""Prompt templates and generation settings of the paper's public evaluation code.

Source (facts, re-typed here): SakanaAI/evolutionary-model-merge, ``evomerge/models/prompt_templates.py``
(the templates), ``evomerge/models/llava.py`` (``<image>`` then a newline before the question),
``configs/vlm/*.yaml`` (VLM generation), ``evomerge/models/causallm.py`` (MGSM generation through vLLM).

A template is a string with one ``{input}`` field. The ``template`` option of a benchmark takes a name
below or such a string; ``system_message`` replaces the system message of the Llama-2-style templates.
"""

from __future__ import annotations

from typing import Mapping

from evosuite.errors import ConfigError

#: System message of the paper's VQA template (``ja-shisa-vqa``).
JA_VQA_SYSTEM = ("あなたは役立つ、偏見がなく、検閲されていないアシスタントです。"
                 "与えられた画像を下に、質問に答えてください。")

#: Llama-2 chat format with a system block: what the paper used for every LLaVA-based model.
LLAMA2_SYSTEM_TEMPLATE = "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{input} [/INST]"

TEMPLATES: dict[str, str] = {
    # VLM benchmarks, all LLaVA-based models of the paper (configs/vlm/*.yaml: template ja-shisa-vqa).
    "ja-shisa-vqa": LLAMA2_SYSTEM_TEMPLATE.replace("{system}", JA_VQA_SYSTEM),
    # MGSM-JA, every language model of the paper (configs/llm/*.yaml: template ja-alpaca-cot).
    "ja-alpaca-cot": (
        "以下に、あるタスクを説明する指示があります。リクエストを適切に完了するための回答を日本語で記述してください。"
        "一歩一歩考えましょう。\n\n### 指示:\n{input}\n\n### 応答:"
    ),
    # LLaVA-1.6-Mistral's own format (the paper's LLaVA default, overridden by its configs).
    "llava-mistral": "<s>[INST] {input} [/INST]",
    # Japanese Stable VLM and Heron v1 (the paper's other VLM baselines).
    "jsvlm": (
        "以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。\n\n"
        "### 指示: \n与えられた画像を下に、質問に答えてください。\n\n### 入力: \n{input}\n\n### 応答: "
    ),
    "ja-heron-v1": "##human: {input}\n##gpt: ",
}

#: What goes into ``{input}`` for an image question (evomerge/models/llava.py ``build_prompt``).
IMAGE_INPUT = "{image}\n{question}"

#: VLM generation of the paper's configs (configs/vlm/llava-1-6-mistral-7b.yaml, evovlm-v1-jp-7b.yaml).
VLM_GENERATION = {"num_beams": 5, "repetition_penalty": 1.5, "max_new_tokens": 512, "batch_size": 4}

#: MGSM generation (evomerge/models/causallm.py): greedy (temperature 0), up to 1024 tokens, no penalty,
#: cut at these strings.
MGSM_GENERATION = {"num_beams": 1, "repetition_penalty": 1.0, "max_new_tokens": 1024, "batch_size": 8}
MGSM_STOP = ("Instruction:", "Instruction", "Response:", "Response")


def resolve_template(template: str | None, adapter: str, defaults: Mapping[str, str], *,
                     system_message: str | None = None) -> str:
    """The template text for a model adapter: the ``template`` option, else the adapter's default.

    ``defaults`` maps adapter names to template names, with ``"*"`` for any other adapter.
    """
    chosen = template if template is not None else defaults.get(adapter, defaults["*"])
    text = TEMPLATES.get(chosen, chosen)
    if "{input}" not in text:
        raise ConfigError(f"template {chosen!r} is neither a known template nor a string with {{input}}",
                          f"known templates: {', '.join(sorted(TEMPLATES))}")
    if system_message is not None:
        if JA_VQA_SYSTEM not in text:
            raise ConfigError("system_message given but the template has no system message to replace",
                              "use a template with a <<SYS>> block (ja-shisa-vqa) or write the message into it")
        text = text.replace(JA_VQA_SYSTEM, system_message)
    return text


def render(template: str, text: str) -> str:
    """Fill ``{input}`` without interpreting other braces in the template or the text."""
    return template.replace("{input}", text)
