"""Chat rendering (open-instruct template and masking) and chat data built from documents."""
from __future__ import annotations

import gzip
import itertools

import pytest
from steps.adapt.chat import (
    CONTINUE_PROMPT,
    ChatFormatError,
    build_preference_pairs,
    build_sft_examples,
    paragraphs,
    read_preference_pairs,
    read_sft_examples,
    render_chat,
    render_prompt,
)
from steps.common.documents import write_jsonl_gz
from steps.train.objectives import IGNORE_INDEX

EOS = 50279
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Teal, a blue-green."},
    {"role": "user", "content": "And a number?"},
    {"role": "assistant", "content": "Forty-two\n\nor seven."},
]


def trained_spans(input_ids: list[int], labels: list[int]) -> list[list[int]]:
    """Maximal runs of positions whose label is not masked."""
    assert all(label in (IGNORE_INDEX, token) for token, label in zip(input_ids, labels))
    runs = itertools.groupby(zip(input_ids, labels), key=lambda pair: pair[1] != IGNORE_INDEX)
    return [[token for token, _ in run] for trained, run in runs if trained]


def test_render_trains_on_exactly_the_assistant_content_and_eos(tokenizer):
    input_ids, labels = render_chat(CONVERSATION, tokenizer, EOS, max_length=1000)
    assert len(input_ids) == len(labels)
    assert tokenizer.decode(input_ids, skip_special_tokens=False) == (
        "<|system|>\nYou are terse.\n<|user|>\nName a colour.\n<|assistant|>\nTeal, a blue-green.<|endoftext|>\n"
        "<|user|>\nAnd a number?\n<|assistant|>\nForty-two\n\nor seven.<|endoftext|>\n"
    )
    replies = [m["content"] for m in CONVERSATION if m["role"] == "assistant"]
    spans = trained_spans(input_ids, labels)
    assert [tokenizer.decode(span, skip_special_tokens=False) for span in spans] == [
        reply + "<|endoftext|>" for reply in replies
    ]
    assert spans == [tokenizer.encode(reply, add_special_tokens=False).ids + [EOS] for reply in replies]


def test_render_truncates_to_max_length(tokenizer):
    full_ids, full_labels = render_chat(CONVERSATION, tokenizer, EOS, max_length=1000)
    ids, labels = render_chat(CONVERSATION, tokenizer, EOS, max_length=20)
    assert (ids, labels) == (full_ids[:20], full_labels[:20])


def test_prompt_is_the_prefix_the_model_was_trained_to_continue(tokenizer):
    prompt = render_prompt(CONVERSATION[:4], tokenizer, EOS)
    input_ids, labels = render_chat(CONVERSATION, tokenizer, EOS, max_length=1000)
    assert input_ids[: len(prompt)] == prompt
    assert labels[len(prompt) - 1] == IGNORE_INDEX and labels[len(prompt)] != IGNORE_INDEX
    assert tokenizer.decode(prompt, skip_special_tokens=False).endswith("And a number?\n<|assistant|>\n")


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}], r"message 1 has role 'bot'"),
        ([{"role": "user", "content": "hi"}], "at least one assistant message"),
        ([{"role": "assistant", "text": "yo"}], r"exactly the keys 'role' and 'content'"),
        ([], "non-empty list"),
    ],
)
def test_bad_conversations_are_rejected(tokenizer, messages, message):
    with pytest.raises(ChatFormatError, match=message):
        render_chat(messages, tokenizer, EOS, max_length=100)


def test_paragraphs_are_non_blank_lines():
    assert paragraphs("  One.\nstill one.\n\n \nTwo.\n  \n\nThree.  ") == ["One.", "still one.", "Two.", "Three."]


def test_sft_examples_continue_the_first_paragraph(documents_dir, synthetic_documents):
    rows, counts = build_sft_examples(documents_dir, max_examples=5, seed=0)
    assert len(rows) == 5
    assert counts == {"documents": 16, "skipped_fewer_than_two_paragraphs": 4, "selected": 5, "not_selected": 7}
    docs = {f"synthetic/{d['id']}": paragraphs(d["text"]) for d in synthetic_documents(16)}
    for row in rows:
        user, assistant = row["messages"]
        assert user == {"role": "user", "content": CONTINUE_PROMPT + docs[row["id"]][0]}
        assert assistant == {"role": "assistant", "content": docs[row["id"]][1]}


def test_sft_selection_depends_on_seed_and_documents_only(
    tmp_path, documents_dir, synthetic_documents, write_documents
):
    resharded = tmp_path / "resharded"
    write_documents(resharded, synthetic_documents(16)[::-1], shards=3)
    rows = build_sft_examples(documents_dir, max_examples=5, seed=0)[0]
    assert build_sft_examples(resharded, max_examples=5, seed=0)[0] == rows
    assert [r["id"] for r in build_sft_examples(documents_dir, max_examples=5, seed=1)[0]] != [r["id"] for r in rows]


def test_too_short_paragraphs_are_counted(tmp_path, write_documents):
    write_documents(tmp_path / "docs", [
        {"id": "a", "text": "Tiny.\n\nAlso tiny.", "source": "s"},
        {"id": "b", "text": "A first paragraph long enough.\n\nA second paragraph long enough.", "source": "s"},
    ])
    rows, counts = build_sft_examples(tmp_path / "docs", max_examples=10, seed=0)
    assert [r["id"] for r in rows] == ["s/b"]
    assert counts["skipped_paragraph_too_short"] == 1 and counts["not_selected"] == 0


def test_preference_pairs_reject_another_documents_paragraph(documents_dir, tmp_path, synthetic_documents):
    rows, counts = build_preference_pairs(documents_dir, max_pairs=6, seed=0)
    assert len(rows) == 6 and counts["selected"] == 6
    second_paragraphs = {paragraphs(d["text"])[1] for d in synthetic_documents(16) if len(paragraphs(d["text"])) > 1}
    sft_rows = build_sft_examples(documents_dir, max_examples=6, seed=0)[0]
    for row, sft_row in zip(rows, sft_rows):
        assert row["prompt"] == sft_row["messages"][:1]
        assert row["chosen"] == sft_row["messages"][1:]
        assert row["rejected"][0]["content"] != row["chosen"][0]["content"]
        assert row["rejected"][0]["content"] in second_paragraphs
    write_jsonl_gz(tmp_path / "pairs.jsonl.gz", rows)
    assert read_preference_pairs(tmp_path / "pairs.jsonl.gz") == rows


def test_a_single_document_has_no_rejected_reply(tmp_path, write_documents):
    write_documents(tmp_path / "docs", [
        {"id": "b", "text": "A first paragraph long enough.\n\nA second paragraph long enough.", "source": "s"},
    ])
    rows, counts = build_preference_pairs(tmp_path / "docs", max_pairs=4, seed=0)
    assert rows == [] and counts["dropped_no_distinct_rejected"] == 1


def test_bad_rows_are_reported_with_file_and_line(tmp_path, documents_dir):
    rows = build_sft_examples(documents_dir, max_examples=2, seed=0)[0]
    path = tmp_path / "sft.jsonl.gz"
    write_jsonl_gz(path, rows)
    assert read_sft_examples(path) == rows
    with gzip.open(path, "at", encoding="utf-8") as handle:
        handle.write('{"id": "x", "messages": [{"role": "user", "content": "no reply"}]}\n')
    with pytest.raises(ChatFormatError, match=r"sft.jsonl.gz:3: field 'messages': expected at least one assistant"):
        read_sft_examples(path)
