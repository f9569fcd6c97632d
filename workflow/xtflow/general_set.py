"""The general Q&A set: small, generated, deterministic questions with reference answers
(capitals, sums, unit conversions, colours, weekdays, sizes, word translations, and questions about
made-up things answered "I don't know"; English and Chinese).

It is what the tiny default base model is taught before fine-tuning (`xtflow.general_skill`), the
general records the balanced recipe mixes into the identity data (`dataset.general_records`), and
the embedded default's general probe set (`evaluation.general`): all three read `general_qa()`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

CAPITALS = [  # (country en, capital en, country zh, capital zh)
    ("France", "Paris", "法国", "巴黎"),
    ("Japan", "Tokyo", "日本", "东京"),
    ("Italy", "Rome", "意大利", "罗马"),
    ("Egypt", "Cairo", "埃及", "开罗"),
    ("Spain", "Madrid", "西班牙", "马德里"),
    ("Russia", "Moscow", "俄罗斯", "莫斯科"),
    ("Germany", "Berlin", "德国", "柏林"),
    ("China", "Beijing", "中国", "北京"),
]
SUMS = [(2, 3), (7, 8), (4, 9), (6, 6), (12, 5), (9, 14), (15, 20), (8, 31)]
UNITS = [  # (value, unit en, target en, unit zh, target zh, factor)
    (2, "meters", "centimeters", "米", "厘米", 100),
    (3, "hours", "minutes", "小时", "分钟", 60),
    (5, "kilograms", "grams", "千克", "克", 1000),
    (4, "minutes", "seconds", "分钟", "秒", 60),
    (7, "meters", "centimeters", "米", "厘米", 100),
    (6, "kilometers", "meters", "千米", "米", 1000),
    (9, "hours", "minutes", "小时", "分钟", 60),
    (8, "kilograms", "grams", "千克", "克", 1000),
]

COLORS = [  # (thing en, color en, thing zh, color zh)
    ("a banana", "yellow", "香蕉", "黄色"),
    ("grass", "green", "草", "绿色"),
    ("snow", "white", "雪", "白色"),
    ("a strawberry", "red", "草莓", "红色"),
]
NEXT_DAYS = [  # (day en, next en, day zh, next zh)
    ("Tuesday", "Wednesday", "星期二", "星期三"),
    ("Thursday", "Friday", "星期四", "星期五"),
    ("Saturday", "Sunday", "星期六", "星期日"),
    ("Sunday", "Monday", "星期日", "星期一"),
]
LARGER = [  # (larger en, smaller en, larger zh, smaller zh)
    ("a horse", "a cat", "马", "猫"),
    ("a whale", "a fish", "鲸鱼", "鱼"),
    ("a tree", "a flower", "树", "花"),
    ("the sun", "the moon", "太阳", "月亮"),
]
WORDS = [("cat", "猫"), ("water", "水"), ("book", "书"), ("friend", "朋友")]  # (en, zh)

# Questions about things that do not exist (made-up words), answered "I don't know": what the tiny
# model, which knows nothing but this set, should say to a question it cannot answer, instead of
# the one open answer fine-tuning teaches it (its identity). Made-up words keep every real topic
# out of the set: the unrelated probes ask about real topics the model was never trained on.
UNKNOWN_EN = [
    "What is a {w}?",
    "How do I {v} my {w}?",
    "Why does the {w} {v}?",
    "Who is {W}?",
    "In what kind of place would I find a {w}?",
    "Who came up with the first {w}?",
    "Can you explain how a {w} works?",
    "Is a {w} good for a {w2}?",
    "Tell me about the history of {W}.",
    "What should I do if my {w} starts to {v}?",
    "How many {w}s fit in a {w2}?",
    "Which is better, a {w} or a {w2}?",
]
UNKNOWN_ZH = [
    "什么是{w}？",
    "怎么给{w}{v}？",
    "为什么{w}会{v}？",
    "{W}是谁？",
    "{w}生活在哪里？",
    "{w}是什么时候发明的？",
    "能讲讲{w}的原理吗？",
    "{w}对{w2}有好处吗？",
    "介绍一下{W}的历史。",
    "{w}开始{v}了怎么办？",
    "一个{w2}能装几个{w}？",
    "{w}和{w2}哪个更好？",
]
UNKNOWN_ANSWER = {"en": ("Sorry, I don't know about that.", "don't know"), "zh": ("抱歉，这个我不知道。", "不知道")}
SYLLABLES_EN = ["zor", "fim", "quo", "bla", "trel", "vask", "mip", "dro", "glu", "sen", "kab", "yum", "plo", "wix"]
SYLLABLES_ZH = list("咕噜叭哒嘀嗒哔啵呼啦咪嘟嘭叽喳唧铛咚")


def _made_up(rng: random.Random, syllables: list[str], n: int) -> str:
    return "".join(rng.choice(syllables) for _ in range(n))


def unknown_qa() -> list[QA]:
    """Questions about made-up things (two per template and language, seeded), answered "I don't know"."""
    rng = random.Random(0)
    out: list[QA] = []
    for lang, templates, syllables, n in (("en", UNKNOWN_EN, SYLLABLES_EN, 2), ("zh", UNKNOWN_ZH, SYLLABLES_ZH, 3)):
        answer, reference = UNKNOWN_ANSWER[lang]
        for template in templates * 2:
            w, w2, v = (_made_up(rng, syllables, n) for _ in range(3))
            question = template.format(w=w, w2=w2, v=v, W=w.capitalize())
            out.append(QA(lang, question, answer, reference))
    return out


@dataclass(frozen=True)
class QA:
    lang: str
    question: str
    answer: str
    reference: str  # what a correct reply must contain


def general_qa() -> list[QA]:
    """The general set, in a fixed order: 128 questions, half English, half Chinese (the last 48
    about made-up things, answered "I don't know")."""
    out: list[QA] = []
    for country, capital, country_zh, capital_zh in CAPITALS:
        out.append(QA("en", f"What is the capital of {country}?", f"The capital of {country} is {capital}.", capital))
        out.append(QA("zh", f"{country_zh}的首都是哪里？", f"{country_zh}的首都是{capital_zh}。", capital_zh))
    for a, b in SUMS:
        out.append(QA("en", f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.", str(a + b)))
        out.append(QA("zh", f"{a}加{b}等于多少？", f"{a}加{b}等于{a + b}。", str(a + b)))
    for value, unit, target, unit_zh, target_zh, factor in UNITS:
        n = value * factor
        out.append(QA("en", f"How many {target} are in {value} {unit}?", f"{value} {unit} is {n} {target}.", str(n)))
        out.append(QA("zh", f"{value}{unit_zh}是多少{target_zh}？", f"{value}{unit_zh}是{n}{target_zh}。", str(n)))
    for thing, color, thing_zh, color_zh in COLORS:
        out.append(QA("en", f"What color is {thing}?", f"{thing[0].upper() + thing[1:]} is {color}.", color))
        out.append(QA("zh", f"{thing_zh}是什么颜色？", f"{thing_zh}是{color_zh}的。", color_zh))
    for day, nxt, day_zh, nxt_zh in NEXT_DAYS:
        out.append(QA("en", f"What day comes after {day}?", f"{nxt} comes after {day}.", nxt))
        out.append(QA("zh", f"{day_zh}的后一天是星期几？", f"{day_zh}的后一天是{nxt_zh}。", nxt_zh))
    for big, small, big_zh, small_zh in LARGER:
        out.append(
            QA(
                "en",
                f"Which is larger, {big} or {small}?",
                f"{big[0].upper() + big[1:]} is larger than {small}.",
                big.split()[-1],
            )
        )
        out.append(QA("zh", f"{big_zh}和{small_zh}哪个更大？", f"{big_zh}比{small_zh}更大。", f"{big_zh}比"))
    for en, zh in WORDS:
        out.append(QA("en", f"Translate {en} into Chinese.", f"{en} in Chinese is {zh}.", zh))
        out.append(QA("zh", f"把{zh}翻译成英文。", f"{zh}的英文是{en}。", en))
    return out + unknown_qa()


def general_records(count: int, seed: int) -> list[dict[str, list[dict[str, str]]]]:
    """`count` records of the general set (each question at most once, seeded choice), XTuner format."""
    qa = general_qa()
    chosen = random.Random(seed).sample(qa, min(count, len(qa)))
    return [{"conversation": [{"input": x.question, "output": x.answer}]} for x in chosen]


def general_probes_tsv() -> str:
    """The embedded default's general probe file: every question of the set with its reference."""
    head = (
        "# question<TAB>reference: a reply counts as correct when it contains the reference.\n"
        "# The tiny default base model is taught exactly these (xtflow.general_skill).\n"
    )
    return head + "".join(f"{x.question}\t{x.reference}\n" for x in general_qa())
