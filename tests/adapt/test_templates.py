"""Chat templates: exact token ids and labels of tulu, olmo and Jinja templates with OLMo's tokenizers,
prefix-derived spans of Jinja templates, and the sandbox."""
from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer

from steps.adapt.chat import render_chat, render_prompt
from steps.adapt.templates import (
    ChatTemplateError,
    JinjaTemplate,
    OlmoTemplate,
    TemplateRowError,
    chat_template,
)
from steps.data.tokenizer import olmo_tokenizers_dir
from tests.adapt.test_chat import CONVERSATION
from steps.train.objectives import IGNORE_INDEX

M = IGNORE_INDEX
EOS_V1, EOS_V2 = 50279, 100257  # <|endoftext|> of the OLMo 1 and OLMo 2 (dolma2) tokenizers
IM_START, IM_END = 100264, 100265  # single tokens of the dolma2 tokenizer


# A ChatML template in Jinja, as a checkpoint's tokenizer_config.json would carry it.
CHATML_JINJA = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def dolma2() -> Tokenizer:
    return Tokenizer.from_file(str(olmo_tokenizers_dir() / "allenai_dolma2.json"))


def pieces(tokenizer: Tokenizer, *parts) -> tuple[list[int], list[int]]:
    """Ids and labels of ``(text or [ids], trained)`` parts, each text encoded on its own."""
    ids, labels = [], []
    for part, is_trained in parts:
        part_ids = part if isinstance(part, list) else tokenizer.encode(part, add_special_tokens=False).ids
        ids += part_ids
        labels += part_ids if is_trained else [M] * len(part_ids)
    return ids, labels


# ---------------------------------------------------------------- tulu


TULU_IDS = [
    29, 93, 10394, 49651, 187, 1394, 403, 4109, 339, 15, 187, 29, 93, 4537, 49651, 187, 2402, 247, 10688, 15, 187,
    29, 93, 515, 5567, 49651, 187,
    7573, 267, 13, 247, 4797, 14, 11707, 15, 50279,  # "Teal, a blue-green." eos
    187, 29, 93, 4537, 49651, 187, 1898, 247, 1180, 32, 187, 29, 93, 515, 5567, 49651, 187,
    28830, 90, 14, 9389, 187, 187, 263, 5093, 15, 50279,  # "Forty-two\n\nor seven." eos
    187,
]
TULU_LABELS = [M] * 27 + TULU_IDS[27:36] + [M] * 17 + TULU_IDS[53:63] + [M]


def test_tulu_ids_and_labels_are_pinned(tokenizer):
    rendered = chat_template("tulu").render(CONVERSATION, tokenizer, EOS_V1)
    assert rendered == (TULU_IDS, TULU_LABELS)
    assert rendered == pieces(
        tokenizer,
        ("<|system|>\nYou are terse.\n<|user|>\nName a colour.\n<|assistant|>\n", False),
        ("Teal, a blue-green.", True), ([EOS_V1], True),
        ("\n<|user|>\nAnd a number?\n<|assistant|>\n", False),
        ("Forty-two\n\nor seven.", True), ([EOS_V1], True),
        ("\n", False),
    )
    assert render_chat(CONVERSATION, tokenizer, EOS_V1, max_length=1000) == rendered  # the default template
    assert render_chat(CONVERSATION, tokenizer, EOS_V1, 40) == (TULU_IDS[:40], TULU_LABELS[:40])


def test_tulu_prompt_ends_with_the_assistant_header(tokenizer):
    prompt = chat_template("tulu").prompt(CONVERSATION[:4], tokenizer, EOS_V1)
    assert prompt == TULU_IDS[:53] == render_prompt(CONVERSATION[:4], tokenizer, EOS_V1)
    assert tokenizer.decode(prompt[-7:]) == "\n<|assistant|>\n"


# ---------------------------------------------------------------- olmo (ChatML)


OLMO_IDS = [
    IM_START, 9125, 198, 2675, 527, 51637, 13, IM_END, 198,  # <|im_start|>system\nYou are terse.<|im_end|>\n
    IM_START, 882, 198, 678, 264, 12745, 13, IM_END, 198,
    IM_START, 78191, 198,  # <|im_start|>assistant\n
    6777, 278, 11, 264, 6437, 39368, 13, IM_END,  # "Teal, a blue-green." <|im_end|>
    198,
    IM_START, 882, 198, 3112, 264, 1396, 30, IM_END, 198,
    IM_START, 78191, 198,
    34380, 88, 38502, 271, 269, 8254, 13, EOS_V2,  # "Forty-two\n\nor seven." eos: the last message ends at eos
]
OLMO_LABELS = [M] * 21 + OLMO_IDS[21:29] + [M] * 13 + OLMO_IDS[42:]


