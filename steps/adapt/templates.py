"""Chat templates: how a conversation becomes token ids, and which of them are trained on.

Three kinds, one API (``ChatTemplate.render`` and ``ChatTemplate.prompt``), resolved by ``chat_template``:

``tulu``
    open-instruct's template of the OLMo 1 / Tulu 2 era: ``<|system|>\\n{c}\\n``, ``<|user|>\\n{c}\\n``,
    ``<|assistant|>\\n{c}{eos}\\n``; generation prompt ``<|assistant|>\\n``. Trained: each reply's content and
    its eos.
``olmo``
    the ChatML-style template open-instruct uses for OLMo 2/3 SFT: ``<|im_start|>{role}\\n{c}<|im_end|>\\n`` per
    message, except that an assistant message that is the conversation's last message ends with the eos token
    instead of ``<|im_end|>\\n`` (so one packed document is one conversation, split on eos); generation prompt
    ``<|im_start|>assistant\\n``. Trained: each reply's content and its end marker (``<|im_end|>``, or eos for
    the last message); the ``<|im_start|>assistant\\n`` header and the newline after ``<|im_end|>`` are not.
    open-instruct's own ``olmo`` template also adds a function-calling sentence to every system message and a
    default OLMo identity system message when there is none; this one does neither (give
    ``{"name": "olmo", "system_prompt": ...}`` for a default system message, or use the checkpoint's template).
``checkpoint`` (or ``{"name": "jinja", "template": ...}``)
    a Jinja chat template from a checkpoint (``tokenizer_config.json``'s ``chat_template``, or
    ``chat_template.jinja``), rendered in jinja2's immutable sandbox. Assistant spans are derived by rendering
    prefixes: reply ``i`` starts where ``messages[:i]`` rendered with the generation prompt ends, and ends where
    ``messages[:i + 1]`` rendered without it ends; both must be prefixes of the full rendering and the span must
    hold the reply's content. Trained: that whole span (content, end marker, and whatever the template writes
    after them before the next message; for a template without a generation prompt, also the header it writes
    before the reply, which the model has to write itself after such a prompt). A conversation whose spans cannot
    be derived this way raises ``TemplateRowError`` with reason ``template_spans_not_derivable``; the data
    readers count and drop such rows. A template that renders an assistant turn differently when it is the last
    message (open-instruct's ``olmo`` with an eos other than ``<|im_end|>``) fails this for every conversation
    with two replies: use the built-in ``olmo`` for those.

Token ids come from encoding the text piecewise: text that is not trained on is encoded in one go between two
trained pieces, each trained piece on its own, and eos is appended as an id. So a prompt's ids (``prompt``) are
exactly the first ids of the conversation that continues it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import fsspec
from tokenizers import Tokenizer

from steps.train.objectives import IGNORE_INDEX

ROLES = ("system", "user", "assistant")

Message = dict[str, str]
Rendered = tuple[list[int], list[int]]  # (input_ids, labels)


class ChatFormatError(ValueError):
    """A conversation or data row that does not have the expected shape."""


class ChatTemplateError(ValueError):
    """A chat template that cannot be used at all: unknown name, missing, syntax error, or unsafe."""


class TemplateRowError(ChatFormatError):
    """One conversation this template cannot render with labels; ``reason`` names why, for drop counts."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_messages(messages: Any, where: str, *, needs_assistant: bool = True) -> None:
    """Fail, naming ``where``, unless ``messages`` is a non-empty list of {role, content} messages."""
    if not isinstance(messages, list) or not messages:
        raise ChatFormatError(f"{where}: expected a non-empty list of messages, got {messages!r:.80}")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise ChatFormatError(f"{where}: message {index} must have exactly the keys 'role' and 'content'")
        if message["role"] not in ROLES:
            raise ChatFormatError(f"{where}: message {index} has role {message['role']!r}; expected one of {ROLES}")
        if not isinstance(message["content"], str):
            raise ChatFormatError(f"{where}: message {index} content must be a string")
    if needs_assistant and not any(m["role"] == "assistant" for m in messages):
        raise ChatFormatError(f"{where}: expected at least one assistant message")


# ---------------------------------------------------------------- pieces of a rendering


