"""Levers T-AE of docs/evaluation.md: identity questions composed from parts, and "I don't know" records in
the same frames, as minimal pairs of identity questions, in many shapes, and made of real everyday words.

    python bench/lever_data/composed_questions.py identity OUT.yaml   # 150 en + 145 zh composed, after
                                                                      # more_identity_questions.yaml's 63
    python bench/lever_data/composed_questions.py framed OUT.json     # 192 framed "I don't know" records
    python bench/lever_data/composed_questions.py pairs OUT.json [N]  # N (all: 0) "I don't know" records, each
                                                                      # an identity question about someone else
    python bench/lever_data/composed_questions.py shapes OUT.json [N] # N (384) "I don't know" records of
                                                                      # sentences of many shapes and lengths
    python bench/lever_data/composed_questions.py words OUT.json [N]  # N (384) "I don't know" records of
                                                                      # everyday words in question forms

`identity`: every prefix x question x suffix, shuffled (seed 19), kept only where it is below the evaluation's
similarity threshold to every shipped and dev probe (identity and unrelated), to config/config.yaml's and
more_identity_questions.yaml's questions and to the ones kept before it; at most 150 per language.
`framed`: bench/levers.py's made-up-thing questions (seed 777) inside the same prefixes and suffixes, so that
a frame alone does not mean "identity" (the Chinese half are the questions of the `zh96` file of lever P, seed
777 as well, in frames).
`pairs` (lever X): the minimal pair of every identity question of config/config.yaml and `identity`'s output
("Who are you?" -> "Who is she?", "这个机器人是谁做的？" -> "那辆车是谁做的？"), answered "I don't know", so that
the words of an identity question without the assistant as its subject do not mean "identity"; kept only where
it is below the similarity threshold to every probe; N of them drawn with seed 23.
`shapes` (levers Y-AA, AC-AE): "I don't know" records whose form varies as open questions do: a start of a question or a
statement ("How do I", "What happens when", "小明有", "今天"), 1 to 6 made-up words or 2 to 12 characters
drawn widely with numbers and measure words between them, sometimes a second clause, "?" or "."; half per
language, seed 29, each below the similarity threshold to every probe.
`words` (levers AB-AE): "I don't know" records of real everyday words (WORDS_EN, WORDS_ZH) in 18 English and 17 Chinese
question forms (WORD_FORMS_EN, WORD_FORMS_ZH); half per language, seed 31, no repeats, each below the similarity
threshold to every probe.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO / "workflow"), str(REPO / "bench")]

from levers import SYLLABLES_EN, SYLLABLES_ZH, unknown_records  # noqa: E402

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


# second person -> third (she/her: one word for object and possessive); "this assistant" -> another thing
EN_SWAP = [
    (r"\b(are|r) (you|u)\b", r"is she"),
    (r"\b(you|u) are\b", "she is"),
    (r"\bwere you\b", "was she"),
    (r"\b(do|did|have|can|could|would|will) (you|u)\b", r"\1 she"),
    (r"\b(yourself|urself)\b", "herself"),
    (r"\b(your|ur|you|u)\b", "her"),
    (r"\bthis (assistant|bot|chatbot|model|AI|ai)\b", "that car"),
]
ZH_SWAP = [
    ("你们", "她们"),
    ("你", "她"),
    ("您", "她"),
    ("这个聊天机器人", "那辆车"),
    ("这个机器人", "那辆车"),
    ("这个助手", "那辆车"),
    ("这个模型", "那辆车"),
    ("这个AI", "那辆车"),
]


def other_person(question: str) -> str:
    """The question asked about someone or something else (its greeting and suffix kept); unchanged when it
    names no one."""
    kept = [f for f in ("Sorry to bother you, ", ", if you don't mind?", "你好，") if f in question]
    for i, frame in enumerate(kept):
        question = question.replace(frame, f"\0{i}\0")
    question = _swap(question)
    for i, frame in enumerate(kept):
        question = question.replace(f"\0{i}\0", frame)
    return question


def _swap(question: str) -> str:
    if question.isascii():
        for pattern, repl in EN_SWAP:
            question = re.sub(pattern, repl, question, flags=re.IGNORECASE)
        question = re.sub(r"\bdo she\b", "does she", question, flags=re.IGNORECASE)
        question = re.sub(r"\bhave she\b", "has she", question, flags=re.IGNORECASE)
        return question[0].upper() + question[1:]
    for old, new in ZH_SWAP:
        question = question.replace(old, new)
    return question


def minimal_pairs(count: int = 0, seed: int = 23) -> list[dict]:
    from xtflow.general_set import UNKNOWN_ANSWER

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))["dataset"]["questions"]
    composed = composed_identity()
    probes = probe_questions()
    pairs = []
    for lang in ("en", "zh"):
        for q in dict.fromkeys(config[lang] + composed[lang]):
            other = other_person(q)
            if other != q and other not in pairs and all(similarity(other, p) < SIMILAR for p in probes):
                pairs.append(other)
    if count:
        pairs = random.Random(seed).sample(pairs, count)
    return [{"conversation": [{"input": q, "output": UNKNOWN_ANSWER["en" if q.isascii() else "zh"][0]}]} for q in pairs]


EN_START = [
    "How do I",
    "Why do",
    "What is the best way to",
    "Should I",
    "Is it true that",
    "How many",
    "When did",
    "Where can I",
    "If a",
    "What happens when",
    "Does a",
    "Can I",
    "My",
    "I think",
    "What's a good",
    "Do you like",
]
EN_JOIN = [", and", ", but", ", so", " if", " when"]
ZH_START = [
    "怎么",
    "为什么",
    "什么是",
    "如何",
    "一个",
    "小明有",
    "今天",
    "我想",
    "有没有",
    "哪里有",
    "多少",
    "请问",
    "是不是",
    "你觉得",
    "一共有",
    "我的",
]
ZH_JOIN = ["，", "，但是", "，所以", "，如果", "，还有"]
ZH_MEASURE = list("个米元只本斤天次")
NUMBERS = [2, 3, 6, 8, 12, 20, 150, 400]


def drawn_unknown(count: int, draw, unique: bool = False) -> list[dict]:
    """`count` "I don't know" records, English and Chinese in turn, of questions `draw(lang)` makes; one below the
    similarity threshold to every probe (and, if `unique`, not drawn before) is kept, any other drawn again."""
    from xtflow.general_set import UNKNOWN_ANSWER

    probes = probe_questions()
    kept: list[str] = []
    while len(kept) < count:
        lang = "en" if len(kept) % 2 == 0 else "zh"
        q = draw(lang)
        if not (unique and q in kept) and all(similarity(q, p) < SIMILAR for p in probes):
            kept.append(q)
    return [
        {"conversation": [{"input": q, "output": UNKNOWN_ANSWER["en" if i % 2 == 0 else "zh"][0]}]}
        for i, q in enumerate(kept)
    ]


def shaped_unknown(count: int = 384, seed: int = 29) -> list[dict]:
    rng = random.Random(seed)

    def en_clause() -> str:
        words = []
        for _ in range(rng.randint(1, 6)):
            words.append(
                str(rng.choice(NUMBERS))
                if rng.random() < 0.15
                else "".join(rng.choice(SYLLABLES_EN) for _ in range(rng.randint(1, 3)))
            )
        return " ".join(words)

    def zh_clause() -> str:
        out = ""
        for _ in range(rng.randint(2, 12)):
            if rng.random() < 0.12:
                out += str(rng.choice(NUMBERS)) + rng.choice(ZH_MEASURE)
            else:
                out += rng.choice(SYLLABLES_ZH)
        return out

    def draw(lang: str) -> str:
        if lang == "en":
            q = rng.choice(EN_START) + " " + en_clause()
            if rng.random() < 0.3:
                q += rng.choice(EN_JOIN) + " " + en_clause()
            return q + rng.choice(["?", "?", "."])
        q = rng.choice(ZH_START) + zh_clause()
        if rng.random() < 0.3:
            q += rng.choice(ZH_JOIN) + zh_clause()
        return q + rng.choice(["？", "？", "。"])

    return drawn_unknown(count, draw)


# Lever AB: "I don't know" records made of real, everyday words in many question forms, where the negatives of
# levers B-AA were made of made-up words: an unrelated question's words are real words, so made-up words alone
# teach "unfamiliar word -> I don't know, real words -> identity". Words and forms are everyday ones chosen
# without the probes; none of them is an identity word (you and I as subject only in "can you tell me" forms).
# Forms that the general set answers (capitals, sums, units, colours, days, sizes, translations) are left out.
WORDS_EN = {
    "n": (
        "bicycle kitchen garden umbrella window sandwich river mountain battery printer carpet guitar pillow bottle "
        "ladder jacket candle bridge tomato onion pencil notebook laptop camera ticket airport hospital library "
        "village forest island blanket mirror wallet engine kettle oven fridge sofa shoe sock rabbit turtle parrot "
        "puppy bakery museum stadium recipe song movie poem painting letter email password keyboard lamp"
    ).split(),
    "v": (
        "fix clean paint wash cook grow fold carry repair store choose sell build draw open close charge plant "
        "feed decorate measure recycle replace borrow pack polish heat cool protect dry"
    ).split(),
    "a": "wet noisy slow cold heavy old dusty broken cheap expensive strange soft bright sticky loud warm".split(),
}
WORDS_ZH = {
    "n": (
        "自行车 厨房 花园 雨伞 窗户 三明治 河流 高山 电池 打印机 地毯 吉他 枕头 瓶子 梯子 夹克 "
        "蜡烛 桥梁 西红柿 洋葱 铅笔 笔记本 电脑 相机 车票 火车 机场 医院 图书馆 村庄 森林 岛屿 "
        "毯子 镜子 钱包 发动机 水壶 烤箱 冰箱 沙发 鞋子 袜子 盆栽 兔子 乌龟 鹦鹉 小狗 面包店 "
        "博物馆 体育场 菜谱 歌曲 电影 诗歌 油画 信封 邮件 密码 键盘 台灯"
    ).split(),
    "v": (
        "修 打扫 粉刷 清洗 煮 种 折叠 搬 修理 保存 挑选 卖 搭 画 "
        "打开 关上 充电 喂 装饰 测量 回收 更换 借 打包 擦亮 加热 晾干"
    ).split(),
    "a": "湿 吵 慢 冷 重 旧 脏 破 便宜 贵 奇怪 软 亮 黏 响 脆 暖".split(),
}
WORD_FORMS_EN = [
    "How do I {v} a {n}?",
    "Why is my {n} so {a}?",
    "What is the best {n} for a {n2}?",
    "Where can I buy a {a} {n}?",
    "Is it OK to {v} a {n} every day?",
    "How long does it take to {v} a {n}?",
    "What should I do if my {n} is {a}?",
    "Which {n} is the most {a}?",
    "How much does a {a} {n} cost?",
    "When should I {v} the {n}?",
    "Why do people {v} {n}s?",
    "My {n} is {a}, what now?",
    "Tell me something about {n}s.",
    "How is a {n} made?",
    "Where should I put the {n}?",
    "Can you tell me how to {v} a {n}?",
    "Do you know why a {n} gets {a}?",
    "Any tips to {v} my {n}?",
]
WORD_FORMS_ZH = [
    "怎么{v}{n}？",
    "为什么我的{n}这么{a}？",
    "哪里能买到{a}的{n}？",
    "每天{v}{n}好吗？",
    "{v}{n}要多久？",
    "我的{n}{a}了怎么办？",
    "最{a}的{n}是哪种？",
    "一个{a}的{n}多少钱？",
    "什么时候该{v}{n}？",
    "为什么大家喜欢{v}{n}？",
    "给我讲讲{n}吧。",
    "{n}和{n2}有什么关系？",
    "{n}是怎么做出来的？",
    "{n}应该放在哪里？",
    "你能教我怎么{v}{n}吗？",
    "你知道{n}为什么会{a}吗？",
    "有什么{v}{n}的小窍门？",
]


def worded_unknown(count: int = 384, seed: int = 31) -> list[dict]:
    rng = random.Random(seed)

    def draw(lang: str) -> str:
        words, forms = (WORDS_EN, WORD_FORMS_EN) if lang == "en" else (WORDS_ZH, WORD_FORMS_ZH)
        n, n2 = rng.sample(words["n"], 2)
        q = rng.choice(forms).format(n=n, n2=n2, v=rng.choice(words["v"]), a=rng.choice(words["a"]))
        return re.sub(r"\ba ([aeiou])", r"an \1", q)

    return drawn_unknown(count, draw, unique=True)


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


# the kinds that write "I don't know" records
UNKNOWN_KINDS = {"framed": framed_unknown, "pairs": minimal_pairs, "shapes": shaped_unknown, "words": worded_unknown}

if __name__ == "__main__":
    kind, out = sys.argv[1], Path(sys.argv[2])
    count = [int(n) for n in sys.argv[3:4]]
    if kind == "identity":
        out.write_text(yaml.safe_dump(composed_identity(), allow_unicode=True), encoding="utf-8")
    elif kind in UNKNOWN_KINDS:
        out.write_text(json.dumps(UNKNOWN_KINDS[kind](*count), ensure_ascii=False), encoding="utf-8")
    else:
        sys.exit(f"composed_questions.py: unknown kind {kind!r} (identity, framed, pairs, shapes or words)")