def test_olmo_ids_and_labels_are_pinned(dolma2):
    rendered = chat_template("olmo").render(CONVERSATION, dolma2, EOS_V2)
    assert rendered == (OLMO_IDS, OLMO_LABELS)
    assert rendered == pieces(
        dolma2,
        ("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n"
         "<|im_start|>assistant\n", False),
        ("Teal, a blue-green.", True), ([IM_END], True),
        ("\n<|im_start|>user\nAnd a number?<|im_end|>\n<|im_start|>assistant\n", False),
        ("Forty-two\n\nor seven.", True), ([EOS_V2], True),
    )
    assert dolma2.decode(OLMO_IDS, skip_special_tokens=False) == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n"
        "<|im_start|>assistant\nTeal, a blue-green.<|im_end|>\n<|im_start|>user\nAnd a number?<|im_end|>\n"
        "<|im_start|>assistant\nForty-two\n\nor seven.<|endoftext|>"
    )


def test_olmo_prompt_is_the_prefix_before_the_last_reply(dolma2):
    prompt = chat_template("olmo").prompt(CONVERSATION[:4], dolma2, EOS_V2)
    assert prompt == OLMO_IDS[:42]
    assert prompt[-3:] == [IM_START, 78191, 198]  # <|im_start|>assistant\n


def test_olmo_user_assistant_without_system(dolma2):
    messages = CONVERSATION[1:3]
    assert chat_template("olmo").render(messages, dolma2, EOS_V2) == pieces(
        dolma2,
        ("<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n", False),
        ("Teal, a blue-green.", True), ([EOS_V2], True),
    )


def test_olmo_default_system_prompt_only_when_there_is_none(dolma2):
    template = chat_template({"name": "olmo", "system_prompt": "Be kind."})
    with_default = template.render(CONVERSATION[1:3], dolma2, EOS_V2)[0]
    assert dolma2.decode(with_default, skip_special_tokens=False).startswith("<|im_start|>system\nBe kind.<|im_end|>\n")
    assert template.render(CONVERSATION, dolma2, EOS_V2) == (OLMO_IDS, OLMO_LABELS)
    assert template.fingerprint != chat_template("olmo").fingerprint


def test_olmo_with_the_olmo1_tokenizer_spells_the_markers_out(tokenizer):
    """No <|im_start|> token in OLMo 1's vocabulary: the markers are ordinary text, and still trained/masked."""
    ids, labels = chat_template("olmo").render(CONVERSATION[1:3], tokenizer, EOS_V1)
    trained = [token for token, label in zip(ids, labels) if label != M]
    assert trained == tokenizer.encode("Teal, a blue-green.", add_special_tokens=False).ids + [EOS_V1]
    assert tokenizer.decode(ids).startswith("<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n")


# ---------------------------------------------------------------- Jinja


def test_jinja_chatml_ids_and_labels_from_prefix_spans(dolma2):
    template = chat_template({"name": "jinja", "template": CHATML_JINJA})
    rendered = template.render(CONVERSATION, dolma2, EOS_V2)
    # Trained: each reply's whole span, from after <|im_start|>assistant\n to the next message, "\n" included.
    assert rendered == pieces(
        dolma2,
        ("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n"
         "<|im_start|>assistant\n", False),
        ("Teal, a blue-green.<|im_end|>\n", True),
        ("<|im_start|>user\nAnd a number?<|im_end|>\n<|im_start|>assistant\n", False),
        ("Forty-two\n\nor seven.<|im_end|>\n", True),
    )
    assert rendered[0] == OLMO_IDS[:-1] + [IM_END, 198]
    prompt = template.prompt(CONVERSATION[:4], dolma2, EOS_V2)
    assert prompt == rendered[0][:42] and prompt[-3:] == [IM_START, 78191, 198]


def test_checkpoint_template_from_a_tokenizer_config(tmp_path, dolma2):
    config = {"chat_template": CHATML_JINJA, "eos_token": "<|endoftext|>", "bos_token": None}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    expected = chat_template({"name": "jinja", "template": CHATML_JINJA}).render(CONVERSATION, dolma2, EOS_V2)
    for where in (config, tmp_path / "tokenizer_config.json", tmp_path, str(tmp_path)):
        assert chat_template("checkpoint", tokenizer_config=where).render(CONVERSATION, dolma2, EOS_V2) == expected
    listed = {"chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": CHATML_JINJA}]}
    assert chat_template("checkpoint", listed).render(CONVERSATION, dolma2, EOS_V2) == expected
    # chat_template.jinja next to tokenizer_config.json wins (newer transformers save it there).
    (tmp_path / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}|{% endfor %}")
    ids, _ = chat_template("checkpoint", tmp_path).render(CONVERSATION, dolma2, EOS_V2)
    assert dolma2.decode(ids) == ("You are terse.|Name a colour.|Teal, a blue-green.|And a number?|"
                                  "Forty-two\n\nor seven.|")