@dataclass(frozen=True)
class Piece:
    """Text (encoded) or token ids (as is) of a rendering, trained on or not."""

    text: str = ""
    ids: tuple[int, ...] | None = None
    trained: bool = False


def masked(text: str) -> Piece:
    return Piece(text=text)


def trained(text: str) -> Piece:
    return Piece(text=text, trained=True)


def trained_ids(*ids: int) -> Piece:
    return Piece(ids=tuple(ids), trained=True)


def assemble(pieces: Sequence[Piece], tokenizer: Tokenizer) -> Rendered:
    """Token ids and labels of ``pieces``: runs of untrained text are encoded together, each trained text alone."""
    input_ids: list[int] = []
    labels: list[int] = []

    def append(ids: Sequence[int], is_trained: bool) -> None:
        input_ids.extend(ids)
        labels.extend(ids if is_trained else [IGNORE_INDEX] * len(ids))

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids if text else []

    pending = ""
    for piece in pieces:
        if piece.ids is None and not piece.trained:
            pending += piece.text
            continue
        append(encode(pending), False)
        pending = ""
        append(piece.ids if piece.ids is not None else encode(piece.text), piece.trained)
    append(encode(pending), False)
    return input_ids, labels


# ---------------------------------------------------------------- the API


@runtime_checkable
class ChatTemplate(Protocol):
    name: str

    @property
    def fingerprint(self) -> str:
        """A short hash of everything that decides the rendering (for cache keys)."""

    def render(
        self, messages: Sequence[Message], tokenizer: Tokenizer, eos_token_id: int, max_length: int | None = None
    ) -> Rendered:
        """``(input_ids, labels)`` of a conversation, cut to ``max_length`` tokens; labels are ``IGNORE_INDEX``
        except on trained positions, where they equal the input ids. May raise ``TemplateRowError``."""

    def prompt(self, messages: Sequence[Message], tokenizer: Tokenizer, eos_token_id: int) -> list[int]:
        """Token ids of a conversation followed by the generation prompt, for the model to continue."""


class PieceTemplate:
    """A template that lays a conversation out as ``Piece``s; ``render`` and ``prompt`` assemble them."""

    name = "?"

    def pieces(self, messages: Sequence[Message], eos_token_id: int, generation_prompt: bool,
               tokenizer: Tokenizer) -> list[Piece]:
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        return {"name": self.name}

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]

    def render(
        self, messages: Sequence[Message], tokenizer: Tokenizer, eos_token_id: int, max_length: int | None = None
    ) -> Rendered:
        input_ids, labels = assemble(self.pieces(messages, eos_token_id, False, tokenizer), tokenizer)
        if max_length is not None:
            input_ids, labels = input_ids[:max_length], labels[:max_length]
        return input_ids, labels

    def prompt(self, messages: Sequence[Message], tokenizer: Tokenizer, eos_token_id: int) -> list[int]:
        return assemble(self.pieces(messages, eos_token_id, True, tokenizer), tokenizer)[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity()})"


class TuluTemplate(PieceTemplate):
    """``<|role|>\\n{content}\\n``; a reply is ``{content}{eos}`` (trained) and then ``\\n``."""

    name = "tulu"

    def pieces(self, messages, eos_token_id, generation_prompt, tokenizer=None):
        pieces = []
        for message in messages:
            pieces.append(masked(f"<|{message['role']}|>\n"))
            if message["role"] == "assistant":
                pieces += [trained(message["content"]), trained_ids(eos_token_id), masked("\n")]
            else:
                pieces.append(masked(message["content"] + "\n"))
        if generation_prompt:
            pieces.append(masked("<|assistant|>\n"))
        return pieces


IM_START, IM_END = "<|im_start|>", "<|im_end|>"


