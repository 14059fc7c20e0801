"""Instruction and preference data in open-instruct's formats: files, URLs, both preference forms, bad rows
counted by reason with file:line, hard errors, encoding drops, and the content fingerprint."""
from __future__ import annotations

import gzip
import json

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steps.adapt.chat import render_chat
from steps.adapt.dpo import encode_preference_pairs
from steps.adapt.instruct_data import (
    FileSource,
    HubSource,
    InstructDataError,
    instruct_data_fingerprint,
    instruct_sources,
    read_preference_rows,
    read_sft_rows,
)
from steps.adapt.sft import encode_sft_examples
from steps.adapt.templates import chat_template

EOS = 50279


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


SFT_ROWS = [
    {"id": "a", "messages": [user("Name a colour."), assistant("Teal.")], "source": "tulu"},
    {"messages": [{"role": "system", "content": "Be brief."}, user("Hi"), assistant("Hello."), user("Bye"),
                  assistant("Bye.")]},
    {"id": 7, "messages": [user("Count."), assistant("One, two.")]},
]


def write_jsonl(path, rows, opener=open) -> None:
    with opener(path, "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write((row if isinstance(row, str) else json.dumps(row)) + "\n")


def check_identity(report) -> None:
    counts = report.counts()
    assert counts["rows_read"] == counts["kept"] + sum(v for k, v in counts.items() if k.startswith("dropped_"))


def expected_sft(where_file: str) -> list[dict]:
    return [
        {"id": "a", "messages": SFT_ROWS[0]["messages"], "where": f"{where_file}:1"},
        {"id": f"{where_file}:2", "messages": SFT_ROWS[1]["messages"], "where": f"{where_file}:2"},
        {"id": "7", "messages": SFT_ROWS[2]["messages"], "where": f"{where_file}:3"},
    ]


# ---------------------------------------------------------------- formats


def test_sft_rows_from_jsonl_keep_messages_and_derive_missing_ids(tmp_path):
    path = tmp_path / "sft.jsonl"
    write_jsonl(path, SFT_ROWS)
    rows, report = read_sft_rows(str(path))
    assert rows == expected_sft(str(path))
    assert report.counts() == {"rows_read": 3, "kept": 3}


def test_sft_rows_from_jsonl_gz_skip_blank_lines(tmp_path):
    path = tmp_path / "sft.jsonl.gz"
    write_jsonl(path, [json.dumps(SFT_ROWS[0]), "", json.dumps(SFT_ROWS[1]), "   ", json.dumps(SFT_ROWS[2])],
                opener=gzip.open)
    rows, report = read_sft_rows(path)
    assert [row["where"] for row in rows] == [f"{path}:1", f"{path}:3", f"{path}:5"]
    assert report.counts() == {"rows_read": 3, "kept": 3}


def test_sft_rows_from_parquet_ignore_null_message_keys(tmp_path):
    path = tmp_path / "sft.parquet"
    rows = [dict(row, id=str(row.get("id", f"r{i}"))) for i, row in enumerate(SFT_ROWS)]
    for row in rows:  # parquet gives every message the union of keys; unused ones are null
        row["messages"] = [dict(m, function_calls=None) for m in row["messages"]]
        row.setdefault("source", None)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=2)
    read, report = read_sft_rows(path)
    assert [row["id"] for row in read] == ["a", "r1", "7"]
    assert [row["messages"] for row in read] == [row["messages"] for row in SFT_ROWS]
    assert [row["where"] for row in read] == [f"{path}:{n}" for n in (1, 2, 3)]
    assert report.counts() == {"rows_read": 3, "kept": 3}