def test_jinja_template_sees_bos_and_eos_tokens(dolma2):
    source = ("{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}"
              "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}")
    template = chat_template("checkpoint", {"chat_template": source, "bos_token": {"content": "<|endoftext|>"}})
    ids, labels = template.render(CONVERSATION[1:3], dolma2, EOS_V2)
    # No generation prompt: the model writes "assistant: " itself after a prompt, so it is part of the reply.
    assert (ids, labels) == pieces(dolma2, ("<|endoftext|>user: Name a colour.\n", False),
                                   ("assistant: Teal, a blue-green.<|endoftext|>\n", True))
    assert ids[0] == EOS_V2 and ids[-2:] == [EOS_V2, 198]


def test_a_template_that_renders_the_last_reply_differently_has_underivable_spans(dolma2):
    """open-instruct's olmo shape: <|im_end|> after a reply, but eos after the last one. messages[:3] ends with
    eos where the full conversation has <|im_end|>, so the first reply's span cannot be derived."""
    source = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
              "{% if m['role'] == 'assistant' and loop.last %}{{ eos_token }}{% else %}<|im_end|>\n{% endif %}"
              "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    template = chat_template({"name": "jinja", "template": source})
    with pytest.raises(TemplateRowError, match="does not render as a prefix") as error:
        template.render(CONVERSATION, dolma2, EOS_V2)
    assert error.value.reason == "template_spans_not_derivable"
    # One reply is fine, and equals the built-in olmo template's rendering but for the <|im_end|> token piece.
    ids, labels = template.render(CONVERSATION[:3], dolma2, EOS_V2)
    assert ids == OlmoTemplate().render(CONVERSATION[:3], dolma2, EOS_V2)[0]
    assert [t for t, label in zip(ids, labels) if label != M] == [6777, 278, 11, 264, 6437, 39368, 13, EOS_V2]


def test_a_template_that_drops_the_reply_content_has_underivable_spans(dolma2):
    source = ("{% for m in messages %}{{ m['role'] }}{% if m['role'] == 'user' %}: {{ m['content'] }}{% endif %}"
              "{{ '\\n' }}{% endfor %}")
    with pytest.raises(TemplateRowError, match="content is not in its span"):
        JinjaTemplate(source).render(CONVERSATION[1:3], dolma2, EOS_V2)


def test_raise_exception_fails_the_row(dolma2):
    source = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('must start with user') }}{% endif %}x"
    template = JinjaTemplate(source)
    with pytest.raises(TemplateRowError, match="must start with user") as error:
        template.render(CONVERSATION, dolma2, EOS_V2)
    assert error.value.reason == "template_error"


@pytest.mark.parametrize("source", [
    "{{ messages.__class__.__mro__[1].__subclasses__() }}",
    "{{ ().__class__.__base__.__subclasses__() }}",
    "{% for m in messages %}{{ m.__class__.__init__.__globals__ }}{% endfor %}",
    "{{ raise_exception.__globals__['os'] }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{% set _ = messages.append({'role': 'user', 'content': 'injected'}) %}x",
    "{% set _ = messages[0].update({'content': 'changed'}) %}x",
])
def test_the_sandbox_refuses_attribute_escapes_and_mutation(dolma2, source):
    template = JinjaTemplate(source, origin="evil tokenizer_config.json")
    with pytest.raises(ChatTemplateError, match="evil tokenizer_config.json: the template did something the sandbox"):
        template.render(CONVERSATION, dolma2, EOS_V2)


def test_an_unsafe_attribute_alone_renders_as_nothing(dolma2):
    template = JinjaTemplate("{{ messages.__class__ }}{{ cycler.__init__ }}{{ raise_exception.__globals__ }}x")
    assert dolma2.decode(template.prompt(CONVERSATION[1:2], dolma2, EOS_V2)) == "x"


@pytest.mark.parametrize(("spec", "config", "message"), [
    ("chatml", None, r"expected one of \('tulu', 'olmo', 'checkpoint', 'jinja'\), got 'chatml'"),
    ({"name": "olmo", "sytem_prompt": "x"}, None, r"unexpected keys \['sytem_prompt'\]"),
    ("checkpoint", None, "no tokenizer_config given"),
    ("checkpoint", {"eos_token": "<|endoftext|>"}, "no 'chat_template'"),
    ({"name": "jinja", "template": "{% for %}"}, None, "Jinja syntax error on line 1"),
])
def test_bad_template_specs_fail_before_any_row(spec, config, message):
    with pytest.raises(ChatTemplateError, match=message):
        chat_template(spec, config)


def test_a_missing_tokenizer_config_names_the_file(tmp_path):
    with pytest.raises(ChatTemplateError, match=r"tokenizer_config.json: no such file"):
        chat_template("checkpoint", tmp_path)


def test_names_resolve_and_templates_pass_through():
    olmo = chat_template("olmo")
    assert chat_template(olmo) is olmo and chat_template(None) is chat_template("tulu")
    assert len({chat_template(s).fingerprint for s in ("tulu", "olmo", {"name": "jinja", "template": "x"})}) == 3
