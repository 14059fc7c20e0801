"""Instruction and preference data in open-instruct's formats, from files, URLs or the datasets hub.

Sources (``instruct_sources``): a path or fsspec URL of a ``.jsonl``, ``.jsonl.gz`` or ``.parquet`` file, a
directory of such files (sorted by name), a datasets-hub name (``org/name``; read with
``datasets.load_dataset(name, split=...)``), a ``{"hub": name, "split": ..., "revision": ...}`` spec, or a list
of these. A row is named in reports as ``file:line`` (jsonl), ``file:row`` (parquet, 1-based row number) or
``name[split]:row`` (hub, 1-based).

SFT rows (Tulu): ``{"messages": [{"role", "content"}, ...]}``; other keys (``source``, ...) are allowed and
left out. ``id`` is optional: a row without one gets ``file:line``.

Preference rows, either form:

* open-instruct's: ``{"chosen": [messages], "rejected": [messages]}``, two full conversations that share a
  prompt (``chosen[:-1] == rejected[:-1]``) and end with an assistant message;
* TRL's explicit prompt: ``{"prompt": [messages] | str, "chosen": [messages] | str, "rejected": ...}``, where a
  string prompt is one user message and a string reply one assistant message. A row whose ``chosen`` is a list
  with a non-assistant message is taken as open-instruct's form (its ``prompt`` field, if any, is not used:
  UltraFeedback-style rows carry both).

Both become ``{"id", "prompt", "chosen", "rejected", "where"}`` with lists of ``{"role", "content"}`` messages,
``chosen``/``rejected`` being the reply only: the rows ``dpo.encode_preference_pairs`` takes. SFT rows become
``{"id", "messages", "where"}``. Message keys other than role and content must be null (parquet files give every
message the union of the keys): a message with, say, ``function_calls`` set is dropped, not trained on without
its calls.

Errors. A file that cannot be parsed (a line that is not a JSON object, bytes that are not UTF-8, a parquet
file that pyarrow cannot read) and a file with no usable row are hard errors naming the file (and line). A row
of the wrong shape is dropped and counted under its reason in the ``RowReport``, whose first few examples per
reason read ``file:line: detail``; rows_read = kept + the sum of the dropped counts, always. Reasons:

``missing_messages``, ``missing_field``, ``bad_id``, ``bad_message``, ``unsupported_message_field``,
``unknown_role``, ``non_string_content``, ``no_assistant_turn``, ``no_prompt``, ``prompts_differ``, and, when
rows are encoded (``sft.encode_sft_examples(report=...)``, ``dpo.encode_preference_pairs(report=...)``):
``no_assistant_tokens_within_max_length``, ``no_response_tokens_within_max_length``,
``template_spans_not_derivable``, ``template_error``.

``instruct_data_fingerprint`` hashes the files' bytes; a hub source hashes (name, split, revision), so only a
pinned revision makes it content-addressed.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import fsspec


from .templates import ROLES, Message

FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
EXAMPLES_PER_REASON = 5


class InstructDataError(ValueError):
    """A source that cannot be read, or that has no usable row."""


# ---------------------------------------------------------------- counting and reporting drops


@dataclass
class RowReport:
    """Rows read, kept and dropped by reason, with the first ``examples_per_reason`` drops of each reason."""

    examples_per_reason: int = EXAMPLES_PER_REASON
    rows_read: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def drop(self, reason: str, where: str, detail: str, *, was_kept: bool = False) -> None:
        """Count a dropped row; ``was_kept`` for a row counted as kept by an earlier stage (encoding)."""
        if was_kept:
            self.kept -= 1
        self.dropped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < self.examples_per_reason:
            shown.append(f"{where}: {detail}")

    def counts(self) -> dict[str, int]:
        """``{"rows_read", "kept", "dropped_<reason>": n}``."""
        return {"rows_read": self.rows_read, "kept": self.kept,
                **{f"dropped_{reason}": n for reason, n in sorted(self.dropped.items())}}

    def as_dict(self) -> dict[str, Any]:
        """The counts and ``drop_examples`` ({reason: ["file:line: detail", ...]}), for an artifact's metadata."""
        examples = {reason: list(shown) for reason, shown in sorted(self.examples.items())}
        return {**self.counts(), "drop_examples": examples}

    def summary(self) -> str:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(self.dropped.items())) or "none"
        first = "; ".join(shown[0] for shown in self.examples.values() if shown)
        example = f" (e.g. {first})" if first else ""
        return f"{self.rows_read} rows read, {self.kept} kept; dropped: {reasons}{example}"


