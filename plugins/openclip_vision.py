"""An OpenCLIP image tower as a `transformers` ``CLIPVisionModel``: the format of a LLaVA's vision tower.

LLaVA-style checkpoints on the hub keep their vision tower as a ``CLIPVisionModel``; towers trained with
OpenCLIP are converted to it tensor by tensor. The two compute the same function: OpenCLIP's fused
attention input projection is split into ``q_proj``/``k_proj``/``v_proj``, and both use exact GELU and
LayerNorm eps 1e-5. Only ViT towers with a class token and no patch-projection bias (OpenCLIP's
``VisionTransformer`` defaults) are supported.
"""

from __future__ import annotations

from typing import Any

from evosuite.errors import ConfigError

# OpenCLIP (``visual.``) name -> CLIPVisionModel name, per residual block.
_BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
          "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}


def hf_vision_config(visual) -> Any:
    """The ``CLIPVisionConfig`` of an OpenCLIP ``VisionTransformer``."""
    from transformers import CLIPVisionConfig

    if getattr(visual, "conv1", None) is None or visual.conv1.bias is not None:
        raise ConfigError("this OpenCLIP tower is not a plain ViT (patch convolution without bias)",
                          "convert only OpenCLIP VisionTransformer towers")
    width = visual.conv1.out_channels
    blocks = visual.transformer.resblocks
    return CLIPVisionConfig(
        hidden_size=width, intermediate_size=blocks[0].mlp.c_fc.out_features, num_hidden_layers=len(blocks),
        num_attention_heads=blocks[0].attn.num_heads, image_size=visual.image_size[0],
        patch_size=visual.patch_size[0], projection_dim=visual.output_dim, hidden_act="gelu",
        layer_norm_eps=blocks[0].ln_1.eps,
    )


def to_hf_vision_model(visual):
    """A ``CLIPVisionModel`` holding the weights of the OpenCLIP image tower ``visual``."""
    import torch
    from transformers import CLIPVisionModel

    sd = {k: v.detach().clone() for k, v in visual.state_dict().items()}
    out = {
        "embeddings.class_embedding": sd["class_embedding"],
        "embeddings.patch_embedding.weight": sd["conv1.weight"],
        "embeddings.position_embedding.weight": sd["positional_embedding"],
        "pre_layrnorm.weight": sd["ln_pre.weight"], "pre_layrnorm.bias": sd["ln_pre.bias"],
        "post_layernorm.weight": sd["ln_post.weight"], "post_layernorm.bias": sd["ln_post.bias"],
    }
    for i in range(len(visual.transformer.resblocks)):
        src, dst = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        for a, b in _BLOCK.items():
            for p in ("weight", "bias"):
                out[f"{dst}{b}.{p}"] = sd[f"{src}{a}.{p}"]
        for p in ("weight", "bias"):
            q, k, v = torch.chunk(sd[f"{src}attn.in_proj_{p}"], 3, dim=0)
            out.update({f"{dst}self_attn.q_proj.{p}": q, f"{dst}self_attn.k_proj.{p}": k,
                        f"{dst}self_attn.v_proj.{p}": v})
    model = CLIPVisionModel(hf_vision_config(visual))
    model.load_state_dict(out)  # strict: every tensor of both sides is accounted for
    return model.eval()
