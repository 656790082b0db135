"""Synthesise text-rendering prompts in text-length buckets, as in X-Omni's RL data (5 buckets, 10K each).

    python -m prompts.synth --per-bucket 1000 --seed 0 --out text_prompts.jsonl

A prompt describes a carrier (sign, poster, label, book cover, t-shirt, ...) in a scene and a style, and
quotes the strings to render; the strings come from a theme (bakery, music festival, hiking trail, ...) so
that the text fits the picture. Each JSONL row holds `prompt`, `text` (the target strings, each quoted
verbatim in the prompt), `text_length` (their word count), `length_bucket`, `category` (the carrier),
`theme` and `task: "text_rendering"`: it loads with `prompts.sources.PromptSource`.

Buckets count the whitespace-separated words of all target strings together (LongText-Bench's
`text_length`): 1-3, 4-8, 9-15, 16-30 and 31+ words (the generator stops at 60). The X-Omni paper names
five buckets by text length without their bounds; these are ours. Output is a pure function of the seed
(each bucket has its own generator, so a larger --per-bucket extends a smaller one). English only.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LengthBucket:
    """Target text of `min_words` to `max_words` words in total (all strings of a prompt together)."""

    name: str
    min_words: int
    max_words: int


BUCKETS = (
    LengthBucket("1-3", 1, 3),
    LengthBucket("4-8", 4, 8),
    LengthBucket("9-15", 9, 15),
    LengthBucket("16-30", 16, 30),
    LengthBucket("31+", 31, 60),
)


@dataclass(frozen=True)
class Theme:
    """What the text is about: names (1-3 words), goods (plural nouns), activities, a venue and a place."""

    name: str
    names: tuple[str, ...]
    goods: tuple[str, ...]
    activities: tuple[str, ...]
    venue: str
    food: bool = False


THEMES = (
    Theme("bakery", ("Golden Crust", "Morning Loaf", "Flour & Stone", "Little Oven", "Rise"),
          ("croissants", "sourdough loaves", "cinnamon rolls", "rye breads", "fruit tarts"),
          ("baking classes", "tasting mornings", "bread workshops"), "a small neighborhood bakery", True),
    Theme("coffee", ("Blue Kettle", "Bean There", "Third Wave", "Copper Cup", "Drift"),
          ("espressos", "cold brews", "oat lattes", "single origin roasts", "almond biscotti"),
          ("latte art lessons", "open mic evenings", "cupping sessions"), "a corner coffee shop", True),
    Theme("books", ("Paper Lantern", "Chapter Nine", "The Reading Room", "Inkwell", "Folio"),
          ("novels", "poetry collections", "rare maps", "picture books", "used paperbacks"),
          ("author readings", "book club nights", "story hours"), "an old independent bookshop"),
    Theme("festival", ("Summer Sound", "Echo Valley", "Northern Lights", "Solstice", "Wavelength"),
          ("live bands", "food trucks", "vinyl records", "glow sticks", "craft beers"),
          ("late night sets", "open air concerts", "silent discos"), "a music festival ground"),
    Theme("trail", ("Pine Ridge", "Eagle Falls", "Silver Creek", "Cedar Loop", "Summit"),
          ("wildflowers", "waterfalls", "viewpoints", "campsites", "picnic tables"),
          ("guided hikes", "bird watching", "stargazing tours"), "a mountain trailhead"),
    Theme("museum", ("Stellar Hall", "Deep Time", "The Atlas Room", "Curiosity Lab", "Orbit"),
          ("fossils", "meteorites", "ancient coins", "robot models", "star charts"),
          ("planetarium shows", "family workshops", "night tours"), "a science museum lobby"),
    Theme("market", ("Green Acre", "Sunday Harvest", "Orchard Row", "Field & Basket", "Root"),
          ("heirloom tomatoes", "fresh peaches", "wildflower honey", "goat cheeses", "farm eggs"),
          ("cooking demos", "seed swaps", "tasting tours"), "a farmers market stall", True),
    Theme("studio", ("Still Point", "Open Sky Yoga", "Balance", "The Movement Room", "Flow"),
          ("yoga mats", "meditation cushions", "herbal teas", "class passes", "foam rollers"),
          ("sunrise yoga", "breathing workshops", "pilates classes"), "a bright yoga studio"),
    Theme("shelter", ("Happy Paws", "Second Chance", "Whisker Haven", "Muddy Boots", "Buddy"),
          ("chew toys", "dog beds", "cat trees", "leashes", "pet treats"),
          ("adoption days", "volunteer walks", "puppy training"), "an animal shelter"),
    Theme("noodles", ("Red Lantern Ramen", "Night Noodle", "Umami House", "Slurp", "Koji"),
          ("miso ramen", "pork buns", "spicy noodles", "gyoza", "matcha ice creams"),
          ("late night dining", "noodle making classes", "chef specials"), "a tiny ramen bar", True),
    Theme("flowers", ("Petal & Stem", "Wild Bloom", "The Green Door", "Fern Alley", "Posy"),
          ("sunflowers", "peonies", "succulents", "dried bouquets", "potted herbs"),
          ("wreath workshops", "garden tours", "flower arranging"), "a flower shop"),
    Theme("tech", ("Future Forward", "Byte Summit", "Open Source Days", "Quantum Week", "Nexus"),
          ("keynotes", "robot demos", "coding challenges", "startup pitches", "smart gadgets"),
          ("hackathons", "panel talks", "hands-on labs"), "a technology conference hall"),
    Theme("surf", ("Salt & Swell", "Blue Horizon", "Tide Pool", "Offshore", "Reef"),
          ("surfboards", "wetsuits", "beach towels", "board wax", "sunglasses"),
          ("surf lessons", "sunset paddles", "beach cleanups"), "a surf shop by the beach"),
    Theme("cinema", ("Silver Screen", "The Paramount", "Midnight Reel", "Starlight Drive-In", "Lumiere"),
          ("classic films", "premieres", "popcorn buckets", "short films", "documentaries"),
          ("double features", "director talks", "outdoor screenings"), "an old art deco cinema"),
)


@dataclass(frozen=True)
class Carrier:
    """Where the text is: a category, a description with `{venue}` filled from the theme, and a capacity."""

    category: str
    description: str
    max_words: int
    food_only: bool = False


CARRIERS = (
    Carrier("sign", "a hand-painted wooden sign above the entrance of {venue}", 30),
    Carrier("sign", "a glowing neon sign in the window of {venue}", 8),
    Carrier("storefront", "the glass storefront of {venue}, with lettering painted on the window", 30),
    Carrier("poster", "a large poster pasted on a brick wall near {venue}", 60),
    Carrier("poster", "a framed vintage poster hanging inside {venue}", 60),
    Carrier("billboard", "a huge billboard above a highway, advertising {venue}", 15),
    Carrier("banner", "a long fabric banner stretched across the front of {venue}", 15),
    Carrier("flyer", "a printed flyer pinned to a cork board in {venue}", 60),
    Carrier("menu", "a chalkboard menu standing outside {venue}", 60, food_only=True),
    Carrier("label", "a glass jar with a kraft paper label, on a shelf in {venue}", 30, food_only=True),
    Carrier("packaging", "a cardboard gift box from {venue}", 30),
    Carrier("book_cover", "the cover of a hardcover book about {venue}, lying on a wooden table", 30),
    Carrier("book_cover", "the back cover of a paperback guide to {venue}", 60),
    Carrier("tshirt", "a white cotton t-shirt with a printed slogan, worn by someone at {venue}", 15),
    Carrier("screen", "a tablet screen showing a web page for {venue}", 60),
    Carrier("mug", "a ceramic mug with printed lettering, sitting on a counter in {venue}", 8),
)

STYLES = ("A photorealistic photo of", "A cinematic wide shot of", "A flat vector illustration of",
          "A watercolor painting of", "A 3D render of", "A vintage film photograph of",
          "A minimalist graphic design of", "An isometric illustration of", "A close-up photo of")
SCENES = ("on a quiet street at dawn", "in bright afternoon sunlight", "on a rainy evening with reflections",
          "at night under colorful lights", "on a snowy winter morning", "surrounded by autumn leaves",
          "during a busy weekend crowd", "in soft golden hour light", "on a foggy morning")
FONTS = ("bold sans-serif capitals", "elegant serif letters", "playful hand lettering",
         "clean geometric type", "hand-drawn chalk letters", "retro stencil letters", "thin modern type",
         "glowing neon script")
FIRST = ("The main heading reads", "Large letters spell out", "The text at the top says", "It reads")
NEXT = ("Below it, smaller text says", "Underneath is written", "Another line reads", "Next comes",
        "Further down it says", "A smaller caption reads")
LAST = ("At the bottom, it says", "The last line reads", "In the corner, fine print says")

# Line templates by kind; slots: {name} {good} {good2} {activity} {day} {day2} {time} {year} {site} {n}.
SHORT = ("Open Daily", "New {good}", "Since {year}", "Est. {year}", "Now Open", "Grand Opening",
         "Open {day} to {day2}", "{n}% Off {good}", "Visit {site}", "Opens at {time}", "Welcome",
         "Closed {day}", "Free {activity}")
TAGLINES = ("The best {good} in town", "New {good} and {good2} every week",
            "Handmade with love since {year}", "Come for the {good}, stay for the {good2}",
            "Try our new {good} this week", "Everything you need for {activity}",
            "Home of the famous {good}", "Ask us about {activity}", "Where good days begin",
            "{activity} every {day} at {time}", "Welcome to {name}")
SENTENCES = ("Join us every {day} from {time} for {activity} and free {good}.",
             "All of our {good} are made by hand in small batches right here.",
             "Bring a friend and get a second order of {good} at half price.",
             "Tickets for {activity} are available at the front desk or online at {site}.",
             "Members receive {n} percent off {good} and early access to {activity}.",
             "We are closed on public holidays, but our online shop at {site} stays open.",
             "Please ask our friendly staff about {activity} and this season's {good}.",
             "Doors open at {time} and {activity} starts thirty minutes later.",
             "Every purchase of {good} supports local families and small producers.",
             "Thank you for visiting {name}, we hope to see you again soon.")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def word_count(texts: Sequence[str]) -> int:
    """Total whitespace-separated words of all strings (LongText-Bench's `text_length`)."""
    return sum(len(t.split()) for t in texts)


def _fill(template: str, theme: Theme, name: str, rng: random.Random) -> str:
    good, good2 = rng.sample(theme.goods, 2)
    day, day2 = sorted(rng.sample(range(7), 2))
    site = "".join(c for c in name.lower() if c.isalnum()) + rng.choice((".com", ".org"))
    text = template.format(
        name=name, good=good, good2=good2, activity=rng.choice(theme.activities),
        day=DAYS[day], day2=DAYS[day2], time=f"{rng.randint(6, 11)}:{rng.choice(('00', '30'))}",
        year=rng.randint(1952, 2024), site=site, n=rng.choice((10, 15, 20, 25, 30, 50)))
    return text[0].upper() + text[1:]


def _texts(bucket: LengthBucket, theme: Theme, max_words: int, rng: random.Random) -> list[str]:
    """Distinct target strings whose total word count falls in the bucket (and fits the carrier).

    A total is drawn uniformly in the bucket; a name or short line comes first, then lines from unused
    templates until the total is reached (a line overshooting it by more than two words is redrawn, so
    lengths stay spread over the bucket). Long texts draw mostly sentences: prose rather than slogans.
    """
    high = min(bucket.max_words, max_words)
    while True:
        target = rng.randint(bucket.min_words, high)
        cap = min(high, target + 2)
        name, template = rng.choice(theme.names), rng.choice(SHORT)
        first = name if rng.random() < 0.6 else _fill(template, theme, name, rng)
        texts, used = [first.upper() if rng.random() < 0.3 else first], {template}
        for _ in range(50):
            missing = target - word_count(texts)
            if missing <= 0:
                break
            pool = SENTENCES + TAGLINES if missing > 10 else SHORT + TAGLINES + SENTENCES
            template = rng.choice([t for t in pool if t not in used])
            line = _fill(template, theme, name, rng)
            if word_count(texts) + word_count([line]) <= cap and line not in texts:
                texts.append(line)
                used.add(template)
        if bucket.min_words <= word_count(texts) <= high:
            return texts


def _describe(texts: list[str], rng: random.Random) -> str:
    """'The main heading reads "A". Below it, smaller text says "B." ...' with every target quoted."""
    middle = rng.sample(NEXT, len(NEXT))
    leads = [rng.choice(FIRST)] + [middle[i % len(middle)] for i in range(len(texts) - 1)]
    if len(texts) > 2:
        leads[-1] = rng.choice(LAST)
    parts = [f'{lead} "{text}"' + ("" if text[-1] in ".!?" else ".")
             for lead, text in zip(leads, texts, strict=True)]
    return " ".join(parts)


def synthesize_one(bucket: LengthBucket, rng: random.Random) -> dict[str, Any]:
    """One JSONL row for `bucket`, drawn from `rng`."""
    theme = rng.choice(THEMES)
    carriers = [c for c in CARRIERS if c.max_words >= bucket.min_words and (theme.food or not c.food_only)]
    carrier = rng.choice(carriers)
    texts = _texts(bucket, theme, carrier.max_words, rng)
    prompt = (f"{rng.choice(STYLES)} {carrier.description.format(venue=theme.venue)}, {rng.choice(SCENES)}. "
              f"{_describe(texts, rng)} The text is set in {rng.choice(FONTS)}, sharp and clearly legible.")
    return {"prompt": prompt, "text": texts, "text_length": word_count(texts), "length_bucket": bucket.name,
            "category": carrier.category, "theme": theme.name, "task": "text_rendering"}


def synthesize(
    per_bucket: int, seed: int = 0, buckets: Sequence[LengthBucket] = BUCKETS
) -> list[dict[str, Any]]:
    """`per_bucket` distinct prompts for each bucket, bucket by bucket; a pure function of the arguments."""
    if per_bucket <= 0:
        raise ValueError(f"per_bucket must be positive, got {per_bucket}")
    rows = []
    for bucket in buckets:
        rng = random.Random(f"{seed}:{bucket.name}")
        seen: set[str] = set()
        for _ in range(per_bucket * 20):
            row = synthesize_one(bucket, rng)
            if row["prompt"] not in seen:
                seen.add(row["prompt"])
                rows.append(row)
                if len(seen) == per_bucket:
                    break
        else:
            raise ValueError(f"bucket {bucket.name}: only {len(seen)} distinct prompts after "
                             f"{per_bucket * 20} draws; ask for fewer")
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m prompts.synth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-bucket", type=int, required=True, help="prompts per text-length bucket")
    parser.add_argument("--seed", type=int, default=0, help="the output is a pure function of the seed")
    parser.add_argument("--out", required=True, help="JSONL file to write ('-' for stdout)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    rows = synthesize(args.per_bucket, args.seed)
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if args.out == "-":
        sys.stdout.write(lines)
    else:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(lines)
        print(f"wrote {len(rows)} prompts ({args.per_bucket} per bucket) to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
