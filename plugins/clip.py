"""The ``clip`` plugin: OpenCLIP models through ``open_clip``, both towers mergeable, scored by zero-shot
image classification.

A model is a local OpenCLIP directory (``open_clip_config.json`` beside ``open_clip_model.safetensors``,
what ``open_clip`` itself loads with ``local-dir:PATH`` and publishes to the hub) or a hub id
(``hf-hub:org/repo``, or a bare ``org/repo`` when ``adapter: clip`` is named). Loading goes through
``open_clip.create_model_and_transforms``; the validation transform and the model's tokenizer come with it.

Mergeable parameters are the OpenCLIP state-dict names of both towers (``visual.*`` and the text tower:
``token_embedding.weight``, ``transformer.*``, ``ln_final.*``, ``text_projection``...), except the
contrastive temperature ``logit_scale`` (and SigLIP's ``logit_bias``): a scalar that never changes a zero-shot
prediction (an argmax over cosine similarities), so a merge keeps the carrier's. Layer ``i`` of the image
tower and layer ``i`` of the text tower form one layer group (``num_layers`` is the deeper tower's depth).
"""

from __future__ import annotations

import json
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from evosuite import hookimpl
from evosuite.api import LoadedModel, ModelAdapter
from evosuite.errors import ConfigError, ModelError

if TYPE_CHECKING:
    import torch

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
HUB_PREFIX, LOCAL_PREFIX = "hf-hub:", "local-dir:"
#: Never merged: the contrastive temperature (and bias) of the loss; see the module docstring.
NOT_MERGED = ("logit_scale", "logit_bias")
#: The architecture table's entry for OpenCLIP state dicts: the image and text towers' transformer blocks (its
#: own ViT and text transformer, timm trunks, Hugging Face text encoders).
FAMILY = "open_clip"
MODALITY = "image-classification"


