"""The ``llm`` plugin: causal language models through ``transformers.AutoModelForCausalLM``."""

from __future__ import annotations

from typing import Any, Mapping

from evosuite import architectures, hookimpl
from evosuite.api import ModelAdapter
from evosuite.plugins.hf_models import HFModel, from_pretrained, prepare_tokenizer


class CausalLM(HFModel):
    adapter = "llm"
    modality = "text"

    def _encode(self, prompts, images):
        if images is not None and any(image is not None for image in images):
            from evosuite.errors import ModelError

            raise ModelError(f"model {self.name_or_path!r} is a text-only language model and got images",
                             "attach a vision tower by merging it with a VLM source (the VLM is the carrier)")
        return dict(self.tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=True))


class LLMAdapter(ModelAdapter):
    name = "llm"
    description = "causal language models (Llama, Mistral, Qwen2, Gemma...) via AutoModelForCausalLM"

    def detect(self, config: Mapping[str, Any]) -> bool:
        return config.get("model_type") in architectures.families("causal-lm", run=True)

    def load(self, name_or_path, *, dtype="float32", device="cpu", trust_remote_code=False, allow_pickle=False):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        module = from_pretrained(AutoModelForCausalLM, name_or_path, dtype=dtype, device=device,
                                 trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(name_or_path,
                                                                    trust_remote_code=trust_remote_code))
        return CausalLM(module, name_or_path=str(name_or_path), tokenizer=tokenizer)


@hookimpl
def register_model_adapters(register):
    register(LLMAdapter())