def test_sft_rows_from_an_fsspec_url_and_a_directory():
    url = "memory://instruct-test/sft/part-0.jsonl"
    with fsspec.open(url, "wt") as handle:
        handle.write("".join(json.dumps(row) + "\n" for row in SFT_ROWS))
    with fsspec.open("memory://instruct-test/sft/part-1.jsonl.gz", "wt", compression="gzip") as handle:
        handle.write(json.dumps(SFT_ROWS[0]) + "\n")
    rows, report = read_sft_rows(url)
    assert rows == expected_sft(url)
    assert instruct_sources("memory://instruct-test/sft/") == [
        FileSource(url), FileSource("memory://instruct-test/sft/part-1.jsonl.gz")]
    rows, report = read_sft_rows(["memory://instruct-test/sft", url])
    assert len(rows) == 3 + 1 + 3 and report.counts() == {"rows_read": 7, "kept": 7}
    fsspec.filesystem("memory").rm("/instruct-test", recursive=True)


def test_sources_tell_files_directories_and_hub_names_apart(tmp_path):
    assert instruct_sources("allenai/tulu-3-sft-mixture") == [HubSource("allenai/tulu-3-sft-mixture")]
    assert instruct_sources({"hub": "org/prefs", "split": "test", "revision": "abc"}) == [
        HubSource("org/prefs", "test", "abc")]
    with pytest.raises(InstructDataError, match="no such file or directory"):
        instruct_sources(str(tmp_path / "missing"))
    (tmp_path / "data.json").write_text("[]")
    with pytest.raises(InstructDataError, match=r"data.json: expected a .jsonl, .jsonl.gz, .parquet file"):
        instruct_sources(str(tmp_path / "data.json"))
    with pytest.raises(InstructDataError, match="a directory with no"):
        instruct_sources(str(tmp_path))
    with pytest.raises(InstructDataError, match="a dict source is"):
        instruct_sources({"name": "org/prefs"})


# ---------------------------------------------------------------- preference forms


PROMPT = [{"role": "system", "content": "Be brief."}, user("Name a colour.")]


def test_open_instruct_and_trl_preference_forms_normalise_alike(tmp_path):
    path = tmp_path / "prefs.jsonl"
    write_jsonl(path, [
        # open-instruct: full conversations sharing the prompt
        {"id": "oi", "chosen": PROMPT + [assistant("Teal.")], "rejected": PROMPT + [assistant("Number 4.")]},
        # TRL explicit prompt, as messages
        {"id": "trl", "prompt": PROMPT, "chosen": [assistant("Teal.")], "rejected": [assistant("Number 4.")]},
        # TRL explicit prompt, as strings
        {"id": "str", "prompt": "Name a colour.", "chosen": "Teal.", "rejected": "Number 4."},
        # UltraFeedback-style: a prompt string next to full conversations; the conversations win
        {"prompt": "Name a colour.", "chosen": [user("Name a colour."), assistant("Teal.")],
         "rejected": [user("Name a colour."), assistant("Number 4.")], "score_chosen": 9.0},
    ])
    rows, report = read_preference_rows(path)
    replies = {"chosen": [assistant("Teal.")], "rejected": [assistant("Number 4.")]}
    assert rows == [
        {"id": "oi", "prompt": PROMPT, **replies, "where": f"{path}:1"},
        {"id": "trl", "prompt": PROMPT, **replies, "where": f"{path}:2"},
        {"id": "str", "prompt": [user("Name a colour.")], **replies, "where": f"{path}:3"},
        {"id": f"{path}:4", "prompt": [user("Name a colour.")], **replies, "where": f"{path}:4"},
    ]
    assert report.counts() == {"rows_read": 4, "kept": 4}


def test_preference_rows_plug_into_encode_preference_pairs(tmp_path, tokenizer):
    path = tmp_path / "prefs.jsonl"
    write_jsonl(path, [{"chosen": PROMPT + [assistant("Teal.")], "rejected": PROMPT + [assistant("Four.")]}])
    rows, _ = read_preference_rows(path)
    pairs, counts = encode_preference_pairs(rows, tokenizer, EOS, max_length=64)
    assert counts == {"pairs": 1, "encoded": 1}
    assert pairs[0].chosen == render_chat(PROMPT + [assistant("Teal.")], tokenizer, EOS, 64)


