"""The ``vlm`` plugin: LLaVA-style vision-language models through ``AutoModelForImageTextToText``.

Only the language model inside is mergeable (its parameters get the same canonical names as a plain
causal LM's), so a VLM merges with text-only sources while its vision tower and projector are kept,
as the paper did for EvoVLM-JP.
"""

from __future__ import annotations

from typing import Any, Mapping

from evosuite import hookimpl
from evosuite.api import ModelAdapter
from evosuite.errors import ModelError
from evosuite.plugins.hf_models import HFModel, architectures, from_pretrained, prepare_tokenizer


class LlavaModel(HFModel):
    adapter = "vlm"
    modality = "image-text"

    def __init__(self, module, *, name_or_path, processor):
        self.wrapper = module.config.model_type
        super().__init__(module, name_or_path=name_or_path, tokenizer=processor.tokenizer, processor=processor)

    @property
    def image_token(self) -> str:
        return getattr(self.processor, "image_token", "<image>")

    def _encode(self, prompts, images):
        if images is None or any(image is None for image in images):
            # Text-only prompts are fine for a VLM: the language model answers without an image.
            if images is not None and any(image is not None for image in images):
                raise ModelError("a batch mixes prompts with and without images", "batch them separately")
            return dict(self.tokenizer(list(prompts), return_tensors="pt", padding=True))
        missing = [p for p in prompts if self.image_token not in p]
        if missing:
            raise ModelError(f"prompt {missing[0][:40]!r} has no {self.image_token} token",
                             "put the image token where the image belongs in the prompt template")
        return dict(self.processor(images=list(images), text=list(prompts), return_tensors="pt", padding=True))


class VLMAdapter(ModelAdapter):
    name = "vlm"
    description = "LLaVA-style VLMs (llava, llava_next): the language model is merged, the vision tower kept"

    def detect(self, config: Mapping[str, Any]) -> bool:
        return config.get("model_type") in architectures()["decoder_prefixes"] and "vision_config" in config

    def load(self, name_or_path, *, dtype="float32", device="cpu", trust_remote_code=False, allow_pickle=False):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        module = from_pretrained(AutoModelForImageTextToText, name_or_path, dtype=dtype, device=device,
                                 trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
        processor = AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        prepare_tokenizer(processor.tokenizer)
        return LlavaModel(module, name_or_path=str(name_or_path), processor=processor)


@hookimpl
def register_model_adapters(register):
    register(VLMAdapter())


@hookimpl
def register_experiments(register):
    from evosuite.plugins.zoo.experiments import ZooVLMExperiment

    register(ZooVLMExperiment())
