"""What the ``llm`` and ``vlm`` adapters share: loading through ``transformers``, the layer map read from
the architecture table (``evosuite.architectures``), batched generation, cloning and saving.

torch and transformers are imported inside functions: listing plugins or showing help must not pay for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from evosuite import architectures
from evosuite.api import DecoderLayers, LoadedModel
from evosuite.errors import ConfigError, ModelError
from evosuite.models import read_model_config

if TYPE_CHECKING:
    import torch


def text_layout(model_type: str) -> dict[str, str]:
    """Names of layer i, embeddings and final norm of a text model type, relative to its decoder, from the
    architecture table."""
    try:
        module = architectures.relative_layout(model_type)
    except ConfigError as exc:
        raise ModelError(f"unknown language-model architecture {model_type!r}", exc.fix) from None
    return {"layer": module["layers"], "embeddings": module["embeddings"][0], "final_norm": module["final_norm"][0]}


#: ``config.json`` of a local directory or hub id, as a dict (the core's reader, which adapters detect from).
read_config = read_model_config


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def from_pretrained(auto_class, name_or_path: str, *, dtype: str, device: str, trust_remote_code: bool,
                    allow_pickle: bool, **extra):
    """``auto_class.from_pretrained`` with evosuite's safety defaults and one-line errors (``extra``: more
    ``from_pretrained`` arguments, e.g. ``config=``)."""
    import torch

    from evosuite.runtime import quiet_library_progress

    quiet_library_progress()

    try:
        torch_dtype = getattr(torch, dtype)
    except AttributeError:
        raise ModelError(f"unknown dtype {dtype!r}", "use float32, bfloat16 or float16") from None
    try:
        module = auto_class.from_pretrained(
            name_or_path,
            dtype=torch_dtype,
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
            **extra,
        )
    except Exception as exc:
        message = _first_line(exc)
        if not allow_pickle and "safetensors" in message.lower():
            raise ModelError(f"model {name_or_path!r} has no safetensors weights",
                             "convert it to safetensors, or if you trust its .bin files pass --allow-pickle (eval) "
                             "or set allow_pickle: true (run)") from None
        raise ModelError(f"cannot load model {name_or_path!r}: {message}",
                         "check the path or hub id; this machine may be offline") from None
    return module.to(device).eval()


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text up to the first of the stop strings."""
    end = len(text)
    for s in stop:
        found = text.find(s)
        if found != -1:
            end = min(end, found)
    return text[:end]


