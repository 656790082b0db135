"""LongText-Bench's text accuracy (hand-computed cases and values from X-Omni's own scorer) and the
order-aware edit-distance metric."""

import math

import pytest

from rewards.text_accuracy import edit_similarity, has_units, normalize_text, resolve_mode, text_accuracy, text_recall


def test_normalize_keeps_letters_digits_accents_and_cjk():
    assert normalize_text("  Hello,   WORLD!\n2026 -- ok?", "en") == "hello world 2026 ok"
    assert normalize_text("Café CRÈME à la Française", "en") == "café crème à la française"
    assert normalize_text("EVExpo2023.com", "en") == "evexpo2023com"
    assert normalize_text("ñandú ß", "en") == "and"  # outside the official accented set
    assert normalize_text("欢迎 光临！Beijing 2024", "zh") == "欢迎光临Beijing2024"  # case kept in "zh"
    assert normalize_text("欢迎 光临", "en") == "欢迎 光临"


def test_auto_mode_follows_the_targets():
    assert resolve_mode(["HELLO", "World"]) == "en"
    assert resolve_mode(["Sale", "半价"]) == "zh"
    assert resolve_mode(["半价"], "en") == "en"
    with pytest.raises(ValueError, match="mode"):
        resolve_mode(["x"], "fr")


def test_word_recall_counts_repeats_once_per_reading():
    assert text_recall(["the cat and the hat"], "THE cat, the bat") == (3, 5)  # the x2, cat
    assert text_recall(["the the the"], "the") == (1, 3)
    assert text_recall(["go"], "go go go") == (1, 1)  # extra reads of a word earn nothing
    assert text_recall(["HELLO WORLD", "2026"], "hello\nworld 2026") == (3, 3)
    assert text_accuracy(["Hello, World!"], "hello world") == 1.0
    assert text_accuracy(["HELLO WORLD"], "") == 0.0


def test_character_recall_for_chinese():
    assert text_recall(["春眠不觉晓"], "春眠不晓晓") == (4, 5)
    assert text_recall(["好好学习"], "好学习") == (3, 4)
    assert text_accuracy(["欢迎光临"], "") == 0.0


def test_no_words_to_find_is_nan():
    assert math.isnan(text_accuracy([], "anything"))
    assert math.isnan(text_accuracy(["", "  --!  "], "anything"))
    assert text_recall([], "x") == (0, 0)
    with pytest.raises(TypeError, match="single string"):
        text_recall("HELLO", "HELLO")


def test_several_readings_are_a_multiset_union():
    targets = ["NORTH SOUTH SOUTH"]
    assert text_recall(targets, ["north", "south"]) == (2, 3)
    assert text_recall(targets, ["north south", "south south"]) == (3, 3)  # max count, not sum
    assert text_recall(targets, ["south", "south"]) == (1, 3)


# Each case was run through X-Omni's textbench/summary_scores.py (its `--mode` given); the
# (match_word_count, gt_word_count) it wrote are the expected values.
OFFICIAL_CASES = [
    ("en", ["FRESH BREWS, EVERY MORNING, EVERY DAY", "Locally Roasted Since 1998", "CENTRAL PARK - 2 BLOCKS"],
     "FRESH BREWS EVERY MORNING\nLocally Roasted Since 1989\ncentral park 2 blocks", (11, 14)),
    ("en", ["Visit EVExpo2023.com for details", "Parking Ahead"],
     "Visit EVExpo2023.com for detalls Parking Ahead Ahead", (5, 6)),
    ("en", ["Café Crème à la française", "the the the"], "CAFÉ creme À LA FRANÇAISE the THE", (6, 8)),
    ("zh", ["欢迎光临", "北京烤鸭 Beijing 2024"], "欢迎光临北京烤鸭beijing 2O24", (17, 19)),
    ("zh", ["春眠不觉晓，处处闻啼鸟。"], "春眠不觉晓处处闻啼", (9, 10)),
]


@pytest.mark.parametrize("mode, targets, ocr, expected", OFFICIAL_CASES)
def test_matches_the_official_scorer(mode, targets, ocr, expected):
    assert text_recall(targets, ocr, mode) == expected
    assert text_recall(targets, ocr, "auto") == expected  # these targets pick the same mode


def test_edit_similarity_is_order_aware_and_exact_only_for_the_exact_spelling():
    assert edit_similarity(["OPEN"], "OPEN") == (4, 4)
    assert edit_similarity(["Open Cafe"], "OPEN\ncafe!") == (8, 8)      # spaces, case and punctuation ignored
    assert text_recall(["OPEN"], "NEPO", "zh") == (4, 4)                # recall cannot see the order ...
    assert edit_similarity(["OPEN"], "NEPO") == (0, 4)                  # ... the edit distance can
    assert edit_similarity(["STOP"], "TSOP") == (2, 4)                  # one swap: 2 edits
    assert edit_similarity(["OPEN"], "OPEN NOW") == (4, 7)              # extra text costs too: 3 edits of 7
    assert edit_similarity(["GO"], "something else entirely") == (1, 21)  # over the longer string: never < 0
    assert edit_similarity(["CAT"], "") == (0, 3)
    assert edit_similarity(["欢迎光临"], "欢迎光") == (3, 4)
    assert edit_similarity([], "x") == (0, 0) and edit_similarity(["★"], "x") == (0, 0)
    with pytest.raises(TypeError, match="single string"):
        edit_similarity("OPEN", "OPEN")


def test_has_units_matches_what_the_metric_counts():
    assert has_units("OPEN") and has_units("欢迎") and has_units("Café 2")
    assert not has_units("★★★ !!") and not has_units("ПРИВЕТ") and not has_units("こんにちは") and not has_units("")