class RowProblem(Exception):
    """A bad row: ``reason`` (a drop-count name) and ``detail``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


# ---------------------------------------------------------------- sources


@dataclass(frozen=True)
class FileSource:
    url: str


@dataclass(frozen=True)
class HubSource:
    name: str
    split: str = "train"
    revision: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name}[{self.split}]"


Source = FileSource | HubSource


def _is_data_file(url: str) -> bool:
    return url.endswith(FILE_SUFFIXES)


def instruct_sources(spec: Any) -> list[Source]:
    """The sources of ``spec`` (see the module's docstring), directories expanded to their data files."""
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise InstructDataError("instruction data: expected at least one source, got an empty list")
        return [source for item in spec for source in instruct_sources(item)]
    if isinstance(spec, dict):
        unknown = set(spec) - {"hub", "split", "revision"}
        if "hub" not in spec or unknown:
            raise InstructDataError(
                f"instruction data: a dict source is {{'hub': name, 'split': ..., 'revision': ...}}, got {spec!r:.120}")
        return [HubSource(str(spec["hub"]), str(spec.get("split", "train")), spec.get("revision"))]
    if isinstance(spec, (HubSource, FileSource)):
        return [spec]
    if not isinstance(spec, (str, Path)) or not str(spec):
        raise InstructDataError(f"instruction data: expected a path, URL or dataset name, got {spec!r:.120}")
    url = str(spec)
    if _is_data_file(url):
        return [FileSource(url)]
    fs, path = fsspec.core.url_to_fs(url)
    if fs.isdir(path):
        found = sorted(p for p in fs.find(path) if _is_data_file(p))
        if not found:
            raise InstructDataError(f"{url}: a directory with no {', '.join(FILE_SUFFIXES)} files")
        root = path.rstrip("/")  # name each file as the spec names the directory: url + its relative path
        return [FileSource(url.rstrip("/") + p[len(root):] if p.startswith(root + "/") else fs.unstrip_protocol(p))
                for p in found]
    if fs.exists(path):
        raise InstructDataError(f"{url}: expected a {', '.join(FILE_SUFFIXES)} file")
    if "://" in url or url.startswith((".", "/", "~")) or not HUB_NAME.match(url):
        raise InstructDataError(f"{url}: no such file or directory")
    return [HubSource(url)]


def _jsonl_rows(url: str) -> Iterator[tuple[str, Any]]:
    with fsspec.open(url, "rb", compression="infer") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{url}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InstructDataError(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                raise InstructDataError(f"{where}: malformed JSON ({exc.msg}, column {exc.colno})") from None
            if not isinstance(row, dict):
                raise InstructDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
            yield where, row


def _parquet_rows(url: str) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    with fsspec.open(url, "rb") as handle:
        try:
            parquet = pq.ParquetFile(handle)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a file it cannot read
            raise InstructDataError(f"{url}: not a readable parquet file ({exc})") from None
        number = 0
        for batch in parquet.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                number += 1
                yield f"{url}:{number}", row


def _hub_rows(source: HubSource) -> Iterator[tuple[str, Any]]:
    import datasets

    try:
        dataset = datasets.load_dataset(source.name, split=source.split, revision=source.revision)
    except Exception as exc:  # offline, unknown name, no such split: say which source it was
        raise InstructDataError(f"{source.label}: not a local file or directory, and the datasets hub could not "
                                f"load it ({type(exc).__name__}: {exc})") from None
    for number, row in enumerate(dataset, start=1):
        yield f"{source.label}:{number}", row


def raw_rows(source: Source) -> Iterator[tuple[str, Any]]:
    """``(where, row)`` of each row of one source."""
    if isinstance(source, HubSource):
        return _hub_rows(source)
    if source.url.endswith(".parquet"):
        return _parquet_rows(source.url)
    return _jsonl_rows(source.url)


# ---------------------------------------------------------------- row shapes


def _messages(value: Any, what: str) -> list[Message]:
    """``value`` as a list of {role, content} messages (null extra keys left out), or a RowProblem."""
    if not isinstance(value, list) or not value:
        raise RowProblem("missing_field", f"{what}: expected a non-empty list of messages, got {value!r:.60}")
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise RowProblem("bad_message", f"{what}: message {index} must be an object with 'role' and 'content'")
        extra = sorted(key for key, item in message.items() if key not in ("role", "content") and item is not None)
        if extra:
            raise RowProblem("unsupported_message_field", f"{what}: message {index} has {extra} set")
        if message["role"] not in ROLES:
            raise RowProblem("unknown_role",
                             f"{what}: message {index} has role {message['role']!r:.40}; expected one of {ROLES}")
        if not isinstance(message["content"], str):
            raise RowProblem("non_string_content",
                             f"{what}: message {index} content is {type(message['content']).__name__}, not a string")
        messages.append({"role": message["role"], "content": message["content"]})
    return messages


def _row_id(row: dict[str, Any], where: str) -> str:
    value = row.get("id")
    if value is None:
        return where
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RowProblem("bad_id", f"'id' must be a string or an integer, got {value!r:.40}")
    return str(value)


def sft_row(row: dict[str, Any], where: str) -> dict[str, Any]:
    """``{"id", "messages", "where"}`` of an SFT row, or a RowProblem."""
    if not isinstance(row.get("messages"), list) or not row["messages"]:
        raise RowProblem("missing_messages", f"expected a non-empty list 'messages', got {row.get('messages')!r:.60}")
    messages = _messages(row["messages"], "messages")
    if not any(m["role"] == "assistant" for m in messages):
        raise RowProblem("no_assistant_turn", "messages: no assistant message")
    return {"id": _row_id(row, where), "messages": messages, "where": where}


def _reply(value: Any, what: str) -> list[Message]:
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    messages = _messages(value, what)
    if messages[-1]["role"] != "assistant":
        raise RowProblem("no_assistant_turn", f"{what}: the last message is {messages[-1]['role']!r}, not assistant")
    return messages


def preference_row(row: dict[str, Any], where: str) -> dict[str, Any]:
    """``{"id", "prompt", "chosen", "rejected", "where"}`` of a preference row in either form, or a RowProblem."""
    for key in ("chosen", "rejected"):
        if not isinstance(row.get(key), (list, str)):
            raise RowProblem("missing_field", f"expected {key!r} as a list of messages or a string, "
                                              f"got {row.get(key)!r:.60}")
    chosen = row["chosen"]
    full_conversations = isinstance(chosen, list) and any(
        isinstance(m, dict) and m.get("role") != "assistant" for m in chosen)
    if full_conversations:  # open-instruct: the prompt is chosen[:-1] = rejected[:-1]
        chosen, rejected = _reply(row["chosen"], "chosen"), _reply(row["rejected"], "rejected")
        prompt = chosen[:-1]
        if not prompt:
            raise RowProblem("no_prompt", "chosen: a single message, no prompt before the reply")
        if rejected[:-1] != prompt:
            raise RowProblem("prompts_differ", "chosen[:-1] and rejected[:-1] differ: not one prompt")
        chosen, rejected = chosen[-1:], rejected[-1:]
    else:  # TRL's explicit prompt
        if "prompt" not in row:
            raise RowProblem("missing_field", "expected 'prompt' (chosen holds replies only) or full conversations")
        value = row["prompt"]
        if isinstance(value, str):
            prompt = [{"role": "user", "content": value}]
        elif isinstance(value, list) and not value:
            raise RowProblem("no_prompt", "prompt: an empty list")
        else:
            prompt = _messages(value, "prompt")
        chosen, rejected = _reply(row["chosen"], "chosen"), _reply(row["rejected"], "rejected")
    return {"id": _row_id(row, where), "prompt": prompt, "chosen": chosen, "rejected": rejected, "where": where}


def _read(
    spec: Any, normalise: Callable[[dict[str, Any], str], dict[str, Any]], examples_per_reason: int
) -> tuple[list[dict[str, Any]], RowReport]:
    report = RowReport(examples_per_reason)
    rows: list[dict[str, Any]] = []
    for source in instruct_sources(spec):
        file_report = RowReport(examples_per_reason)
        for where, raw in raw_rows(source):
            for counted in (report, file_report):
                counted.rows_read += 1
            try:
                row = normalise(raw, where)
            except RowProblem as problem:
                for counted in (report, file_report):
                    counted.drop(problem.reason, where, problem.detail)
                continue
            for counted in (report, file_report):
                counted.kept += 1
            rows.append(row)
        if not file_report.kept:
            label = source.url if isinstance(source, FileSource) else source.label
            raise InstructDataError(f"{label}: no usable rows ({file_report.summary()})")
    return rows, report


def read_sft_rows(
    spec: Any, *, examples_per_reason: int = EXAMPLES_PER_REASON
) -> tuple[list[dict[str, Any]], RowReport]:
    """SFT rows ``{"id", "messages", "where"}`` of every source of ``spec``, and the report of bad rows."""
    return _read(spec, sft_row, examples_per_reason)


def read_preference_rows(
    spec: Any, *, examples_per_reason: int = EXAMPLES_PER_REASON
) -> tuple[list[dict[str, Any]], RowReport]:
    """Preference rows ``{"id", "prompt", "chosen", "rejected", "where"}`` (either form on disk) and the report."""
    return _read(spec, preference_row, examples_per_reason)


# ---------------------------------------------------------------- fingerprint


def _file_sha256(url: str, chunk_bytes: int = 1 << 20) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with fsspec.open(url, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def instruct_data_fingerprint(spec: Any) -> str:
    """sha256 of the sources in order: each file's bytes (streamed), or a hub source's (name, split, revision)."""
    digest = hashlib.sha256(b"instruct-data-v1\0")
    for source in instruct_sources(spec):
        if isinstance(source, HubSource):
            part = ["hub", source.name, source.split, source.revision]
        else:
            part = ["file", *_file_sha256(source.url)]
        digest.update(json.dumps(part).encode() + b"\0")
    return digest.hexdigest()
