"""Tiny, seeded, architecture-faithful replicas of the model families the paper merged.

Each replica has the real checkpoint's config quirks (model type, GQA, rope theta, sliding window, maximum
positions, special-token ids, embedding rows, added tokens, image tiling) at about fifteen thousand
parameters per layer, random weights, and is written with ``save_pretrained`` (safetensors, bfloat16 like
the real ones), so the code paths a real merge takes (vocabulary alignment, config differences, anyres
images, export) run on CPU in a second or two:

- ``write_replica(hub_id, path)`` writes one replica (``REPLICAS`` lists the hub ids it knows);
- ``write_paper_zoo(root)`` writes them all under ``root/<hub id>``, so a config naming
  ``augmxnt/shisa-gamma-7b-v1`` runs on ``root/augmxnt/shisa-gamma-7b-v1`` instead.

The Mistral fine-tunes (shisa-gamma, WizardMath, Abel, LLaVA-NeXT's language model) are the base replica's
weights plus a seeded perturbation, so their task vectors mean something. The facts used are pinned in
comments with where they were read; "assumed" marks the few that no available copy confirmed.
"""

from __future__ import annotations

import zlib
from functools import lru_cache
from pathlib import Path

import torch

BASE = "mistralai/Mistral-7B-v0.1"
SHISA = "augmxnt/shisa-gamma-7b-v1"
WIZARDMATH = "WizardLMTeam/WizardMath-7B-V1.1"
ABEL = "GAIR/Abel-7B-002"
LLAVA_NEXT = "llava-hf/llava-v1.6-mistral-7b-hf"
LLAMA = "meta-llama/Llama-2-7b-hf"
QWEN2 = "Qwen/Qwen2-0.5B"

#: The hub ids ``write_replica`` knows, base first.
REPLICAS = (BASE, SHISA, WIZARDMATH, ABEL, LLAVA_NEXT, LLAMA, QWEN2)

# -- the shared Mistral/Llama-style vocabulary ----------------------------------------------------------------
#: Rows of Mistral-7B-v0.1, shisa-gamma-7b-v1 and WizardMath-7B-V1.1, and the size of their shared
#: SentencePiece vocabulary (/work/shared/paper/FACTS.md; the arcee-ai DAM repository computes logits of
#: shisa-gamma, WizardMath and Abel with the one Mistral-7B-v0.1 tokenizer).
MISTRAL_VOCAB = 32000
#: Embedding rows of Abel-7B-002 (FACTS.md). No copy of its tokenizer files could be found; the evidence is
#: arcee-ai's DAM README, which merges ``arcee-train/Abel-7B-002-truncated-embeds`` (rows cut to 32000) with
#: the 32000-row models under the one Mistral tokenizer, which only works if no token uses rows 32000-32031.
#: So the replica keeps the 32000-token tokenizer and its 32 extra rows are padding.
ABEL_ROWS = 32032
#: llava-v1.6-mistral-7b-hf: ``<image>`` = 32000 and ``<pad>`` = 32001 are added tokens, and the rows are
#: padded to a multiple of 64, 32064 (FACTS.md; vector-inference's llava-v1.6 config sets
#: VLLM_MAX_LOGPROBS=32064).
LLAVA_ROWS = 32064
IMAGE_TOKEN, IMAGE_TOKEN_ID = "<image>", 32000
PAD_TOKEN, PAD_TOKEN_ID = "<pad>", 32001

