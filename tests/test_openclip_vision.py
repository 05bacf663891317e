"""An OpenCLIP image tower converted to the `transformers` CLIPVisionModel a LLaVA holds computes the same."""

from __future__ import annotations

import pytest
import torch

from evosuite.errors import ConfigError


def _tiny_open_clip(seed=0):
    import open_clip

    from evosuite.plugins.zoo.train import open_clip_vision_cfg

    torch.manual_seed(seed)
    return open_clip.CLIP(embed_dim=64, vision_cfg=open_clip_vision_cfg(),
                          text_cfg={"layers": 1, "width": 64, "heads": 1}).visual.eval()


def test_converted_tower_computes_what_open_clip_computes(tmp_path):
    from transformers import CLIPVisionModel

    from evosuite.plugins.openclip_vision import to_hf_vision_model

    visual = _tiny_open_clip()
    with torch.no_grad():  # trained towers are not at their init: move every weight off it
        for p in visual.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf = to_hf_vision_model(visual)
    hf.save_pretrained(tmp_path / "tower")
    hf = CLIPVisionModel.from_pretrained(tmp_path / "tower")  # and it survives the hub format
    pixels = torch.randn(3, 3, 32, 32)
    visual.output_tokens = True
    with torch.no_grad():
        pooled, tokens = visual(pixels)
        hidden = hf(pixel_values=pixels).last_hidden_state
        normed = hf.post_layernorm(hidden)
    assert torch.allclose(normed[:, 1:], tokens, atol=1e-5)  # every patch feature
    assert torch.allclose(normed[:, 0] @ visual.proj, pooled, atol=1e-5)  # and the pooled embedding
    assert hf.config.num_hidden_layers == 2 and hf.config.patch_size == 8 and hf.config.hidden_act == "gelu"


def test_a_tower_that_is_not_a_plain_vit_is_refused():
    from evosuite.plugins.openclip_vision import hf_vision_config

    visual = _tiny_open_clip()
    visual.conv1 = torch.nn.Conv2d(3, 64, 8, 8, bias=True)
    with pytest.raises(ConfigError, match="not a plain ViT"):
        hf_vision_config(visual)