class OlmoTemplate(PieceTemplate):
    """ChatML: ``<|im_start|>{role}\\n{content}<|im_end|>\\n``; the last message, if a reply, ends at eos."""

    name = "olmo"

    def __init__(self, system_prompt: str | None = None) -> None:
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise ChatTemplateError(f"olmo template: system_prompt must be a string, got {system_prompt!r:.80}")
        self.system_prompt = system_prompt

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "system_prompt": self.system_prompt}

    def pieces(self, messages, eos_token_id, generation_prompt, tokenizer=None):
        messages = list(messages)
        if self.system_prompt is not None and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        pieces = []
        for index, message in enumerate(messages):
            pieces.append(masked(f"{IM_START}{message['role']}\n"))
            if message["role"] != "assistant":
                pieces.append(masked(message["content"] + f"{IM_END}\n"))
            elif index == len(messages) - 1:
                pieces += [trained(message["content"]), trained_ids(eos_token_id)]
            else:
                pieces += [trained(message["content"]), trained(IM_END), masked("\n")]
        if generation_prompt:
            pieces.append(masked(f"{IM_START}assistant\n"))
        return pieces


def _raise_exception(message: str) -> None:
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _token_text(token: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or ``{"content": ...}``."""
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) else None


class JinjaTemplate(PieceTemplate):
    """A Jinja chat template (Hugging Face convention: variables ``messages``, ``add_generation_prompt``,
    ``bos_token``, ``eos_token``; ``raise_exception``), run in jinja2's immutable sandbox."""

    def __init__(self, source: str, *, bos_token: str | None = None, eos_token: str | None = None,
                 name: str = "jinja", origin: str = "chat template") -> None:
        from jinja2 import TemplateSyntaxError
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        if not isinstance(source, str) or not source.strip():
            raise ChatTemplateError(f"{origin}: expected a Jinja template string, got {source!r:.80}")
        self.source, self.bos_token, self.eos_token, self.name, self.origin = source, bos_token, eos_token, name, origin
        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        environment.globals["raise_exception"] = _raise_exception
        environment.filters["tojson"] = _tojson
        try:
            self._template = environment.from_string(source)
        except TemplateSyntaxError as exc:
            raise ChatTemplateError(f"{origin}: Jinja syntax error on line {exc.lineno}: {exc.message}") from None

    def identity(self) -> dict[str, Any]:
        return {"name": "jinja", "source": self.source, "bos_token": self.bos_token, "eos_token": self.eos_token}

    def text(self, messages: Sequence[Message], generation_prompt: bool, eos_token: str) -> str:
        """The template's rendering; a sandbox violation is a ``ChatTemplateError`` (the template is unusable),
        any other failure a ``TemplateRowError`` (this conversation is)."""
        from jinja2.exceptions import SecurityError, TemplateError

        try:
            return self._template.render(
                messages=[dict(m) for m in messages], add_generation_prompt=generation_prompt,
                bos_token=self.bos_token or "", eos_token=eos_token,
            )
        except SecurityError as exc:
            raise ChatTemplateError(f"{self.origin}: the template did something the sandbox forbids: {exc}") from None
        except (TemplateError, TypeError, ValueError, LookupError, AttributeError) as exc:
            raise TemplateRowError("template_error", f"{self.origin} failed: {type(exc).__name__}: {exc}") from None

    def pieces(self, messages, eos_token_id, generation_prompt, tokenizer):
        eos_token = self.eos_token or tokenizer.id_to_token(eos_token_id)
        if eos_token is None:
            raise ChatTemplateError(f"{self.origin}: eos id {eos_token_id} is not in the tokenizer's vocabulary")
        full = self.text(messages, generation_prompt, eos_token)
        pieces, position = [], 0
        for index, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            start = self.text(messages[:index], True, eos_token)
            end = self.text(messages[: index + 1], False, eos_token)
            problem = None
            if not full.startswith(start):
                problem = f"messages[:{index}] with the generation prompt does not render as a prefix"
            elif not full.startswith(end):
                problem = f"messages[:{index + 1}] does not render as a prefix"
            elif len(start) < position or len(end) <= len(start):
                problem = f"assistant message {index} does not render after the messages before it"
            elif message["content"].strip() not in full[len(start):len(end)]:
                problem = f"assistant message {index}'s content is not in its span"
            if problem:
                raise TemplateRowError("template_spans_not_derivable", f"{self.origin}: {problem} of the conversation")
            pieces += [masked(full[position:len(start)]), trained(full[len(start):len(end)])]
            position = len(end)
        pieces.append(masked(full[position:]))
        return pieces


# ---------------------------------------------------------------- resolving a template by name


TULU = TuluTemplate()
OLMO = OlmoTemplate()
TEMPLATE_NAMES = ("tulu", "olmo", "checkpoint", "jinja")


def _read_text(url: str) -> str:
    with fsspec.open(url, "rt", encoding="utf-8") as handle:
        return handle.read()


def _read_tokenizer_config(location: str | Path) -> tuple[dict[str, Any], str | None, str]:
    """(tokenizer_config.json parsed, chat_template.jinja's text or None, origin) of a file or directory."""
    url = str(location).rstrip("/")
    fs, path = fsspec.core.url_to_fs(url)
    jinja_source, origin = None, url
    if fs.isdir(path):
        if fs.exists(f"{path}/chat_template.jinja"):
            jinja_source, origin = _read_text(f"{url}/chat_template.jinja"), f"{url}/chat_template.jinja"
        url, path = f"{url}/tokenizer_config.json", f"{path}/tokenizer_config.json"
        origin = origin if jinja_source is not None else url
    if not fs.exists(path):
        if jinja_source is not None:
            return {}, jinja_source, origin
        raise ChatTemplateError(f"{url}: no such file (expected a checkpoint's tokenizer_config.json)")
    try:
        config = json.loads(_read_text(url))
    except json.JSONDecodeError as exc:
        raise ChatTemplateError(f"{url}: not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(config, dict):
        raise ChatTemplateError(f"{url}: expected a JSON object")
    return config, jinja_source, origin


def _checkpoint_template(tokenizer_config: Mapping[str, Any] | str | Path | None) -> JinjaTemplate:
    """The Jinja template of a checkpoint: ``tokenizer_config`` is the parsed tokenizer_config.json, its path, or
    the checkpoint directory (where ``chat_template.jinja`` wins over tokenizer_config.json's ``chat_template``)."""
    if tokenizer_config is None:
        raise ChatTemplateError("chat template 'checkpoint': no tokenizer_config given to read it from")
    if isinstance(tokenizer_config, Mapping):
        config, source, origin = dict(tokenizer_config), None, "tokenizer_config"
    else:
        config, source, origin = _read_tokenizer_config(tokenizer_config)
    if source is None:
        source = config.get("chat_template")
        if isinstance(source, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
            named = {entry.get("name"): entry.get("template") for entry in source if isinstance(entry, dict)}
            source = named.get("default")
        if source is None:
            raise ChatTemplateError(f"{origin}: no 'chat_template' (a checkpoint without a chat template)")
    return JinjaTemplate(source, bos_token=_token_text(config.get("bos_token")),
                         eos_token=_token_text(config.get("eos_token")), name="checkpoint", origin=origin)


def chat_template(
    name_or_spec: str | Mapping[str, Any] | ChatTemplate | None = "tulu",
    tokenizer_config: Mapping[str, Any] | str | Path | None = None,
) -> ChatTemplate:
    """A template by name: ``"tulu"`` (None means tulu), ``"olmo"``, ``"checkpoint"`` (the Jinja template in
    ``tokenizer_config``: a parsed tokenizer_config.json, its path or URL, or the checkpoint directory), or a
    spec ``{"name": "olmo", "system_prompt": str}``, ``{"name": "jinja", "template": str}``,
    ``{"name": "checkpoint"}``; a ``ChatTemplate`` is returned as is."""
    if name_or_spec is None:
        return TULU
    if not isinstance(name_or_spec, (str, Mapping)) and isinstance(name_or_spec, ChatTemplate):
        return name_or_spec
    spec = {"name": name_or_spec} if isinstance(name_or_spec, str) else dict(name_or_spec)
    name = spec.pop("name", None)
    allowed: dict[str, Callable[[], ChatTemplate]] = {
        "tulu": lambda: TULU,
        "olmo": lambda: OlmoTemplate(spec.pop("system_prompt", None)),
        "checkpoint": lambda: _checkpoint_template(tokenizer_config),
        "jinja": lambda: JinjaTemplate(spec.pop("template", None), bos_token=spec.pop("bos_token", None),
                                       eos_token=spec.pop("eos_token", None)),
    }
    if name not in allowed:
        raise ChatTemplateError(f"chat template: expected one of {TEMPLATE_NAMES}, got {name!r}")
    template = allowed[name]()
    if spec:
        raise ChatTemplateError(f"chat template {name!r}: unexpected keys {sorted(spec)}")
    return template