_SPECIALS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2 in Llama and Mistral vocabularies
_BYTES = [f"<0x{b:02X}>" for b in range(256)]  # ids 3..258: SentencePiece byte fallback
_ASCII = [chr(c) for c in range(33, 127)]
_HIRAGANA = [chr(c) for c in range(0x3041, 0x3097)]
_KATAKANA = [chr(c) for c in range(0x30A1, 0x30FB)] + ["ー"]
_JA_PUNCT = list("、。「」『』！？（）：・〜")
_FULLWIDTH_DIGITS = [chr(c) for c in range(0xFF10, 0xFF1A)]
# Common kanji (numbers, time, school arithmetic, everyday words); anything else falls back to bytes.
_KANJI = list(
    "一二三四五六七八九十百千万円年月日時分秒週間半何人口目耳手足力男女子学校先生名前本文字数計算答問題"
    "式和差積商合計全部個枚冊台回倍割引点線図形長短高低大小多少上下左右前後中外内東西南北山川田森林"
    "水火木金土天気雨雪空海花草犬猫鳥魚肉米茶食飲買売店駅車電話家族父母兄弟姉妹友達語英国都市町村"
    "今朝昼夜毎行来見聞読書話言思知考使作持待歩走立休入出始終開閉新古早速遅近遠重軽安明暗白黒赤青"
    "色形音楽絵写真画像会社仕事教室公園病院銀行同物者場所方法理由意味説明質問正解例答案問題集平均"
)
_EN_WORDS = ["the", "is", "of", "and", "to", "in", "What", "How", "many", "answer", "Answer", "Question",
             "image", "this", "are", "there", "number"]
_JA_WORDS = ["です", "ます", "ですか", "答え", "問題", "画像", "この", "何", "いくつ", "ありますか", "ください"]