class HFModel(LoadedModel, DecoderLayers):
    """A ``transformers`` model whose decoder is the ``text`` module of its family in the architecture table."""

    def __init__(self, module, *, name_or_path: str, tokenizer, processor=None):
        super().__init__(module, name_or_path=name_or_path, processor=processor)
        self.tokenizer = tokenizer
        text_config = getattr(module.config, "text_config", None) or module.config
        self.text_config = text_config
        names = [n for n, _ in module.named_parameters()]
        try:
            layout = architectures.resolve(module.config.to_dict(), names, model=f"model {name_or_path!r}",
                                           only=["text"])
            self._decoder = layout.module("text")
        except (ConfigError, StopIteration):
            raise ModelError(f"model {name_or_path!r} has no decoder layers where the architecture table says",
                             "its layout differs from evosuite/architectures.json: declare it there") from None
        self._prefix = self._decoder.prefix
        self._head = layout.head[0]

    @property
    def num_layers(self) -> int:
        return int(self.text_config.num_hidden_layers)

    @property
    def decoder_prefix(self) -> str:  # evosuite.api.DecoderLayers
        return self._prefix

    @property
    def head_prefix(self) -> str:  # evosuite.api.DecoderLayers
        return self._head

    def mergeable_parameters(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, param in self.module.named_parameters():
            if name.startswith(self._prefix):
                out[name[len(self._prefix):]] = param.data
            elif name.startswith(self._head):
                out[name] = param.data
        return out

    def layer_index(self, canonical_name: str) -> int | None:
        return self._decoder.layer_of(self._prefix + canonical_name)

    def checkpoint_name(self, canonical_name: str) -> str:
        # mergeable_parameters strips the decoder prefix; the state dict (a causal LM's checkpoint) keeps it.
        return canonical_name if canonical_name.startswith(self._head) else self._prefix + canonical_name

    # -- vocabulary and configuration (evosuite.vocab_alignment, the run's config report) -------------
    def vocab_parameters(self) -> list[str]:
        # A head tied to the embeddings is one tensor: ``named_parameters`` lists it once, under the embeddings.
        embeddings = text_layout(self.text_config.model_type)["embeddings"] + "weight"
        return [n for n in (embeddings, self._head + "weight") if n in self.mergeable_parameters()]

    def set_vocabulary(self, tokenizer, rows) -> None:
        for name, tensor in rows.items():
            full = name if name.startswith(self._head) else self._prefix + name
            owner_name, _, attr = full.rpartition(".")
            owner = self.module.get_submodule(owner_name)
            getattr(owner, attr).data = tensor
            for size_attr in ("num_embeddings", "out_features"):  # keep the module's repr and checks true
                if hasattr(owner, size_attr):
                    setattr(owner, size_attr, int(tensor.shape[0]))
        count = int(next(iter(rows.values())).shape[0])
        for config in {id(c): c for c in (self.text_config, self.module.config)}.values():
            if hasattr(config, "vocab_size"):
                config.vocab_size = count
        self.tokenizer = tokenizer

    def config_summary(self) -> dict[str, Any]:
        config = self.text_config
        rope = getattr(config, "rope_parameters", None) or {}
        rope_theta = getattr(config, "rope_theta", None) or (rope.get("rope_theta") if isinstance(rope, dict) else None)
        return {"model_type": config.model_type, "hidden_size": getattr(config, "hidden_size", None),
                "rope_theta": rope_theta, "sliding_window": getattr(config, "sliding_window", None),
                "max_position_embeddings": getattr(config, "max_position_embeddings", None),
                "rms_norm_eps": getattr(config, "rms_norm_eps", None),
                "tie_word_embeddings": getattr(config, "tie_word_embeddings", None)}

    # -- generation ----------------------------------------------------------------------------
    def _encode(self, prompts: Sequence[str], images: Sequence[Any] | None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @property
    def _device(self) -> torch.device:
        return next(self.module.parameters()).device

    def generate(self, prompts, images=None, *, max_new_tokens: int = 32, num_beams: int = 1,
                 repetition_penalty: float = 1.0, stop: Sequence[str] = (), batch_size: int = 32,
                 progress=None, **unused) -> list[str]:
        import torch

        tokenizer = self.tokenizer
        outputs: list[str] = []
        for start in range(0, len(prompts), batch_size):
            batch = list(prompts[start:start + batch_size])
            batch_images = list(images[start:start + batch_size]) if images is not None else None
            inputs = {k: v.to(self._device) for k, v in self._encode(batch, batch_images).items()}
            with torch.inference_mode():
                generated = self.module.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=num_beams,
                    repetition_penalty=repetition_penalty,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            new_tokens = generated[:, inputs["input_ids"].shape[1]:]
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            outputs.extend(cut_at_stop(t, stop).strip() for t in texts)
            if progress is not None:
                progress(len(outputs), len(prompts))
        return outputs

    # -- copies and export -----------------------------------------------------------------------
    def save(self, out_dir, *, model_card: str | None = None) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.module.save_pretrained(out)
        (self.processor or self.tokenizer).save_pretrained(out)
        if model_card is not None:
            (out / "README.md").write_text(model_card, encoding="utf-8")
        return out


def prepare_tokenizer(tokenizer):
    """Left padding (generation continues every row at the same position) and a pad token."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
