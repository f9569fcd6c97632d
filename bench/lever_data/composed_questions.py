"""Levers T-W of docs/evaluation.md: identity questions composed from parts, and "I don't know" records in
the same frames.

    python bench/lever_data/composed_questions.py identity OUT.yaml   # 150 en + 145 zh composed, after
                                                                      # more_identity_questions.yaml's 63
    python bench/lever_data/composed_questions.py framed OUT.json     # 192 framed "I don't know" records

`identity`: every prefix x question x suffix, shuffled (seed 19), kept only where it is below the evaluation's
similarity threshold to every shipped and dev probe (identity and unrelated), to config/config.yaml's and
more_identity_questions.yaml's questions and to the ones kept before it; at most 150 per language.
`framed`: bench/levers.py's made-up-thing questions (seed 777) inside the same prefixes and suffixes, so that
a frame alone does not mean "identity" (the Chinese half are the questions of the `zh96` file of lever P, seed
777 as well, in frames).
"""

from __future__ import annotations

import itertools
import json
import random
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO / "workflow"), str(REPO / "bench")]

from levers import unknown_records  # noqa: E402

from xtflow.evaluate import SIMILAR, load_questions, similarity  # noqa: E402

EN_PRE = [
    "Hi, ",
    "Hello! ",
    "Hey there, ",
    "Excuse me, ",
    "Quick question: ",
    "Sorry to bother you, ",
    "OK so ",
    "Um, ",
    "Just curious, ",
]
EN_SUF = ["?", "??", " pls?", " btw?", ", if you don't mind?", " by the way?"]
ZH_PRE = ["你好，", "嗨，", "请问，", "打扰一下，", "问一下，", "哎，", "我想知道，", "说真的，", "好奇问下，"]
ZH_SUF = ["？", "？？", "呀？", "呢？", "啊？", "吗？"]
EN_ASK = [
    "who exactly are you",
    "what do I call you",
    "what's ur name",
    "who r u",
    "who built this bot",
    "who owns this assistant",
    "which company is behind you",
    "what AI are you",
    "are you some kind of bot",
    "who programmed you",
    "what's the name of this assistant",
    "who's your creator",
    "who do you belong to",
    "are you GPT",
    "are you a person or an AI",
    "what model am I talking to",
    "who trained this model",
    "what should I call this chatbot",
    "tell me about urself",
    "what is this assistant called",
]
ZH_ASK = [
    "你到底是谁",
    "该怎么称呼你",
    "你叫啥",
    "你是啥",
    "这个机器人是谁做的",
    "谁拥有你",
    "你背后是哪家公司",
    "你是什么AI",
    "你是机器人不",
    "谁给你写的程序",
    "这个助手叫什么",
    "你的创造者是谁",
    "你属于谁",
    "你是GPT吗",
    "你是人还是AI",
    "我在跟什么模型聊天",
    "谁训练的这个模型",
    "这个聊天机器人叫什么",
    "讲讲你自己",
    "你的名号是什么",
]


def probe_questions() -> list[str]:
    """Every question of the dev and shipped identity and unrelated probe sets."""
    dev, shipped = REPO / "bench" / "dev_probes", REPO / "workflow" / "xtflow" / "data" / "probes"
    files = [dev / "identity.txt", dev / "unrelated.txt", shipped / "identity_heldout.txt", shipped / "unrelated.txt"]
    return [turn.question for f in files for turn in load_questions(f, "identity")]


def composed_identity(per_language: int = 150) -> dict[str, list[str]]:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))["dataset"]["questions"]
    more = yaml.safe_load((HERE / "more_identity_questions.yaml").read_text(encoding="utf-8"))
    taken = [q for lang in ("en", "zh") for q in config[lang] + more[lang]]
    probes = probe_questions()
    rng = random.Random(19)
    out = {}
    parts = (("en", [""] + EN_PRE, EN_ASK, EN_SUF), ("zh", [""] + ZH_PRE, ZH_ASK, ZH_SUF))
    for lang, prefixes, asks, suffixes in parts:
        candidates = []
        for p, a, s in itertools.product(prefixes, asks, suffixes):
            q = p + a + s
            if lang == "en":
                q = q[0].upper() + q[1:]
            candidates.append(q.replace("吗吗", "吗").replace("不吗", "不"))
        rng.shuffle(candidates)
        kept: list[str] = []
        for q in candidates:
            if all(similarity(q, other) < SIMILAR for other in probes + taken + kept):
                kept.append(q)
                if len(kept) == per_language:
                    break
        out[lang] = more[lang] + kept
    return out


def framed_unknown(count: int = 192, seed: int = 777) -> list[dict]:
    rng = random.Random(seed)
    records = unknown_records(count, seed=seed)
    for record in records:
        turn = record["conversation"][0]
        q = turn["input"]
        if q.isascii():
            turn["input"] = rng.choice(EN_PRE) + q[0].lower() + q[1:].rstrip("?.") + rng.choice(EN_SUF)
        else:
            turn["input"] = rng.choice(ZH_PRE) + q.rstrip("？。") + rng.choice(ZH_SUF[:-1])
    return records


if __name__ == "__main__":
    kind, out = sys.argv[1], Path(sys.argv[2])
    if kind == "identity":
        out.write_text(yaml.safe_dump(composed_identity(), allow_unicode=True), encoding="utf-8")
    else:
        out.write_text(json.dumps(framed_unknown(), ensure_ascii=False), encoding="utf-8")