def _pieces_with_merges(words: list[str], prefix: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The pieces and left-to-right BPE merges that build each word (``prefix`` + word) from its characters."""
    pieces: list[str] = []
    merges: list[tuple[str, str]] = []
    for word in words:
        text = prefix + word
        for end in range(2, len(text) + 1):
            merge = (text[:end - 1], text[end - 1])
            if merge not in merges:
                merges.append(merge)
                pieces.append(text[:end])
    return pieces, merges


def _mistral_vocab(shuffle_seed: int | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """The 32000 token strings in id order and the BPE merges (deterministic).

    ``shuffle_seed`` permutes the ids of everything after the byte tokens: the Llama-2 replica's vocabulary,
    which like the real one shares specials and byte tokens with Mistral's but not the order of the rest.
    """
    singles = ["▁", *_ASCII, *_HIRAGANA, *_KATAKANA, *_JA_PUNCT, *_FULLWIDTH_DIGITS, *dict.fromkeys(_KANJI)]
    prefixed, prefixed_merges = _pieces_with_merges([c for c in _ASCII if c.isalnum()] + _EN_WORDS, "▁")
    ja, ja_merges = _pieces_with_merges(_JA_WORDS, "")
    pieces = list(dict.fromkeys(singles + prefixed + ja))
    filler = MISTRAL_VOCAB - len(_SPECIALS) - len(_BYTES) - len(pieces)
    # Filler pieces no merge produces: they only hold the real vocabulary's size and id layout.
    pieces += [f"▁f{i:05d}" for i in range(filler)]
    if shuffle_seed is not None:
        order = torch.randperm(len(pieces), generator=torch.Generator().manual_seed(shuffle_seed)).tolist()
        pieces = [pieces[i] for i in order]
    return _SPECIALS + _BYTES + pieces, prefixed_merges + ja_merges


def mistral_tokenizer(*, shuffle_seed: int | None = None):
    """The shared 32000-token Mistral-style tokenizer: ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, byte fallback
    ``<0x00>``..``<0xFF>`` at 3..258, ``▁``-prefixed pieces, kana, common kanji; Japanese text round-trips."""
    from transformers import LlamaTokenizerFast

    tokens, merges = _mistral_vocab(shuffle_seed)
    assert len(tokens) == MISTRAL_VOCAB == len(set(tokens))
    return LlamaTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, add_bos_token=True,
                              add_eos_token=False)


def _with_added_tokens(tokenizer, tokens: list[str], *, pad: str | None = None):
    """Add special tokens after the 32000 as the real checkpoints do (ids in order), and name the pad token."""
    from tokenizers import AddedToken

    tokenizer.add_special_tokens({"additional_special_tokens": [AddedToken(t, special=True, normalized=False)
                                                                for t in tokens]})
    if pad is not None:
        tokenizer.pad_token = pad
    return tokenizer


# -- configs ------------------------------------------------------------------------------------------------
# Tiny dimensions shared by every Mistral-family replica (they must merge): hidden 32 with 4 query heads over
# 2 key/value heads (Mistral-7B: 4096 hidden, 32 heads, 8 kv heads: grouped-query attention, kept),
# intermediate 3.5 x hidden (14336 / 4096), 4 layers (32 in the real ones).
_TINY = dict(hidden_size=32, intermediate_size=112, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, head_dim=8, hidden_act="silu", rms_norm_eps=1e-5, initializer_range=0.02)


def mistral_config(*, vocab_size: int = MISTRAL_VOCAB, rope_theta: float = 1e4, sliding_window: int | None = 4096):
    """Mistral-7B-v0.1's config quirks at tiny size: rope_theta 1e4, sliding window 4096, 32768 positions,
    bos 1 / eos 2, untied head (mistralai/Mistral-7B-v0.1 config.json: MistralForCausalLM, rope_theta 10000.0,
    sliding_window 4096, max_position_embeddings 32768, num_key_value_heads 8, tie_word_embeddings false; the
    same values appear in the dense-Mistral test configs of several public loaders)."""
    from transformers import MistralConfig

    return MistralConfig(vocab_size=vocab_size, max_position_embeddings=32768, sliding_window=sliding_window,
                         rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
                         bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, **_TINY)


def _seed(name: str, seed: int) -> int:
    """A stable per-replica seed (``hash()`` of a string changes between processes)."""
    return zlib.crc32(name.encode()) ^ seed


@lru_cache(maxsize=4)
def _base_state(seed: int) -> dict[str, torch.Tensor]:
    """The base replica's float32 weights for ``seed``: every fine-tune starts from these."""
    from transformers import MistralForCausalLM

    torch.manual_seed(_seed(BASE, seed))
    return {k: v.detach().clone() for k, v in MistralForCausalLM(mistral_config()).state_dict().items()}


def _finetuned_state(name: str, seed: int, rows: int) -> dict[str, torch.Tensor]:
    """The base weights plus a seeded perturbation (a task vector about a fifth of each weight's spread);
    embedding and head rows beyond 32000 start at the mean row plus noise, as ``resize_token_embeddings``
    initialises new rows."""
    generator = torch.Generator().manual_seed(_seed(name, seed))
    state = {}
    for key, base in _base_state(seed).items():
        spread = base.std() if base.numel() > 1 and base.std() > 0 else base.abs().mean()
        tensor = base + 0.2 * spread * torch.randn(base.shape, generator=generator)
        if key.endswith(("embed_tokens.weight", "lm_head.weight")) and rows > base.shape[0]:
            extra = rows - base.shape[0]
            new = tensor.mean(0, keepdim=True) + 0.02 * torch.randn(extra, base.shape[1], generator=generator)
            tensor = torch.cat([tensor, new])
        state[key] = tensor
    return state


def _save(model, tokenizer_or_processor, path: Path, dtype: str) -> Path:
    from evosuite.runtime import quiet_library_progress

    quiet_library_progress()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.to(getattr(torch, dtype)).save_pretrained(path)
    tokenizer_or_processor.save_pretrained(path)
    return path


# -- writers ------------------------------------------------------------------------------------------------
def _write_mistral_family(name: str, path: Path, seed: int, dtype: str) -> Path:
    from transformers import MistralForCausalLM

    tokenizer = mistral_tokenizer()
    if name == BASE:
        model = MistralForCausalLM(mistral_config())
        model.load_state_dict(_base_state(seed))
        return _save(model, tokenizer, path, dtype)
    rows = ABEL_ROWS if name == ABEL else MISTRAL_VOCAB
    if name == WIZARDMATH:
        # WizardMath-7B-V1.1 pads with <s> (FACTS.md): a pad token that is the bos token, no added row.
        tokenizer.pad_token = "<s>"
    # shisa-gamma-7b-v1 is japanese-stablelm-base-gamma-7b (continued pretraining of Mistral-7B-v0.1) fine-tuned
    # on Shisa's data (its model card); assumed here: the base's tokenizer as is, no pad token.
    model = MistralForCausalLM(mistral_config(vocab_size=rows))
    model.load_state_dict(_finetuned_state(name, seed, rows))
    return _save(model, tokenizer, path, dtype)


#: The tiny vision tower's resolution: LLaVA-1.6's CLIP ViT-L/14-336 scaled by 1/6 (336 -> 56 px), patch size
#: kept at 14, so a tile is 4 x 4 patches (24 x 24 in the real one).
TOWER_PX, PATCH = 56, 14
#: llava-v1.6-mistral-7b-hf's image_grid_pinpoints [[336,672],[672,336],[672,672],[1008,336],[336,1008]]
#: (FACTS.md; also its preprocessor_config.json as copied into public loaders), scaled by the same 1/6.
PINPOINTS = [[56, 112], [112, 56], [112, 112], [168, 56], [56, 168]]
#: CLIP's normalisation (OPENAI_CLIP_MEAN / STD), as in the checkpoint's preprocessor_config.json.
_CLIP_MEAN, _CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def llava_next_config():
    """llava-v1.6-mistral-7b-hf's config at tiny size: ``llava_next``, CLIP tower, vision feature layer -2,
    'default' feature selection (drop CLS), gelu projector, ``<image>`` = 32000, anyres pinpoints, and a text
    config from Mistral-7B-Instruct-v0.2 (rope_theta 1e6, no sliding window) with 32064 rows (FACTS.md)."""
    from transformers import CLIPVisionConfig, LlavaNextConfig

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=TOWER_PX, patch_size=PATCH, projection_dim=16, hidden_act="quick_gelu")
    text = mistral_config(vocab_size=LLAVA_ROWS, rope_theta=1e6, sliding_window=None)
    return LlavaNextConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN_ID,
                           projector_hidden_act="gelu", vision_feature_layer=-2,
                           vision_feature_select_strategy="default", image_grid_pinpoints=PINPOINTS,
                           image_seq_length=(TOWER_PX // PATCH) ** 2, tie_word_embeddings=False)


def llava_next_processor():
    """The LlavaNextProcessor of the checkpoint at tiny scale: resize the short side to the tower's resolution,
    centre-crop, anyres tiles over the pinpoints; its tokenizer adds ``<image>`` and ``<pad>``."""
    from transformers import LlavaNextImageProcessor, LlavaNextProcessor

    tokenizer = _with_added_tokens(mistral_tokenizer(), [IMAGE_TOKEN, PAD_TOKEN], pad=PAD_TOKEN)
    images = LlavaNextImageProcessor(size={"shortest_edge": TOWER_PX}, crop_size={"height": TOWER_PX,
                                     "width": TOWER_PX}, image_grid_pinpoints=PINPOINTS, do_pad=True,
                                     image_mean=_CLIP_MEAN, image_std=_CLIP_STD, resample=3)
    # num_additional_image_tokens=1: the tower's CLS, which 'default' selection drops again.
    return LlavaNextProcessor(image_processor=images, tokenizer=tokenizer, patch_size=PATCH,
                              vision_feature_select_strategy="default", num_additional_image_tokens=1)


def _write_llava_next(path: Path, seed: int, dtype: str) -> Path:
    from transformers import LlavaNextForConditionalGeneration

    torch.manual_seed(_seed(LLAVA_NEXT, seed))
    model = LlavaNextForConditionalGeneration(llava_next_config())
    language = _finetuned_state(LLAVA_NEXT, seed, LLAVA_ROWS)
    model.lm_head.weight.data.copy_(language.pop("lm_head.weight"))
    model.model.language_model.load_state_dict({k.removeprefix("model."): v for k, v in language.items()})
    return _save(model, llava_next_processor(), path, dtype)


def _write_llama(path: Path, seed: int, dtype: str) -> Path:
    """Llama-2-7b-hf at tiny size: no grouped-query attention (32 kv heads = 32 heads), no sliding window, 4096
    positions, rope_theta 1e4, 32000 rows, untied head; its 32000-token vocabulary shares the specials and byte
    tokens with Mistral's but orders the other pieces differently (as the real two vocabularies differ)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=MISTRAL_VOCAB, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e4}, tie_word_embeddings=False,
                         **{**_TINY, "num_key_value_heads": _TINY["num_attention_heads"]})
    torch.manual_seed(_seed(LLAMA, seed))
    return _save(LlamaForCausalLM(config), mistral_tokenizer(shuffle_seed=_seed(LLAMA, 0)), path, dtype)


# Qwen2-0.5B (rwth-i6/i6_experiments qwen2_configs.py, a copy of its config.json): qwen2, tie_word_embeddings
# true, vocab_size 151936 rows, rope_theta 1e6, 131072 positions, sliding_window 131072 but
# use_sliding_window false, 14 heads over 2 kv heads, bos = eos = 151643 (<|endoftext|>). Its byte-level BPE
# tokenizer has fewer tokens than rows (151643 pieces + <|endoftext|>, <|im_start|>, <|im_end|>; mergekit
# issue #425 shows the same len(tokenizer) < rows for Qwen2.5). Scaled down here: 1021 pieces + 3 specials
# = 1024 tokens in 1152 rows (a multiple of 128, as 151936 is).
QWEN2_PIECES, QWEN2_ROWS = 1021, 1152


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character map that byte-level BPE vocabularies are written in: printable
    Latin-1 bytes stand for themselves, the other bytes for the characters from U+0100 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(shifted)}}


def qwen2_tokenizer():
    """A byte-level BPE tokenizer in Qwen2's scheme (GPT-2 byte alphabet, no bos, ``<|endoftext|>`` as eos and
    pad, chat specials after the pieces), with merges for kana so Japanese text takes fewer tokens."""
    from transformers import Qwen2Tokenizer

    byte_chars = _byte_alphabet()
    alphabet = [byte_chars[b] for b in range(256)]
    pieces, merges = list(alphabet), []
    for char in _HIRAGANA + _KATAKANA:
        encoded = "".join(byte_chars[b] for b in char.encode())
        for end in range(2, len(encoded) + 1):
            if encoded[:end] not in pieces:
                merges.append((encoded[:end - 1], encoded[end - 1]))
                pieces.append(encoded[:end])
    pieces += [f"Ġq{i:04d}" for i in range(QWEN2_PIECES - len(pieces))]
    tokenizer = Qwen2Tokenizer(vocab={p: i for i, p in enumerate(pieces)}, merges=merges)
    return _with_added_tokens(tokenizer, ["<|im_start|>", "<|im_end|>"])


def _write_qwen2(path: Path, seed: int, dtype: str) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=QWEN2_ROWS, hidden_size=32, intermediate_size=96, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=131072,
                         sliding_window=131072, use_sliding_window=False, max_window_layers=4,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6}, rms_norm_eps=1e-6,
                         bos_token_id=QWEN2_PIECES, eos_token_id=QWEN2_PIECES, tie_word_embeddings=True)
    torch.manual_seed(_seed(QWEN2, seed))
    return _save(Qwen2ForCausalLM(config), qwen2_tokenizer(), path, dtype)


def write_replica(name: str, path: str | Path, *, seed: int = 0, dtype: str = "bfloat16") -> Path:
    """Write the tiny replica of the hub model ``name`` (one of ``REPLICAS``) to ``path``; returns the path.

    The same ``seed`` gives the same weights; the fine-tunes of one seed share that seed's base replica.
    """
    if name not in REPLICAS:
        raise ValueError(f"no replica of {name!r}; known: {', '.join(REPLICAS)}")
    if name == LLAVA_NEXT:
        return _write_llava_next(Path(path), seed, dtype)
    if name == LLAMA:
        return _write_llama(Path(path), seed, dtype)
    if name == QWEN2:
        return _write_qwen2(Path(path), seed, dtype)
    return _write_mistral_family(name, Path(path), seed, dtype)


def write_paper_zoo(root: str | Path, *, seed: int = 0, dtype: str = "bfloat16",
                    names: tuple[str, ...] = REPLICAS) -> dict[str, Path]:
    """Write the replicas under ``root/<hub id>`` (e.g. ``root/augmxnt/shisa-gamma-7b-v1``): a config that
    names real hub ids runs on them once each id is prefixed with ``root/``."""
    return {name: write_replica(name, Path(root) / name, seed=seed, dtype=dtype) for name in names}
