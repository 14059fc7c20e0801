"""The C4 tagger and its rules: unpunctuated lines deleted, document flags behind switches."""
import pytest

from steps.corpus.c4 import C4Rules, C4Tagging, c4_edits, c4_flags, tag_c4
from steps.corpus.spans import apply_edits

PROSE = "The river town grew slowly over the years, and most families lived from fishing."
TERMINAL = (".", "?", "!", '"')


def c4_attributes(text, tagging=C4Tagging()):
    return tag_c4([text], tagging)[0]


def c4_filtered(text, rules=C4Rules()):
    """(flags, edited text) of ``text`` under ``rules``."""
    attributes = c4_attributes(text)
    return c4_flags(attributes, rules, text), apply_edits(text, c4_edits(attributes, rules, text))[0]


def punctuated_lines(text):
    return "\n".join(line for line in text.split("\n") if line.rstrip().endswith(TERMINAL))


def test_spans_cover_the_lines_without_terminal_punctuation_blank_ones_included():
    text = 'A good line.\nmenu item without end\n\nIs it a question?\n"Quoted."\nHome | About'
    spans = c4_attributes(text)["lines_without_terminal_punctuation"]
    assert [text[s:e] for s, e, _ in spans] == ["menu item without end", "", "Home | About"]
    assert all(value == 1.0 for _, _, value in spans)
    assert c4_filtered(text) == ([], 'A good line.\nIs it a question?\n"Quoted."')


@pytest.mark.parametrize(
    "text",
    [
        f"{PROSE}\nmenu\n{PROSE}",
        f"menu\nnav\n{PROSE}\nEnds with spaces.  \nWow!",
        f"{PROSE}\n\n\n{PROSE}\n",
        f"{PROSE}\nfooter",
        f"{PROSE}\nfooter one\nfooter two",  # a run of unpunctuated lines at the end
        f"{PROSE}\nlinks\n\n",
    ],
    ids=["middle", "leading-run", "blank-lines", "last-line", "trailing-run", "trailing-run-blank"],
)
def test_edited_text_is_the_punctuated_lines_joined(text):
    assert c4_filtered(text) == ([], punctuated_lines(text))


def test_one_deletion_per_unpunctuated_line():
    text = f"{PROSE}\nmenu\n\n{PROSE}\nfooter"
    attributes = c4_attributes(text)
    assert len(c4_edits(attributes, C4Rules(), text).deletions) == 3


def test_document_with_no_punctuated_line_is_removed():
    text = "Home\nAbout us\nContact"
    assert c4_filtered(text)[0] == ["c4_no_terminal_punctuation"]


def test_with_remove_lines_off_nothing_is_deleted_or_removed():
    text = "Home\nAbout us\nContact"
    rules = C4Rules(remove_lines=False)
    assert c4_filtered(text, rules) == ([], text)


@pytest.mark.parametrize(
    "flag, text",
    [
        ("naughty_words", "This is shit."),
        ("lorem_ipsum", "Lorem ipsum dolor sit amet."),
        ("javascript", "Please enable JavaScript to view this page."),
        ("curly_brace", "The function body is { return 1; }."),
    ],
)
def test_document_flags_remove_only_when_switched_on(flag, text):
    attributes = c4_attributes(text)
    assert attributes[f"has_{flag}"] == [[0, len(text), 1.0]]
    assert c4_attributes(PROSE)[f"has_{flag}"] == [[0, len(PROSE), 0.0]]
    switched_on = C4Rules(**{f"remove_{flag}": True})
    assert c4_flags(attributes, C4Rules(), text) == []
    assert c4_flags(attributes, switched_on, text) == [f"c4_{flag}"]
    assert c4_flags(c4_attributes(PROSE), switched_on, PROSE) == []


def test_naughty_words_match_whole_words_from_the_configured_list():
    assert c4_attributes("Scunthorpe is a town.")["has_naughty_words"][0][2] == 0.0
    custom = C4Tagging(naughty_words=("drat",))
    assert c4_attributes("Oh DRAT, again.", custom)["has_naughty_words"][0][2] == 1.0
    assert c4_attributes("This is shit.", custom)["has_naughty_words"][0][2] == 0.0
    assert c4_attributes("This is shit.", C4Tagging(naughty_words=()))["has_naughty_words"][0][2] == 0.0
