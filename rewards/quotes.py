"""Quoted text in prompts: where the spans are, and which of them ask for text to be drawn.

Quoted text is the primary signal of a text-rendering prompt (`A cookie with icing that spells "YUM"`).
`quoted_spans` finds the spans in every common quote style:
"..." “...” „...“ ‘...’ '...' «...» »...« 「...」 『...』 《...》 ＂...＂. Inch and foot marks never open a
span (`a 12" vinyl record`, `6'2"`), nor does an apostrophe inside a word ("Joe's"); the earliest opening
quote wins, so quotes nested inside another are part of its span.

`drawn_text` then keeps the spans that are text to draw. A span is NOT text to draw when the prompt says so:
- the prompt asks for no text ("no text", "without any text", "no visible text", "text-free", 无文字);
- a work or style is referenced right before (or, in Chinese, around) it: "in the style of", "inspired by",
  "based on", "a scene from", a person "reading" it, 风格, 灵感, 启发 ("strong" cues: always a reference);
- it is named as an entity: "named", "called", "the band", "the novel", "the film", 名为, 电影 ...,
  unless the prompt has a text carrier ("poster", "cover", "sign", "reads", "name", 海报, 封面, 写着 ...):
  `an album cover for the band "Neon Tides"` draws the name, `a photo of the band "Queen"` does not;
- it is one lowercase word used as scare quotes inside a phrase (`a very "modern" kitchen`,
  `a "healthy" breakfast`), not after a text cue (`the word "mom"`).
Each decision comes with a reason in words, for the gate's report. The cue lists are English, Chinese and a
few French/German/Spanish words; they are heuristics, measured in tests/test_gating.py on prompt sets in
tests/data/gating/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Each alternative is one quote style; the group holding the text is the first one that matched.
_QUOTE = re.compile(
    r'(?<![0-9½¼¾])"([^"]+)"'          # ASCII double quotes, not an inch mark (12")
    r"|“([^”]+)”"
    r"|„([^“”]+)[“”]"                  # German / Polish
    r"|«([^»]+)»|»([^«]+)«"            # French, and the German reversed guillemets
    r"|「([^」]+)」|『([^』]+)』|《([^》]+)》"
    r"|＂([^＂]+)＂"                    # full-width
    r"|‚([^\n‘]+?)‘(?!\w)"             # German single
    r"|‘([^\n]+?)’(?!\w)"
    r"|(?<![\w'])'(\S[^\n]*?)(?<=\S)'(?!\w)"  # ASCII single: never an apostrophe in a word or a foot mark
)
_SENTENCE_END = re.compile(r"(?<!\d)[.!?;](?=\s|$)|[。！？；\n]")
_NO_TEXT = re.compile(
    r"\b(?:no|without(?:\s+any)?)\s+(?:visible\s+|readable\s+)?"
    r"(?:text|words|writing|lettering|letters|typography|captions?)\b(?!\s+(?:except|other than|besides|but))"
    r"|\btext-?free\b|\btextless\b|无文字|没有文字|不含文字|不要文字|无任何文字",
    re.IGNORECASE)

# Right before the span (English) or just before/after it (Chinese): a work or style is meant.
_STRONG_BEFORE = re.compile(
    r"(?:\bin the (?:style|manner|spirit) of|\bstyle of|\binspired by(?: the \w+)?|\bbased on(?: the \w+)?"
    r"|\breminiscent of|\bà la|\ba la|\blike in|\bscenes? from|\bstills? from|\bcharacters? from"
    r"|\bcostume from|\bhomage to|\btribute to|\bparody of|\bfan art of|\bcosplay(?:ing)? (?:of|as)"
    r"|\bal estilo de|\bdans le style de|\bim stil von"
    r"|(?:\b(?:man|woman|girl|boy|child|kid|person|student|lady|reader|he|she|they|someone)\b[^.]{0,20})"
    r"\breading(?: the \w+)?"
    r"|灵感来自|受|改编自|致敬|仿照|模仿|读|看|阅读)\s*(?:the\s+)?$", re.IGNORECASE)
_STRONG_AFTER = re.compile(r"^\s*(?:风格|为灵感|启发|式的)")
_ENTITY_BEFORE = re.compile(
    r"(?:\b(?:named|called|nicknamed|known as|dubbed|nommée?|namens|llamad[oa])"
    r"|\b(?:band|group|singer|novel|book|film|movie|sitcom|show|series|song|album|painting|poem|play|opera"
    r"|ballet|musical|game|video game|board game|anime|manga|magazine|newspaper|character|brand|ship"
    r"|sculpture|symphony|franchise)"
    r"|名为|叫做?|电影|小说|歌曲|乐队|动画|游戏|名叫)\s*$", re.IGNORECASE)
_CARRIER = re.compile(
    r"\b(?:signs?|signage|signboard|signpost|billboard|poster|banner|flyer|placards?|cover|label(?:ed|led)?"
    r"|logo|titled?|headline|caption|text|words?|letters|lettering|typography|font|inscription|inscribed"
    r"|reads?|reading|says|saying|written|printed|engraved|embroidered|painted|stamped|spell(?:s|ed|ing)?"
    r"|marquee|t-shirt|shirt|mug|plaque|ticket|badge|sticker|neon|menu|tag|name)\b"
    r"|海报|封面|招牌|标牌|写着|写有|印着|印有|标题|文字|字样|标语|显示|广告牌|横幅|书名|片名", re.IGNORECASE)
_TEXT_CUE_BEFORE = re.compile(
    r"\b(?:word|words|reads?|reading|says|saying|spells?|spelling|titled|text|labeled|labelled|written|printed"
    r"|with)\s*$", re.IGNORECASE)
_SCARE_BEFORE = re.compile(
    r"(?:^|\b(?:a|an|the|this|that|its|their|his|her|our|my|your|some|so-called|very|so|quite|rather|too"
    r"|really|extremely|super|more|most))\s*$", re.IGNORECASE)
_INTENSIFIER = re.compile(r"\b(?:very|so|quite|rather|too|really|extremely|super|so-called)\s*$", re.IGNORECASE)
_CONTEXT = 40  # characters of the sentence before a span that its cues are looked for in


@dataclass(frozen=True)
class Span:
    """One quoted span: its text (stripped) and where the whole quotation, marks included, starts and ends."""

    text: str
    start: int
    end: int


def find_spans(prompt: str) -> list[Span]:
    """Every non-empty quoted span of `prompt`, in order."""
    spans = []
    for match in _QUOTE.finditer(prompt):
        text = next(g for g in match.groups() if g is not None).strip()
        if text:
            spans.append(Span(text, match.start(), match.end()))
    return spans


def quoted_spans(prompt: str) -> list[str]:
    """The quoted spans of `prompt`, in order, stripped; empty spans are dropped."""
    return [span.text for span in find_spans(prompt)]


def unquoted(prompt: str) -> str:
    """`prompt` with every quoted span replaced by a space (for keyword tests outside the quotes)."""
    return _QUOTE.sub(" ", prompt)


def drawn_text(prompt: str) -> tuple[list[str], list[str]]:
    """(spans that are text to draw, in order; reasons for the spans that are not, in words)."""
    spans = find_spans(prompt)
    if not spans:
        return [], []
    outside = _masked(prompt, spans)
    no_text = _NO_TEXT.search(outside)
    if no_text:
        return [], [f"the prompt asks for {no_text.group(0)!r}: quoted spans are not text to draw"]
    kept, reasons = [], []
    for span in spans:
        why = _not_drawn(outside, span)
        if why is None:
            kept.append(span.text)
        else:
            reasons.append(f"quote {span.text!r} is not text to draw: {why}")
    return kept, reasons


def _masked(prompt: str, spans: list[Span]) -> str:
    """`prompt` with each quotation replaced by as many `Q`s (keeps offsets; hides its words from the cues)."""
    chars = list(prompt)
    for span in spans:
        chars[span.start:span.end] = "Q" * (span.end - span.start)
    return "".join(chars)


def _not_drawn(outside: str, span: Span) -> str | None:
    """Why `span` is not text to draw, or None when it is; `outside` is the masked prompt."""
    # Cues are looked for in the same sentence, just before the span (and just after it, for Chinese).
    start = max((m.end() for m in _SENTENCE_END.finditer(outside, 0, span.start)), default=0)
    before = outside[max(start, span.start - _CONTEXT):span.start]
    after = outside[span.end:span.end + 8]
    strong = _STRONG_BEFORE.search(before) or _STRONG_AFTER.search(after)
    if strong:
        return f"a work or style is referenced ({strong.group(0).strip()!r})"
    entity = _ENTITY_BEFORE.search(before)
    if entity and not _CARRIER.search(outside):
        return f"it names something ({entity.group(0).strip()!r}) and nothing in the prompt carries text"
    if _is_scare_quote(span.text, before, after):
        return "a single lowercase word in scare quotes"
    return None


def _is_scare_quote(text: str, before: str, after: str) -> bool:
    """One lowercase word after a determiner or intensifier, inside a phrase (`a "smart" fridge`)."""
    if not re.fullmatch(r"[a-z]+(?:-[a-z]+)*", text) or _TEXT_CUE_BEFORE.search(before):
        return False
    if _INTENSIFIER.search(before):
        return True
    return bool(_SCARE_BEFORE.search(before)) and re.match(r"\s+[a-z]", after) is not None
