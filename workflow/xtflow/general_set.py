"""The general Q&A set: small, generated, deterministic questions with reference answers
(capitals, sums, unit conversions, colours, weekdays, sizes, word translations; English and Chinese).

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


@dataclass(frozen=True)
class QA:
    lang: str
    question: str
    answer: str
    reference: str  # what a correct reply must contain


def general_qa() -> list[QA]:
    """The general set, in a fixed order: 80 questions, half English, half Chinese."""
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
    return out


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
