"""The ``vlm`` plugin: LLaVA-style vision-language models through ``AutoModelForImageTextToText``.

Only the language model inside is mergeable (its parameters get the same canonical names as a plain
causal LM's), so a VLM merges with text-only sources while its vision tower and projector are kept,
as the paper did for EvoVLM-JP.

Option ``image_mode`` (a source's ``options:`` in the run config) chooses how images reach the model:

- ``anyres``: LLaVA-NeXT's tiling, as a ``llava_next`` checkpoint's own processor does: a base image at the
  tower's resolution plus tiles over the best-fitting ``image_grid_pinpoints`` grid, with an ``image_newline``
  after each row (llava-v1.6-mistral-7b-hf: 576 base tokens, up to 2928 per image).
- ``single``: one image at the tower's resolution (shortest side resized, centre crop), (res / patch)^2 tokens
  (576 at 336 px / 14), as the paper evaluated: Sakana's code ran transformers 4.38's
  ``LlavaForConditionalGeneration``, which has no tiling and no ``image_newline``. A ``llava_next`` checkpoint
  is then loaded as a plain ``llava`` model (same tower, projector and language model; ``image_newline`` is
  unused) with a ``LlavaProcessor``, so what it exports is a plain ``llava`` model, like EvoVLM-JP-v1-7B.

The default (unset) is what the checkpoint's processor does: ``anyres`` for ``llava_next``, ``single`` for
``llava``; a run then behaves as ``transformers`` would run the checkpoint. Set ``single`` to reproduce the
paper's numbers and to cut image tokens (and time) several-fold.
"""

from __future__ import annotations

from typing import Any, Mapping

from evosuite import architectures, hookimpl
from evosuite.api import ModelAdapter
from evosuite.errors import ConfigError, ModelError
from evosuite.plugins.hf_models import HFModel, from_pretrained, prepare_tokenizer, read_config

IMAGE_MODES = ("anyres", "single")


class LlavaModel(HFModel):
    adapter = "vlm"
    modality = "image-text"

    def __init__(self, module, *, name_or_path, processor):
        #: How images reach the model: ``anyres`` tiles (``llava_next``) or ``single`` (plain ``llava``).
        self.image_mode = "anyres" if module.config.model_type == "llava_next" else "single"
        super().__init__(module, name_or_path=name_or_path, tokenizer=processor.tokenizer, processor=processor)

    def describe(self) -> str:
        """One line for the run's log: the image mode and its image tokens per image."""
        config = self.module.config
        resolution, patch = config.vision_config.image_size, config.vision_config.patch_size
        side = resolution // patch
        # 'default' selection drops the tower's CLS token, 'full' keeps it.
        base = side * side + (config.vision_feature_select_strategy == "full")
        if self.image_mode == "single":
            return f"image_mode single: {base} image tokens per image (one {resolution} px image, patch {patch})"
        # A tile grid of gh x gw tiles gives (gh*side) x (gw*side) features plus one image_newline per row;
        # unpadding to the image's aspect ratio can only remove rows or columns, so this is the most.
        most = max((h // resolution * side) * (w // resolution * side) + h // resolution * side
                   for h, w in config.image_grid_pinpoints)
        grids = len(config.image_grid_pinpoints)
        return (f"image_mode anyres: up to {base + most} image tokens per image ({base} for the {resolution} px "
                f"base image, the rest from tiles over the best of {grids} grids for its size, patch {patch})")

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
    #: ``image_mode``: None (the checkpoint's own: anyres for llava_next, single for llava), anyres or single.
    options = {"image_mode": None}

    def detect(self, config: Mapping[str, Any]) -> bool:
        return config.get("model_type") in architectures.families("image-text", run=True) and "vision_config" in config

    def load(self, name_or_path, *, dtype="float32", device="cpu", trust_remote_code=False, allow_pickle=False,
             image_mode=None):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if image_mode is not None and image_mode not in IMAGE_MODES:
            raise ConfigError(f"unknown image_mode {image_mode!r} for model {str(name_or_path)!r}",
                              f"use one of {', '.join(IMAGE_MODES)} (or leave it unset for the checkpoint's own)")
        model_type = read_config(name_or_path, trust_remote_code=trust_remote_code).get("model_type")
        native = "anyres" if model_type == "llava_next" else "single"
        if image_mode == "anyres" and native != "anyres":
            raise ConfigError(f"model {str(name_or_path)!r} is a {model_type!r} model, which has no anyres tiling",
                              "use image_mode: single, or leave image_mode unset")
        load = dict(dtype=dtype, device=device, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
        processor = AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        if (image_mode or native) == "single" and native == "anyres":
            module, processor = _as_single_image_llava(name_or_path, processor, load)
        else:
            module = from_pretrained(AutoModelForImageTextToText, name_or_path, **load)
        prepare_tokenizer(processor.tokenizer)
        return LlavaModel(module, name_or_path=str(name_or_path), processor=processor)


def _as_single_image_llava(name_or_path, next_processor, load: dict):
    """A ``llava_next`` checkpoint as a plain ``llava`` model and processor: one image at the tower's
    resolution, no tiles, no ``image_newline`` (what transformers 4.38's LlavaForConditionalGeneration ran).

    Both classes name the tower, projector and language model the same (``model.vision_tower``,
    ``model.multi_modal_projector``, ``model.language_model``, ``lm_head``), so the checkpoint's weights load
    as they are; only ``model.image_newline`` is left out.
    """
    from transformers import AutoConfig, CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.utils import logging as hf_logging

    source = AutoConfig.from_pretrained(name_or_path, trust_remote_code=load["trust_remote_code"])
    vision = source.vision_config
    config = LlavaConfig(vision_config=vision.to_dict(), text_config=source.text_config.to_dict(),
                         image_token_index=source.image_token_index, projector_hidden_act=source.projector_hidden_act,
                         vision_feature_layer=source.vision_feature_layer,
                         vision_feature_select_strategy=source.vision_feature_select_strategy,
                         multimodal_projector_bias=source.multimodal_projector_bias,
                         image_seq_length=(vision.image_size // vision.patch_size) ** 2,
                         tie_word_embeddings=source.tie_word_embeddings)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the unused image_newline is expected, not worth a warning
    try:
        module = from_pretrained(LlavaForConditionalGeneration, name_or_path, config=config, **load)
    finally:
        hf_logging.set_verbosity(verbosity)
    tiles = next_processor.image_processor
    images = CLIPImageProcessor(size={"shortest_edge": vision.image_size},
                                crop_size={"height": vision.image_size, "width": vision.image_size},
                                do_center_crop=True, image_mean=tiles.image_mean, image_std=tiles.image_std,
                                resample=tiles.resample)
    # num_additional_image_tokens=1: CLIP's CLS, which 'default' selection drops again.
    processor = LlavaProcessor(image_processor=images, tokenizer=next_processor.tokenizer,
                               patch_size=vision.patch_size, num_additional_image_tokens=1,
                               vision_feature_select_strategy=source.vision_feature_select_strategy,
                               chat_template=getattr(next_processor, "chat_template", None))
    return module, processor


@hookimpl
def register_model_adapters(register):
    register(VLMAdapter())

