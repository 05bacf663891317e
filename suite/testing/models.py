"""Tiny random-weight Hugging Face models, written to disk in a second or two.

The same two families as the tiny zoo (a Llama causal LM and a LLaVA VLM over it), and a GPT-2, with a shared
char-level tokenizer, but with random weights: they load, generate and merge like real models, in tests
that cannot wait minutes for ``evosuite zoo build``. ``write_llm(path)`` and ``write_vlm(path)`` return
the directory, which ``evosuite.models.load_model`` (and ``evosuite eval --model``) accept.
``write_tiny(path, family)`` and ``write_llava_next(path)`` write other families (GPT-2, Falcon, BERT, a
LLaVA-NeXT...) for tests of how their layers are named.
"""

from __future__ import annotations

from pathlib import Path

import torch

CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789 .,:?!") + list("あいうえおかきくけこさしすせそたちつてと")
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]


def char_tokenizer(tokens: list[str] | None = None, added: tuple[str, ...] = ()):
    """A fast char-level tokenizer that ``AutoTokenizer`` loads offline: ``tokens`` (default: the specials,
    then the chars) in id order, then ``added`` appended as added tokens (as ``add_tokens`` does)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(tokens or SPECIALS + CHARS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"<image>|[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})
    tokenizer.add_tokens(list(added))
    return tokenizer


def text_config(layers: int = 2, hidden: int = 32, *, vocab_size: int | None = None, tokenizer=None):
    """A tiny Llama config; the special token ids are ``tokenizer``'s when given."""
    from transformers import LlamaConfig

    ids = ({"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id} if tokenizer is not None
           else {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0})
    return LlamaConfig(vocab_size=vocab_size or len(SPECIALS) + len(CHARS), hidden_size=hidden,
                       intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=4,
                       num_key_value_heads=4, max_position_embeddings=256, tie_word_embeddings=False, **ids)


def write_llm(path: Path, *, seed: int = 0, layers: int = 2, hidden: int = 32, tokens: list[str] | None = None,
              added: tuple[str, ...] = ()) -> Path:
    """A tiny Llama; ``tokens`` and ``added`` give its vocabulary (see ``char_tokenizer``), one row per id."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = char_tokenizer(tokens, added)
    model = LlamaForCausalLM(text_config(layers, hidden, vocab_size=len(tokenizer), tokenizer=tokenizer))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_vlm(path: Path, *, seed: int = 0, layers: int = 2, hidden: int = 32, tokens: list[str] | None = None,
              added: tuple[str, ...] = ()) -> Path:
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    torch.manual_seed(seed)
    tokenizer = char_tokenizer(tokens, added)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=16, patch_size=8)
    config = LlavaConfig(vision_config=vision,
                         text_config=text_config(layers, hidden, vocab_size=len(tokenizer), tokenizer=tokenizer),
                         image_token_id=tokenizer.convert_tokens_to_ids("<image>"), image_seq_length=4,
                         vision_feature_select_strategy="default", vision_feature_layer=-1)
    model = LlavaForConditionalGeneration(config)
    model.save_pretrained(path)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)
    processor.save_pretrained(path)
    return path


#: Tiny configs of families people merge, for tests of layer names (``write_tiny``): the layer count is set
#: through ``num_hidden_layers``, which every config maps to its own key (``n_layer`` in GPT-2...).
TINY_FAMILIES = {
    "gpt2": {"n_embd": 16, "n_head": 2, "n_positions": 32},
    "gpt_bigcode": {"n_embd": 16, "n_head": 2, "n_positions": 32},
    "gptj": {"n_embd": 16, "n_head": 2, "rotary_dim": 4, "n_positions": 32},
    "falcon": {"hidden_size": 16, "num_attention_heads": 2},
    "bloom": {"hidden_size": 16, "n_head": 2},
    "gpt_neox": {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32},
    "phi3": {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32, "pad_token_id": 0},
    "qwen2": {"hidden_size": 16, "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 32},
    "bert": {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32},
}


def write_tiny(path: Path, model_type: str, *, seed: int = 0, layers: int = 2, vocab_size: int = 64,
               tokenizer=None, **overrides) -> Path:
    """A tiny seeded model of ``model_type`` (a key of ``TINY_FAMILIES``), saved with ``save_pretrained``;
    with a ``tokenizer`` (e.g. ``char_tokenizer()``), its vocabulary and special ids, saved beside the model."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    ids = {"vocab_size": vocab_size, "bos_token_id": 1, "eos_token_id": 2}
    if tokenizer is not None:
        ids = {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
               "eos_token_id": tokenizer.eos_token_id}
    config = AutoConfig.for_model(model_type, num_hidden_layers=layers, **ids,
                                  **{**TINY_FAMILIES[model_type], **overrides})
    torch.manual_seed(seed)
    auto = AutoModel if model_type == "bert" else AutoModelForCausalLM
    auto.from_config(config).save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


def write_llava_next(path: Path, *, seed: int = 0, text_layers: int = 2, vision_layers: int = 2) -> Path:
    """A tiny seeded LLaVA-NeXT (Llama text model, CLIP vision tower), saved with ``save_pretrained``."""
    from transformers import CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=vision_layers,
                              num_attention_heads=2, image_size=16, patch_size=8)
    config = LlavaNextConfig(vision_config=vision, text_config=text_config(text_layers, 16),
                             image_grid_pinpoints=[[16, 16], [16, 32]], image_token_index=4)
    torch.manual_seed(seed)
    LlavaNextForConditionalGeneration(config).save_pretrained(path)
    return path