# ---------------------------------------------------------------- bad rows


def test_bad_sft_rows_are_counted_by_reason_with_file_and_line(tmp_path):
    path = tmp_path / "sft.jsonl"
    good = SFT_ROWS[0]
    write_jsonl(path, [
        good,                                                                          # 1
        {"id": "x", "messages": [user("hi"), {"role": "bot", "content": "yo"}]},       # 2 unknown role
        {"id": "x", "messages": [user("hi")]},                                         # 3 no assistant
        {"id": "x", "messages": [user("hi"), {"role": "assistant", "content": None}]},  # 4 non-string content
        {"id": "x", "messages": [user("hi"), {"role": "assistant", "text": "yo"}]},    # 5 bad message
        {"id": "x", "messages": [user("hi"), dict(assistant(""), function_calls="f()")]},  # 6 extra field set
        {"id": "x", "conversation": []},                                               # 7 no messages
        {"id": ["x"], "messages": good["messages"]},                                   # 8 bad id
        {"id": "x", "messages": [user("hi"), {"role": "bot", "content": "again"}]},    # 9 unknown role again
        good,                                                                          # 10
    ])
    rows, report = read_sft_rows(path, examples_per_reason=1)
    assert [row["where"] for row in rows] == [f"{path}:1", f"{path}:10"]
    assert report.counts() == {
        "rows_read": 10, "kept": 2, "dropped_bad_id": 1, "dropped_bad_message": 1, "dropped_missing_messages": 1,
        "dropped_no_assistant_turn": 1, "dropped_non_string_content": 1, "dropped_unknown_role": 2,
        "dropped_unsupported_message_field": 1,
    }
    check_identity(report)
    examples = report.as_dict()["drop_examples"]
    assert examples["unknown_role"] == [f"{path}:2: messages: message 1 has role 'bot'; "
                                        "expected one of ('system', 'user', 'assistant')"]  # first one only
    assert examples["no_assistant_turn"] == [f"{path}:3: messages: no assistant message"]
    assert examples["non_string_content"] == [f"{path}:4: messages: message 1 content is NoneType, not a string"]
    assert examples["bad_message"][0].startswith(f"{path}:5: ")
    assert examples["unsupported_message_field"] == [f"{path}:6: messages: message 1 has ['function_calls'] set"]
    assert examples["missing_messages"][0].startswith(f"{path}:7: ")
    assert examples["bad_id"][0].startswith(f"{path}:8: ")


def test_bad_preference_rows_are_counted_by_reason_with_file_and_line(tmp_path):
    path = tmp_path / "prefs.jsonl.gz"
    good = {"chosen": PROMPT + [assistant("Teal.")], "rejected": PROMPT + [assistant("Four.")]}
    write_jsonl(path, [
        good,                                                                                          # 1
        {"chosen": PROMPT + [assistant("Teal.")], "rejected": [user("Other?"), assistant("Four.")]},   # 2 differ
        {"chosen": PROMPT + [assistant("Teal.")], "rejected": PROMPT},                                 # 3 last not asst
        {"chosen": [assistant("Teal.")], "rejected": [assistant("Four.")]},                            # 4 no prompt key
        {"prompt": [], "chosen": "Teal.", "rejected": "Four."},                                        # 5 empty prompt
        {"prompt": "Hi", "chosen": "Teal."},                                                           # 6 no rejected
        {"prompt": [{"role": "robot", "content": "Hi"}], "chosen": "Teal.", "rejected": "Four."},      # 7 role
        {"prompt": "Hi", "chosen": [assistant("Teal.")], "rejected": [{"role": "assistant", "content": 4}]},  # 8
    ], opener=gzip.open)
    rows, report = read_preference_rows(path)
    assert [row["where"] for row in rows] == [f"{path}:1"]
    assert report.counts() == {
        "rows_read": 8, "kept": 1, "dropped_missing_field": 2, "dropped_no_assistant_turn": 1,
        "dropped_no_prompt": 1, "dropped_non_string_content": 1, "dropped_prompts_differ": 1,
        "dropped_unknown_role": 1,
    }
    check_identity(report)
    examples = report.as_dict()["drop_examples"]
    assert examples["prompts_differ"] == [f"{path}:2: chosen[:-1] and rejected[:-1] differ: not one prompt"]
    assert examples["no_assistant_turn"] == [f"{path}:3: rejected: the last message is 'user', not assistant"]
    assert [e.split(": ")[0] for e in examples["missing_field"]] == [f"{path}:4", f"{path}:6"]
    assert examples["no_prompt"] == [f"{path}:5: prompt: an empty list"]
    assert examples["unknown_role"][0].startswith(f"{path}:7: prompt: message 0 has role 'robot'")
    assert examples["non_string_content"][0].startswith(f"{path}:8: rejected: message 0 content is int")


