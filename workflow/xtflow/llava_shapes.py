"""The LLaVA target's embedded default data: seeded images of one coloured shape each, in LLaVA's format.

No image set can be downloaded where xtflow is built and tested, so the default run draws its own:
one shape (square, circle or triangle) in one of six colours, at a random size and place on white.
Each split has its own seeded stream (changing one split's size leaves the others byte-identical):

- pretrain: captions, as LLaVA-Pretrain (`"<caption prompt>\\n<image>"` -> `"A red square."`);
- finetune: questions, as LLaVA-Instruct (`"<image>\\nWhat colour is the square?"`, three phrasings,
  -> `"Red."`);
- test: held-out images with the evaluation's question (`"What colour is the <shape>?"`).

Colours are balanced (round-robin over a seeded shuffle), so always giving one colour scores 1/6.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 215, 20),
    "purple": (140, 40, 170),
    "orange": (245, 130, 20),
}
SHAPES = ("square", "circle", "triangle")
CAPTION_PROMPTS = (  # some of LLaVA-Pretrain's caption prompts
    "Give a brief description of the image.",
    "Describe the image concisely.",
    "Write a terse but informative summary of the picture.",
    "Share a concise interpretation of the image provided.",
)
QUESTIONS = ("What colour is the {shape}?", "What color is the {shape}?", "Which colour is the {shape}?")
TEST_QUESTION = QUESTIONS[0]


def draw(rng: random.Random, shape: str, colour: str, size: int) -> Any:
    """One PIL image: the shape, 3/8 to 5/8 of the side, somewhere on a white square of `size` pixels."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (255, 255, 255))
    pen = ImageDraw.Draw(img)
    side = rng.randint(size * 3 // 8, size * 5 // 8)
    x, y = rng.randint(0, size - side), rng.randint(0, size - side)
    fill = COLOURS[colour]
    if shape == "square":
        pen.rectangle([x, y, x + side - 1, y + side - 1], fill=fill)
    elif shape == "circle":
        pen.ellipse([x, y, x + side - 1, y + side - 1], fill=fill)
    else:
        pen.polygon([(x + side / 2, y), (x, y + side - 1), (x + side - 1, y + side - 1)], fill=fill)
    return img


def generate_split(split: str, count: int, seed: int, size: int, images: Path) -> list[dict[str, Any]]:
    """Draw `count` images of `split` into `images` and return their records (image paths relative to it)."""
    rng = random.Random(f"{seed}-{split}")
    colours = list(COLOURS)
    rng.shuffle(colours)
    items = [(rng.choice(SHAPES), colours[i % len(colours)]) for i in range(count)]
    images.mkdir(parents=True, exist_ok=True)
    records = []
    for i, (shape, colour) in enumerate(items):
        name = f"{i:05d}.png"
        draw(rng, shape, colour, size).save(images / name)
        if split == "pretrain":
            human, gpt = rng.choice(CAPTION_PROMPTS) + "\n<image>", f"A {colour} {shape}."
        else:
            question = TEST_QUESTION if split == "test" else rng.choice(QUESTIONS)
            human, gpt = "<image>\n" + question.format(shape=shape), colour.capitalize() + "."
        turns = [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]
        records.append({"id": f"{split}-{i:05d}", "image": name, "conversations": turns})
    return records
