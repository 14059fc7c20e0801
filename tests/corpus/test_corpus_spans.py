"""Attribute spans and the edits filters make from them."""
import pytest

from steps.corpus.spans import Edits, apply_edits, document_value, line_deletion, whole_document


def test_whole_document_value_spans_the_text():
    attributes = {"word_count": whole_document("two words", 2)}
    assert attributes["word_count"] == [[0, 9, 2]]
    assert document_value(attributes, "word_count") == 2


def test_no_edits_return_the_text_unchanged():
    assert not Edits()
    assert apply_edits("Some text.\nMore.", Edits()) == ("Some text.\nMore.", 0)


def test_overlapping_and_touching_deletions_merge():
    text = "0123456789"
    edits = Edits(deletions=[(8, 9), (1, 4), (3, 6), (2, 3), (6, 7)])
    assert apply_edits(text, edits) == ("079", 0)


def test_replacements_apply_in_text_order_whatever_the_order_given():
    text = "mail a@b.io or c@d.io now"
    edits = Edits(replacements=[(15, 21, "[2]"), (5, 11, "[1]")])
    assert apply_edits(text, edits) == ("mail [1] or [2] now", 2)


def test_a_replacement_overlapping_a_deletion_is_dropped_and_not_counted():
    text = "keep drop-me@x.io keep b@c.io"
    edits = Edits(deletions=[(5, 17)], replacements=[(10, 17, "[mail]"), (23, 29, "[mail]")])
    assert apply_edits(text, edits) == ("keep  keep [mail]", 1)


def test_a_replacement_next_to_a_deletion_is_kept():
    text = "ab|cd"
    edits = Edits(deletions=[(0, 2)], replacements=[(2, 3, "/")])
    assert apply_edits(text, edits) == ("/cd", 1)


def test_edits_extend_and_truth():
    edits = Edits(deletions=[(0, 1)])
    edits.extend(Edits(replacements=[(2, 3, "x")]))
    assert edits == Edits(deletions=[(0, 1)], replacements=[(2, 3, "x")])
    assert edits and Edits(replacements=[(0, 1, "")])


@pytest.mark.parametrize(
    "text, line, expected",
    [
        ("First.\nmiddle\nLast.", "middle", "First.\nLast."),  # a line takes its own newline
        ("first\nSecond.", "first", "Second."),
        ("First.\nlast", "last", "First."),  # a last line takes the newline before it
        ("only", "only", ""),
        ("First.\n", "", "First."),  # the empty line after a trailing newline
    ],
)
def test_line_deletion_leaves_the_text_as_if_the_line_never_was(text, line, expected):
    start = text.rindex(line) if line else len(text)
    span = line_deletion(text, start, start + len(line))
    assert apply_edits(text, Edits(deletions=[span])) == (expected, 0)