def test_over_long_rows_are_dropped_at_encoding_with_file_and_line(tmp_path, tokenizer):
    path = tmp_path / "sft.jsonl"
    long_prompt = "word " * 50
    write_jsonl(path, [SFT_ROWS[0], {"id": "long", "messages": [user(long_prompt), assistant("Yes.")]}])
    rows, report = read_sft_rows(path)
    examples, counts = encode_sft_examples(rows, tokenizer, EOS, max_length=30, report=report)
    assert len(examples) == 1 and counts == {
        "examples": 2, "encoded": 1, "dropped_no_assistant_tokens_within_max_length": 1}
    assert report.counts() == {"rows_read": 2, "kept": 1, "dropped_no_assistant_tokens_within_max_length": 1}
    assert report.examples["no_assistant_tokens_within_max_length"] == [
        f"{path}:2: no assistant token within 30 tokens"]
    check_identity(report)

    prefs = tmp_path / "prefs.jsonl"
    write_jsonl(prefs, [{"prompt": "Hi", "chosen": "Yes.", "rejected": "No."},
                        {"prompt": long_prompt, "chosen": "Yes.", "rejected": "No."}])
    rows, report = read_preference_rows(prefs)
    pairs, counts = encode_preference_pairs(rows, tokenizer, EOS, max_length=30, report=report)
    assert len(pairs) == 1 and counts == {"pairs": 2, "encoded": 1, "dropped_no_response_tokens_within_max_length": 1}
    assert report.as_dict() == {
        "rows_read": 2, "kept": 1, "dropped_no_response_tokens_within_max_length": 1,
        "drop_examples": {"no_response_tokens_within_max_length": [f"{prefs}:2: no reply token within 30 tokens"]},
    }


def test_rows_whose_template_spans_cannot_be_derived_are_dropped_and_counted(tmp_path, tokenizer):
    last_turn_eos = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                     "{% if m['role'] == 'assistant' and loop.last %}{{ eos_token }}{% else %}<|im_end|>\n{% endif %}"
                     "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    path = tmp_path / "sft.jsonl"
    write_jsonl(path, SFT_ROWS)  # the second row has two replies
    rows, report = read_sft_rows(path)
    template = chat_template({"name": "jinja", "template": last_turn_eos})
    examples, counts = encode_sft_examples(rows, tokenizer, EOS, 100, template=template, report=report)
    assert counts == {"examples": 3, "encoded": 2, "dropped_template_spans_not_derivable": 1}
    assert report.counts() == {"rows_read": 3, "kept": 2, "dropped_template_spans_not_derivable": 1}
    assert report.examples["template_spans_not_derivable"][0].startswith(f"{path}:2: chat template: messages[:3]")
    check_identity(report)


# ---------------------------------------------------------------- hard errors


