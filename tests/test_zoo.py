"""The tiny zoo: builds, is deterministic, loads with plain transformers/datasets, and is cached."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from evosuite.plugins.zoo import build as zoo_build
from evosuite.plugins.zoo import jobs
from evosuite.plugins.zoo.prompts import GENERATION, IMAGE_TOKEN, math_prompt, vqa_prompt

SEED = 3


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    msgs: list[str] = []
    root = tmp_path_factory.mktemp("zoo") / "test-zoo"
    t0 = time.time()
    path = zoo_build.build_zoo("test", seed=SEED, root=root, progress=msgs.append)
    assert path == root and (root / "zoo.json").exists()
    # ~60 s on an idle 2-core machine; generous bound because the CI cores are shared.
    assert time.time() - t0 < 300, "the test variant must stay fast"
    assert any("built" in m for m in msgs)
    return root


def test_zoo_json_well_formed(zoo):
    meta = json.loads((zoo / "zoo.json").read_text())
    assert meta["version"] == zoo_build.ZOO_VERSION and meta["variant"] == "test" and meta["seed"] == SEED
    roles = {m["role"] for m in meta["models"].values()}
    assert roles == {"base", "ja", "math", "vlm"}
    for name, m in meta["models"].items():
        assert m["kind"] in ("causal-lm", "llava")
        assert (zoo / m["path"] / "config.json").exists()
        assert list((zoo / m["path"]).glob("*.safetensors")), name
    assert set(meta["tasks"]) == {"zoo-ja-vqa", "zoo-ja-math"}
    assert set(meta["table"]) == {"zoo-ja-vqa", "zoo-ja-math"}
    assert all(0.0 <= v <= 1.0 for v in meta["table"]["zoo-ja-vqa"].values())


def test_models_load_with_plain_transformers(zoo):
    from PIL import Image
    from transformers import AutoModelForCausalLM, AutoProcessor, AutoTokenizer, LlavaForConditionalGeneration

    meta = json.loads((zoo / "zoo.json").read_text())
    for name, m in meta["models"].items():
        path = zoo / m["path"]
        if m["kind"] == "causal-lm":
            model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
            enc = tok([math_prompt("たろうはりんごを3こもっています。りんごはなんこ？")], return_tensors="pt")
            out = model.generate(**enc, **GENERATION, pad_token_id=tok.pad_token_id)
            assert out.shape[1] > enc["input_ids"].shape[1], name
        else:
            model, proc = LlavaForConditionalGeneration.from_pretrained(path), AutoProcessor.from_pretrained(path)
            img = Image.new("RGB", (32, 32), (200, 30, 30))
            enc = proc(images=[img], text=[vqa_prompt("なにいろ？")], return_tensors="pt")
            assert int((enc["input_ids"] == model.config.image_token_id).sum()) == model.config.image_seq_length
            out = model.generate(**enc, **GENERATION, pad_token_id=proc.tokenizer.pad_token_id)
            assert out.shape[1] > enc["input_ids"].shape[1]


def test_vlm_keeps_its_pretrained_tower(zoo):
    from transformers import CLIPVisionModel, LlavaForConditionalGeneration

    # The test zoo's tower was built and trained with OpenCLIP, then converted (recipe "tower_builder").
    assert zoo_build.RECIPES["test"]["vqa"]["tower_builder"] == "open_clip"
    tower = CLIPVisionModel.from_pretrained(zoo / "vqa" / "vision-tower").state_dict()
    vlm = LlavaForConditionalGeneration.from_pretrained(zoo / "vqa" / "vlm").model.vision_tower.state_dict()
    assert tower.keys() == vlm.keys() and all(torch.equal(tower[k], vlm[k]) for k in tower)  # frozen in the VLM


def test_vlm_reads_images_with_its_language_model_not_its_projector(zoo):
    from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPVisionModel, LlavaForConditionalGeneration

    from evosuite.plugins.zoo import train

    # The projector stays as initialised (seed SEED, the test zoo's one VLM draw); only the LM learned.
    tok = AutoTokenizer.from_pretrained(zoo / "tokenizer")
    base = AutoModelForCausalLM.from_pretrained(zoo / "vqa" / "base")
    fresh = train.new_llava(tok, base, CLIPVisionModel.from_pretrained(zoo / "vqa" / "vision-tower"), SEED)
    vlm = LlavaForConditionalGeneration.from_pretrained(zoo / "vqa" / "vlm")
    want, got = fresh.model.multi_modal_projector.state_dict(), vlm.model.multi_modal_projector.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    lm_before, lm_after = base.model.state_dict(), vlm.model.language_model.state_dict()
    assert any(not torch.equal(lm_before[k], lm_after[k]) for k in lm_before)


def test_tasks_load_with_datasets(zoo):
    from datasets import Image, load_dataset

    meta = json.loads((zoo / "zoo.json").read_text())
    for task, files in meta["tasks"].items():
        ds = load_dataset("parquet", data_files={k: str(zoo / v) for k, v in files.items()})
        assert len(ds["search"]) >= 300 and len(ds["test"]) >= 300
        assert {"id", "question", "answer"} <= set(ds["test"].column_names)
        if task == "zoo-ja-vqa":
            assert isinstance(ds["test"].features["image"], Image)
            assert ds["test"][0]["image"].size == (32, 32)
            assert IMAGE_TOKEN in vqa_prompt(ds["test"][0]["question"])
        else:
            assert set(ds["search"]["question"]).isdisjoint(ds["test"]["question"])
            row = ds["test"][0]
            assert str(int(row["answer_number"])) in row["answer"]


def test_second_call_reuses_cache(zoo):
    before = (zoo / "zoo.json").stat().st_mtime_ns
    msgs: list[str] = []
    t0 = time.time()
    assert zoo_build.build_zoo("test", seed=SEED, root=zoo, progress=msgs.append) == zoo
    assert time.time() - t0 < 5 and any("reusing" in m for m in msgs)
    assert (zoo / "zoo.json").stat().st_mtime_ns == before


def test_training_is_deterministic_for_a_seed(zoo, tmp_path):
    from safetensors.torch import load_file

    # Retrain one model of the zoo from the same inputs; the weights must match bit for bit.
    (tmp_path / "math").mkdir()
    (tmp_path / "tokenizer").symlink_to(zoo / "tokenizer")
    jobs.one_thread()
    jobs.train_base(str(tmp_path), "math", zoo_build.RECIPES["test"], SEED)
    a = load_file(next((zoo / "math" / "base").glob("*.safetensors")))
    b = load_file(next((tmp_path / "math" / "base").glob("*.safetensors")))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_zoo_path_and_failed_build_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("EVOSUITE_CACHE", str(tmp_path / "cache"))
    p = zoo_build.zoo_path("test", seed=7)
    assert p.name == "test-seed7" and p.parent.name.startswith(f"v{zoo_build.ZOO_VERSION}-")
    assert p.is_relative_to(tmp_path / "cache" / "zoo")

    def boom(out):
        raise RuntimeError("crash while building")

    monkeypatch.setattr(jobs, "write_tokenizer", boom)
    with pytest.raises(RuntimeError):
        zoo_build.build_zoo("test", seed=7)
    assert not p.exists() and not [x for x in p.parent.iterdir() if x.name.startswith(".tmp")]
    with pytest.raises(ValueError):
        zoo_build.build_zoo("huge")


class _Now:
    """A pool that runs each job at once (the builder's VLM check only needs submit().result())."""

    def submit(self, fn, *args):
        from concurrent.futures import Future

        f = Future()
        f.set_result(fn(*args))
        return f


@pytest.mark.parametrize(("margins", "kept", "tried"), [([0.05, 0.12, 0.30], 1, 2), ([0.05, 0.08, 0.02], 1, 3),
                                                         ([0.15], 0, 1)])
def test_builder_keeps_the_first_vlm_draw_that_shows_the_merge(tmp_path, monkeypatch, margins, kept, tried):
    def train_vlm(out, recipe, seed, attempt=0):
        (Path(out) / "vqa" / "vlm").mkdir(parents=True)
        (Path(out) / "vqa" / "vlm" / "draw").write_text(str(attempt))

    draws = iter(margins)
    monkeypatch.setattr(jobs, "train_vlm", train_vlm)
    monkeypatch.setattr(jobs, "score_vqa", lambda out, recipe, split: {"split": split})
    monkeypatch.setattr(jobs, "vqa_margin", lambda scores: next(draws) if scores["split"] == "check" else None)
    pool = _Now()
    attempts = zoo_build._accept_vlm(tmp_path, {"vlm_attempts": 3}, 0, pool.submit(train_vlm, str(tmp_path), {}, 0),
                                     pool, lambda msg: None, 0.0)
    assert [a["attempt"] for a in attempts] == list(range(tried))
    assert [a["check_margin"] for a in attempts] == margins[:tried]
    assert (tmp_path / "vqa" / "vlm" / "draw").read_text() == str(kept)
    assert sorted(p.name for p in (tmp_path / "vqa").iterdir()) == ["vlm"]  # the other draws are gone
