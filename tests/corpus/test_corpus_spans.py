"""Attribute spans and the edits filters make from them."""
import pytest

from steps.corpus.spans import Edits, apply_edits, document_value, line_deletions, whole_document


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
    spans = line_deletions(text, [(start, start + len(line))])
    assert apply_edits(text, Edits(deletions=spans)) == (expected, 0)


@pytest.mark.parametrize("text, deleted", [
    ("Kept.\nfooter one\nfooter two", (1, 2)),  # a run of deleted lines at the end
    ("head\nKept.\n\nfoot\n", (0, 2, 3, 4)),
    ("a\nb\nc", (0, 1, 2)),
    ("Kept.\nx\nAlso kept.\ny", (1, 3)),
])
def test_deleting_lines_equals_joining_the_others(text, deleted):
    lines, starts = text.split("\n"), []
    for line in lines:
        starts.append(starts[-1] + len(lines[len(starts) - 1]) + 1 if starts else 0)
    spans = line_deletions(text, [(starts[i], starts[i] + len(lines[i])) for i in deleted])
    expected = "\n".join(line for i, line in enumerate(lines) if i not in deleted)
    assert apply_edits(text, Edits(deletions=spans))[0] == expected

