"""Gopher, C4 and code taggers on crafted texts."""
import pytest

from steps.corpus.code import CodeConfig, tag_code
from steps.corpus.config import ConfigError
from steps.corpus.filter import FilterConfig
from steps.corpus.quality import (
    GOPHER_RULES,
    C4Config,
    GopherConfig,
    c4_rewrite,
    gopher_attributes,
    tag_c4,
    tag_gopher,
)

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


def test_normal_english_passes_every_gopher_rule():
    tagging = tag_gopher(NORMAL_ENGLISH, GopherConfig())
    assert tagging.flagged == []
    assert tagging.attributes["word_count"] == [[0, len(NORMAL_ENGLISH), len(NORMAL_ENGLISH.split())]]


@pytest.mark.parametrize("rule", GOPHER_RULES)
def test_each_gopher_rule_triggers_on_crafted_text(rule):
    assert rule in tag_gopher(CRAFTED[rule], GopherConfig()).flagged


def test_gopher_attribute_values():
    values = gopher_attributes("a bb ccc dddd\n- x\n- y\nz\u2026\nz\u2026")
    assert values["word_count"] == 10
    assert values["median_word_length"] == 1.5
    assert values["fraction_bullet_lines"] == pytest.approx(2 / 5)
    assert values["fraction_ellipsis_lines"] == pytest.approx(2 / 5)
    assert values["fraction_duplicate_lines"] == pytest.approx(2 / 5)
    assert values["fraction_duplicate_line_chars"] == pytest.approx(4 / 23)  # "z…" twice, of 13 + 3 + 3 + 2 + 2
    assert values["symbol_to_word_ratio"] == pytest.approx(2 / 10)
    # "a b a b a b": the 2-gram "a b" occurs 3 times, 6 of the 6 characters
    assert gopher_attributes("a b a b a b")["top_2_gram_char_fraction"] == pytest.approx(1.0)
    # ten distinct words, then the first five again: the repeated 5-gram covers 10 of 15 words
    words = [f"w{i}" for i in range(10)]
    values = gopher_attributes(" ".join(words + words[:5]))
    assert values["dup_5_gram_char_fraction"] == pytest.approx(10 * 2 / 30)
    assert values["dup_6_gram_char_fraction"] == 0.0


def test_thresholds_override_dolma_defaults():
    config = FilterConfig.from_dict({"gopher": {"min_words": 500, "max_dup_5_gram_char_fraction": 0.9}}).gopher
    assert config.min_words == 500 and config.max_words == 100_000
    assert "gopher_min_words" in tag_gopher(NORMAL_ENGLISH, config).flagged
    repeated = CRAFTED["gopher_max_dup_5_gram_char_fraction"]
    assert "gopher_max_dup_5_gram_char_fraction" not in tag_gopher(repeated, config).flagged


def test_filter_config_rejects_unknown_and_bad_values():
    with pytest.raises(ConfigError, match=r"filter\.gopher.*'min_wrds'"):
        FilterConfig.from_dict({"gopher": {"min_wrds": 3}})
    with pytest.raises(ConfigError, match=r"filter: unknown key.*'toxicity'"):
        FilterConfig.from_dict({"toxicity": {}})
    with pytest.raises(ConfigError, match=r"filter\.c4\.remove_javascript: expected a bool"):
        FilterConfig.from_dict({"c4": {"remove_javascript": "yes"}})
    with pytest.raises(ConfigError, match=r"filter\.pii\.sources"):
        FilterConfig.from_dict({"pii": {"sources": "web"}})


def test_section_source_selectors():
    config = FilterConfig.from_dict({"pii": {"sources": ["web"]}, "c4": {"enabled": False}})
    assert config.taggers_for("web") == ["gopher", "pii"]
    assert config.taggers_for("python-code") == ["code"]
    assert FilterConfig().taggers_for("python-code") == ["code", "pii"]
    assert FilterConfig.from_dict({"code": {"sources": "*"}}).taggers_for("web") == ["code", "gopher", "c4", "pii"]


def test_c4_removes_lines_without_terminal_punctuation():
    text = 'A good line.\nmenu item without end\n\nIs it a question?\n"Quoted."\nHome | About'
    assert c4_rewrite(text) == 'A good line.\nIs it a question?\n"Quoted."'
    tagging = tag_c4(text, C4Config())
    assert tagging.flagged == []
    spans = tagging.attributes["lines_without_terminal_punctuation"]
    assert [text[s:e] for s, e, _ in spans] == ["menu item without end", "Home | About"]


def test_c4_document_with_no_punctuated_line_is_removed():
    assert tag_c4("Home\nAbout us\nContact", C4Config()).flagged == ["c4_no_terminal_punctuation"]


@pytest.mark.parametrize(
    "switch, rule, text",
    [
        ("remove_naughty_words", "c4_naughty_words", "This is shit."),
        ("remove_lorem_ipsum", "c4_lorem_ipsum", "Lorem ipsum dolor sit amet."),
        ("remove_javascript", "c4_javascript", "Please enable JavaScript to view this page."),
        ("remove_curly_brace", "c4_curly_brace", "The function body is { return 1; }."),
    ],
)
def test_c4_flags_remove_only_when_switched_on(switch, rule, text):
    assert tag_c4(text, C4Config()).flagged == []
    assert tag_c4(text, C4Config(**{switch: True})).flagged == [rule]
    assert tag_c4(NORMAL_ENGLISH, C4Config(**{switch: True})).flagged == []


def test_code_rules():
    config = CodeConfig()
    assert tag_code("def f():\n    return 1\n", config).flagged == []
    assert tag_code("x = '" + "a" * 1001 + "'\n", config).flagged == ["code_long_line"]
    assert tag_code("x = '" + "a" * 990 + "'\n", config).flagged == []
    assert tag_code("# Auto-generated by protoc. DO NOT EDIT.\nx = 1\n", config).flagged == ["code_autogenerated"]
    assert tag_code("\n" * 10 + "# do not edit this test\n", config).flagged == []  # beyond the header lines
    secret = "KEY = 'AKIAIOSFODNN7EXAMPLE'\n"
    tagging = tag_code(secret, config)
    assert tagging.flagged == ["code_secret"]
    assert [secret[s:e] for s, e, _ in tagging.attributes["secrets"]] == ["AKIAIOSFODNN7EXAMPLE"]
    assert tag_code("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n", config).flagged == ["code_secret"]
    assert tag_code("x" * 50, CodeConfig(max_line_length=40)).flagged == ["code_long_line"]
