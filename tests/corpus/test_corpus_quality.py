"""The Gopher tagger and its rules on crafted texts."""
import pytest

from steps.corpus.quality import GOPHER_RULES, GopherRules, gopher_attributes, gopher_flags
from steps.corpus.taggers import FilterConfig, GopherTagging, tag_gopher

NORMAL_ENGLISH = (
    "The river town grew slowly over the years, and most of the families who settled there made their "
    "living from fishing and trade. Every spring the water rose with melting snow from the northern hills, "
    "so the houses were built on stone foundations well above the banks. Children learned to swim before "
    "they could read, and the old ferry carried farmers, merchants and travellers across to the market on "
    "the other side. In the evenings people gathered at the square to talk about the weather, the price of "
    "grain and the news that came with the boats. Nobody expected the railway to change much, but within a "
    "decade the station had become the busiest place in the valley.\n"
    "Some residents welcomed the noise and the new faces; others missed the quiet mornings by the water."
)

FILLER = " ".join(f"alpha{i} beta{i} gamma{i} delta{i}" for i in range(20))  # 80 distinct words, no stop words
REPEATED_TEN = "one two three four five six seven eight nine ten"

CRAFTED = {
    "gopher_min_words": "The cat sat on the mat and that was all.",
    "gopher_max_words": " ".join(f"w{i}" for i in range(100_001)) + " the and",
    "gopher_min_median_word_length": "a b c d e f g h i j " * 6 + "the and with that",
    "gopher_max_median_word_length": " ".join(f"extraordinarily{i}" for i in range(60)) + " the and",
    "gopher_max_symbol_to_word_ratio": " ".join(f"#tag{i} word{i}" for i in range(40)) + " the and",
    "gopher_min_fraction_words_with_alpha": " ".join(str(1000 + i) for i in range(60)) + " the and of to",
    "gopher_min_stop_words": FILLER,
    "gopher_max_fraction_bullet_lines": "\n".join(f"- item {i} of the list with words" for i in range(12)),
    "gopher_max_fraction_ellipsis_lines": "\n".join(f"and the story {i} goes on and on\u2026" for i in range(12)),
    "gopher_max_fraction_duplicate_lines": "\n".join(
        ["Click here to read the rest of the post."] * 4 + [f"Line {i} of the text is new." for i in range(6)]
    ),
    "gopher_max_fraction_duplicate_line_chars": "\n".join(
        ["x"] * 10 + ["This long line about the weather repeats with the same words again."] * 2
        + [f"Unique {i}, the and of." for i in range(12)]
    ),
    "gopher_max_top_2_gram_char_fraction": " ".join(["click here"] * 20 + [FILLER, "the and"]),
    "gopher_max_top_3_gram_char_fraction": " ".join(["to the store"] * 18 + [FILLER]),
    "gopher_max_top_4_gram_char_fraction": " ".join(["at the end of"] * 15 + [FILLER]),
    **{
        f"gopher_max_dup_{n}_gram_char_fraction": " ".join([REPEATED_TEN] * 4 + [FILLER, "the and"])
        for n in range(5, 11)
    },
}


def gopher_flagged(text, rules=GopherRules()):
    return gopher_flags(tag_gopher([text], GopherTagging())[0], rules, text)


def test_normal_english_passes_every_gopher_rule():
    attributes = tag_gopher([NORMAL_ENGLISH], GopherTagging())[0]
    assert gopher_flags(attributes, GopherRules(), NORMAL_ENGLISH) == []
    assert attributes["word_count"] == [[0, len(NORMAL_ENGLISH), len(NORMAL_ENGLISH.split())]]


@pytest.mark.parametrize("rule", GOPHER_RULES)
def test_each_gopher_rule_triggers_on_crafted_text(rule):
    assert rule in gopher_flagged(CRAFTED[rule])


def test_gopher_attribute_values():
    values = gopher_attributes("a bb ccc dddd\n- x\n- y\nz\u2026\nz\u2026")
    assert values["word_count"] == 10
    assert values["median_word_length"] == 1.5
    assert values["fraction_bullet_lines"] == pytest.approx(2 / 5)
    assert values["fraction_ellipsis_lines"] == pytest.approx(2 / 5)
    assert values["fraction_duplicate_lines"] == pytest.approx(2 / 5)
    assert values["fraction_duplicate_line_chars"] == pytest.approx(4 / 18)  # "z…" twice, of the words' 18
    assert values["symbol_to_word_ratio"] == pytest.approx(2 / 10)
    # "a b a b a b": the 2-gram "a b" occurs 3 times, 6 of the 6 characters
    assert gopher_attributes("a b a b a b")["top_2_gram_char_fraction"] == pytest.approx(1.0)
    # ten distinct words, then the first five again: the 5-gram w0..w4 occurs twice among 11 5-grams
    words = [f"w{i}" for i in range(10)]
    values = gopher_attributes(" ".join(words + words[:5]))
    assert values["dup_5_gram_char_fraction"] == pytest.approx(2 * 10 / (11 * 10))
    assert values["dup_6_gram_char_fraction"] == 0.0


# Where REFERENCE.md is silent, the definitions of Dolma's gopher_v1 tagger (benchmarks/RESULTS.md).

def test_blank_lines_are_lines_and_repeat():
    values = gopher_attributes("First paragraph here.\n\nSecond one.\n\nThird.")
    assert values["fraction_duplicate_lines"] == pytest.approx(2 / 5)
    assert values["fraction_duplicate_line_chars"] == 0.0


def test_stop_words_count_as_written():
    assert gopher_attributes("The THE the, the. to of with")["stop_word_count"] == 3


def test_ellipsis_and_bullet_lines_are_not_stripped():
    values = gopher_attributes("more...\nmore \u2026 \nmore\u2026\n - item\n-item")
    assert values["fraction_ellipsis_lines"] == pytest.approx(1 / 5)
    assert values["fraction_bullet_lines"] == pytest.approx(1 / 5)


def test_symbols_count_once_per_word():
    assert gopher_attributes("## #a b \u2026\u2026")["symbol_to_word_ratio"] == pytest.approx(3 / 4)


def test_numeric_characters_are_not_letters():
    assert gopher_attributes("\u00bd 1\u00bd x\u00b2 12 \u216b na\u00efve")["fraction_words_with_alpha"] == pytest.approx(2 / 6)


def test_most_common_ngram_when_none_repeats_is_the_first():
    values = gopher_attributes("abc de f gh")
    assert values["top_2_gram_char_fraction"] == pytest.approx(5 / 8)
    assert values["top_4_gram_char_fraction"] == pytest.approx(8 / 8)
    assert gopher_attributes("abc")["top_2_gram_char_fraction"] == 0.0


def test_thresholds_override_dolma_defaults():
    config = FilterConfig.from_dict({"gopher": {"min_words": 500, "max_dup_5_gram_char_fraction": 0.9}}).gopher
    assert config.min_words == 500 and config.max_words == 100_000
    assert "gopher_min_words" in gopher_flagged(NORMAL_ENGLISH, config)
    repeated = CRAFTED["gopher_max_dup_5_gram_char_fraction"]
    assert "gopher_max_dup_5_gram_char_fraction" not in gopher_flagged(repeated, config)