def test_malformed_json_is_a_hard_error_naming_file_and_line(tmp_path):
    path = tmp_path / "sft.jsonl"
    write_jsonl(path, [SFT_ROWS[0], '{"messages": [', SFT_ROWS[1]])
    with pytest.raises(InstructDataError, match=rf"{path}:2: malformed JSON \(Expecting value, column 15\)"):
        read_sft_rows(path)
    write_jsonl(path, [SFT_ROWS[0], "[1, 2]"])
    with pytest.raises(InstructDataError, match=rf"{path}:2: expected a JSON object, got list"):
        read_sft_rows(path)
    path.write_bytes(json.dumps(SFT_ROWS[0]).encode() + b"\n\xff\xfe\n")
    with pytest.raises(InstructDataError, match=rf"{path}:2: not UTF-8"):
        read_sft_rows(path)


def test_a_file_with_no_usable_row_is_a_hard_error(tmp_path):
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    write_jsonl(good, SFT_ROWS)
    write_jsonl(bad, [{"messages": [user("hi")]}, {"messages": [user("no reply either")]}])
    with pytest.raises(InstructDataError, match=rf"{bad}: no usable rows \(2 rows read, 0 kept; dropped: "
                                                rf"no_assistant_turn 2 \(e.g. {bad}:1: messages: no assistant"):
        read_sft_rows([str(good), str(bad)])
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InstructDataError, match=r"empty.jsonl: no usable rows \(0 rows read"):
        read_sft_rows(tmp_path / "empty.jsonl")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(InstructDataError, match=r"broken.parquet: not a readable parquet file"):
        read_sft_rows(tmp_path / "broken.parquet")


# ---------------------------------------------------------------- fingerprint


def test_fingerprint_hashes_file_bytes_not_names(tmp_path):
    first, copy, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz", tmp_path / "c.jsonl"
    write_jsonl(first, SFT_ROWS)
    with gzip.open(copy, "wb") as handle:  # same rows, other bytes
        handle.write(first.read_bytes())
    (tmp_path / "same").mkdir()
    (tmp_path / "same" / "x.jsonl").write_bytes(first.read_bytes())
    write_jsonl(other, SFT_ROWS[:2])
    fingerprint = instruct_data_fingerprint(str(first))
    assert len(fingerprint) == 64
    assert instruct_data_fingerprint(str(tmp_path / "same" / "x.jsonl")) == fingerprint
    assert instruct_data_fingerprint(str(tmp_path / "same")) == fingerprint
    assert len({fingerprint, instruct_data_fingerprint(str(copy)), instruct_data_fingerprint(str(other)),
                instruct_data_fingerprint([str(first), str(other)]),
                instruct_data_fingerprint([str(other), str(first)])}) == 5


def test_fingerprint_of_a_hub_source_is_its_name_split_and_revision():
    fingerprints = {instruct_data_fingerprint(spec) for spec in (
        "org/data", {"hub": "org/data", "split": "train"}, {"hub": "org/data", "split": "test"},
        {"hub": "org/data", "revision": "abc"})}
    assert len(fingerprints) == 3  # the first two are the same source


def test_a_hub_source_reads_through_load_dataset(monkeypatch):
    """Offline: ``datasets.load_dataset`` stubbed; the rows are named name[split]:row, its failures name the source."""
    import datasets

    calls = []

    def load_dataset(name, split, revision):
        calls.append((name, split, revision))
        if name == "org/missing":
            raise FileNotFoundError("Couldn't reach the hub")
        return [SFT_ROWS[0], {"messages": [user("hi")]}]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    rows, report = read_sft_rows({"hub": "org/sft", "split": "test", "revision": "v1"})
    assert calls == [("org/sft", "test", "v1")]
    assert [(row["id"], row["where"]) for row in rows] == [("a", "org/sft[test]:1")]
    assert report.as_dict()["drop_examples"] == {
        "no_assistant_turn": ["org/sft[test]:2: messages: no assistant message"]}
    with pytest.raises(InstructDataError, match=r"org/missing\[train\]: not a local file or directory, and the "
                                                r"datasets hub could not load it \(FileNotFoundError"):
        read_sft_rows("org/missing")