def _towers(names: Sequence[str], name_or_path: str):
    """The towers of an OpenCLIP state dict that have transformer blocks, as the architecture table names them."""
    from evosuite import architectures

    spec = architectures.table()["families"][FAMILY]["modules"]
    found = []
    for tower in spec:
        try:
            found += architectures.resolve({"model_type": FAMILY}, names, only=[tower]).modules
        except ConfigError:  # a tower without transformer blocks (a ResNet image tower)
            continue
    if not found:
        raise ModelError(f"model {name_or_path!r} has no transformer blocks evosuite recognizes",
                         "OpenCLIP ViT, timm and Hugging Face towers are supported")
    return architectures.Layout(FAMILY, tuple(found))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class ClipModel(LoadedModel):
    """An OpenCLIP model with its validation transform and tokenizer."""

    adapter = "clip"
    modality = MODALITY

    def __init__(self, module, *, name_or_path: str, config: Mapping[str, Any], preprocess, tokenizer):
        super().__init__(module, name_or_path=name_or_path, processor=preprocess)
        self.config = dict(config)  # the contents of open_clip_config.json: model_cfg, preprocess_cfg
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self._memo = _PixelMemo()
        names = list(self.mergeable_parameters())
        self._towers = _towers(names, name_or_path)
        self._layers = {name: self._match_layer(name) for name in names}
        self._num_layers = max(i for i in self._layers.values() if i is not None) + 1

    # -- the generic view ------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return self._num_layers

    def mergeable_parameters(self) -> dict[str, torch.Tensor]:
        return {name: p.data for name, p in self.module.named_parameters() if name not in NOT_MERGED}

    def _match_layer(self, name: str) -> int | None:
        # Layer i of the image tower and layer i of the text tower form one layer group.
        return self._towers.locate(name)[1]

    def layer_index(self, canonical_name: str) -> int | None:
        if canonical_name in self._layers:
            return self._layers[canonical_name]
        return self._match_layer(canonical_name)

    def generate(self, prompts, images=None, **options) -> list[str]:
        raise ModelError(f"model {self.name_or_path!r} is an OpenCLIP model: it embeds and classifies, it does "
                         "not generate text", "score it with an image-classification benchmark")

    # -- inference -------------------------------------------------------------------------------
    @property
    def _device(self):
        return next(self.module.parameters()).device

    @property
    def _dtype(self):
        return next(self.module.parameters()).dtype

    def _pixels(self, image):
        """The preprocessed tensor of a PIL image, remembered while the image lives (up to ``_PixelMemo.limit``
        bytes): a search scores the same images with every candidate. Clones share the memo and the transform."""
        key = id(image)
        hit = self._memo.entries.get(key)
        if hit is not None and hit[0]() is image:
            return hit[1]
        tensor = self.preprocess(_rgb(image))
        self._memo.add(key, image, tensor)
        return tensor

    def embed_images(self, images: Sequence[Any], *, batch_size: int = 256) -> torch.Tensor:
        """L2-normalized image embeddings (float32, on the CPU), one row per image (PIL images)."""
        import torch

        rows = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                batch = torch.stack([self._pixels(im) for im in images[start:start + batch_size]])
                features = self.module.encode_image(batch.to(self._device, self._dtype), normalize=True)
                rows.append(features.float().cpu())
        return torch.cat(rows) if rows else torch.zeros(0, 0)

    def embed_texts(self, texts: Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
        """L2-normalized text embeddings (float32, on the CPU), one row per text."""
        import torch

        rows = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                tokens = self.tokenizer(list(texts[start:start + batch_size])).to(self._device)
                rows.append(self.module.encode_text(tokens, normalize=True).float().cpu())
        return torch.cat(rows) if rows else torch.zeros(0, 0)

    def class_embeddings(self, class_texts: Sequence[str], templates: Sequence[str] = ("{}",)) -> torch.Tensor:
        """One normalized embedding per class: the mean of its prompts (each template filled with its text)."""
        import torch

        prompts = [t.format(c) for c in class_texts for t in templates]
        embedded = self.embed_texts(prompts).reshape(len(class_texts), len(templates), -1).mean(1)
        return torch.nn.functional.normalize(embedded, dim=-1)

    def classify(self, images: Sequence[Any], class_texts: Sequence[str], *, templates: Sequence[str] = ("{}",),
                 batch_size: int = 256) -> list[int]:
        """Zero-shot classification: the index in ``class_texts`` of each image's most similar class."""
        classes = self.class_embeddings(class_texts, templates)
        return (self.embed_images(images, batch_size=batch_size) @ classes.T).argmax(1).tolist()

    # -- copies and export -----------------------------------------------------------------------
    def save(self, out_dir, *, model_card: str | None = None) -> Path:
        """Write ``open_clip_config.json`` and ``open_clip_model.safetensors`` (``local-dir:`` loads them)."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_NAME).write_text(json.dumps(self.config, indent=2))
        state = {k: v.detach().contiguous().cpu() for k, v in self.module.state_dict().items()}
        save_file(state, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
        if model_card is not None:
            (out / "README.md").write_text(model_card, encoding="utf-8")
        return out


class _PixelMemo:
    """id(image) -> (weak reference, preprocessed tensor); an entry goes when its image is collected."""

    limit = 512 * 2**20

    def __init__(self):
        self.entries: dict[int, tuple[Any, Any]] = {}
        self.bytes = 0

    def add(self, key: int, image, tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self.bytes + size > self.limit:
            return
        try:
            ref = weakref.ref(image, lambda _, key=key: self._drop(key))
        except TypeError:  # not weak-referenceable: not remembered
            return
        self._drop(key)
        self.entries[key] = (ref, tensor)
        self.bytes += size

    def _drop(self, key: int) -> None:
        old = self.entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1].numel() * old[1].element_size()


def _rgb(image):
    return image.convert("RGB") if getattr(image, "mode", "RGB") != "RGB" else image


def resolve(name_or_path: str) -> tuple[str, str]:
    """``("local", directory)`` or ``("hub", repo id)`` for a path, ``local-dir:``/``hf-hub:`` id or bare repo id."""
    text = str(name_or_path)
    if text.startswith(LOCAL_PREFIX):
        return "local", text[len(LOCAL_PREFIX):]
    if text.startswith(HUB_PREFIX):
        return "hub", text[len(HUB_PREFIX):]
    if Path(text).is_dir():
        return "local", text
    return "hub", text


class ClipAdapter(ModelAdapter):
    name = "clip"
    description = "OpenCLIP models (local open_clip_config.json directories or hf-hub: ids): both towers merged"

    def detect_path(self, name_or_path: str) -> bool:
        """True for an OpenCLIP directory (it holds ``open_clip_config.json``) or an ``hf-hub:``/``local-dir:`` id."""
        text = str(name_or_path)
        return text.startswith((HUB_PREFIX, LOCAL_PREFIX)) or (Path(text) / CONFIG_NAME).is_file()

    def detect(self, config: Mapping[str, Any]) -> bool:
        return "model_cfg" in config and "model_type" not in config

    def load(self, name_or_path, *, dtype="float32", device="cpu", trust_remote_code=False, allow_pickle=False):
        import open_clip
        import torch

        kind, where = resolve(name_or_path)
        try:
            torch_dtype = getattr(torch, dtype)
        except AttributeError:
            raise ModelError(f"unknown dtype {dtype!r}", "use float32, bfloat16 or float16") from None
        if kind == "local":
            directory = Path(where)
            config_path = directory / CONFIG_NAME
            if not config_path.is_file():
                raise ModelError(f"{str(directory)!r} has no {CONFIG_NAME}", "give an OpenCLIP model directory")
            has_safe = any(directory.glob("*.safetensors"))
            if not has_safe and not allow_pickle:
                raise ModelError(f"model {str(name_or_path)!r} has no safetensors weights",
                                 "convert it to safetensors, or if you trust its .bin files pass --allow-pickle "
                                 "(eval) or set allow_pickle: true (run)")
            if not has_safe and not any(directory.glob("*.bin")) and not any(directory.glob("*.pth")):
                raise ModelError(f"model {str(name_or_path)!r} has no weights", f"put {WEIGHTS_NAME} beside the config")
            chosen = _checkpoint_open_clip_picks(directory)
            if chosen is not None and chosen.suffix != ".safetensors" and not allow_pickle:
                raise ModelError(f"open_clip would load the pickle file {chosen.name} of {str(name_or_path)!r}",
                                 "remove the .bin/.pth files beside the safetensors, or if you trust them "
                                 "pass --allow-pickle (eval) or set allow_pickle: true (run)")
            identifier = LOCAL_PREFIX + str(directory)
        else:
            if not allow_pickle and not _hub_has_safetensors(where):
                raise ModelError(f"hub model {where!r} has no safetensors weights (or the hub cannot be reached)",
                                 "use a repository with open_clip_model.safetensors, or if you trust its "
                                 ".bin files pass --allow-pickle (eval) or set allow_pickle: true (run)")
            identifier = HUB_PREFIX + where
        try:
            from evosuite.runtime import quiet_library_progress

            quiet_library_progress()
            module, _, preprocess = open_clip.create_model_and_transforms(identifier, device="cpu")
            tokenizer = open_clip.get_tokenizer(identifier)
            config = (json.loads(config_path.read_text()) if kind == "local" else _hub_config(where))
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"cannot load OpenCLIP model {str(name_or_path)!r}: {_first_line(exc)}",
                             "check the path or hub id; this machine may be offline") from None
        module = module.to(device=device, dtype=torch_dtype).eval()
        return ClipModel(module, name_or_path=str(name_or_path), config=config, preprocess=preprocess,
                         tokenizer=tokenizer)


#: The weights open_clip looks for first, in its order of preference.
_OPENCLIP_PREFERRED = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                       "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth", "model.safetensors",
                       "pytorch_model.bin", "pytorch_model.pth", "model.pth")


def _checkpoint_open_clip_picks(directory: Path) -> Path | None:
    """The weights file open_clip's ``local-dir:`` loading chooses (it may prefer a .bin to model.safetensors)."""
    found = [p for pattern in ("*.safetensors", "*.bin", "*.pth") for p in directory.glob(pattern)]
    preferred = sorted((p for p in found if p.name in _OPENCLIP_PREFERRED),
                       key=lambda p: _OPENCLIP_PREFERRED.index(p.name))
    if preferred:
        return preferred[0]
    found.sort()
    found.sort(key=lambda p: p.suffix == ".safetensors", reverse=True)
    return found[0] if found else None


def _hub_has_safetensors(repo: str) -> bool:
    """open_clip takes a hub repo's safetensors when there is one and falls back to its pickle file."""
    from huggingface_hub import hf_hub_download

    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors"):
        try:
            hf_hub_download(repo, name)
            return True
        except Exception:  # noqa: BLE001 - missing file, missing repo or offline: all mean "not known safe"
            continue
    return False


def _hub_config(repo: str) -> dict[str, Any]:
    from huggingface_hub import hf_hub_download

    return json.loads(Path(hf_hub_download(repo, CONFIG_NAME)).read_text())


@hookimpl
def register_model_adapters(register):
    register(ClipAdapter())

