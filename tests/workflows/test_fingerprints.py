"""Fingerprints follow the bytes a step reads, not where they lie."""
import shutil

from steps.data.steps import LoadTokenizer
from steps.data.tokenizer import olmo_tokenizers_dir

OLMO = "allenai_gpt-neox-olmo-dolma-v1_5"


def tokenizer_id(**where) -> str:
    return LoadTokenizer(tokenizer={"eos_token_id": 50279, "pad_token_id": 1, **where}).unique_id


def test_tokenizer_fingerprint_follows_content_not_location(tmp_path):
    original = olmo_tokenizers_dir() / f"{OLMO}.json"
    shutil.copyfile(original, tmp_path / "a.json")
    shutil.copyfile(original, tmp_path / "b.json")
    by_name = tokenizer_id(name=OLMO)
    assert tokenizer_id(path=str(tmp_path / "a.json")) == by_name == tokenizer_id(path=str(tmp_path / "b.json"))

    edited = (tmp_path / "a.json").read_text().replace('"<|padding|>"', '"<|pad|>"', 1)
    (tmp_path / "a.json").write_text(edited)
    assert tokenizer_id(path=str(tmp_path / "a.json")) != by_name
    assert tokenizer_id(name=OLMO) == by_name
