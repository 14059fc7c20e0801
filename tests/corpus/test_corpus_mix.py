"""Source mixing: deterministic sampling factors, repeats with unique ids, held-out split."""
import pytest

from steps.common.documents import list_shards, read_documents, write_jsonl_gz
from olmo_model.config import ConfigError
from steps.corpus.mix import MixConfig, mix_sources
from steps.common.engine import LocalEngine


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix") / "in"
    for source, count in (("books", 2000), ("web", 1000)):
        docs = [{"id": f"{source}-{i}", "text": f"Document {i} of {source}.", "source": source} for i in range(count)]
        write_jsonl_gz(root / source / f"{source}-00000.jsonl.gz", docs[: count // 2])
        write_jsonl_gz(root / source / f"{source}-00001.jsonl.gz", docs[count // 2 :])
    return root


def ids(directory):
    return [d["id"] for path in list_shards(directory) for _, d in read_documents(path)]


def test_sampling_factors_are_roughly_respected(corpus, tmp_path):
    stats = mix_sources(corpus, tmp_path, MixConfig.from_dict({"sampling": {"books": 0.25, "web": 2.5}, "seed": 7}))
    books, web = stats["sources"]["books"], stats["sources"]["web"]
    assert books["documents_in"] == 2000 and abs(books["documents_out"] - 500) < 75
    assert web["documents_in"] == 1000 and abs(web["documents_out"] - 2500) < 75
    web_ids = ids(tmp_path / "documents" / "web")
    assert len(web_ids) == len(set(web_ids)) == web["documents_out"]
    originals = [i for i in web_ids if "#repeat" not in i]
    assert len(originals) == 1000  # factor 2.5: every document at least twice
    assert sum(i.endswith("#repeat2") for i in web_ids) == web["documents_out"] - 2000
    assert web["bytes_out"] == sum(len(d["text"].encode()) for p in list_shards(tmp_path / "documents" / "web")
                                   for _, d in read_documents(p))
    assert all(p.name.startswith("mix-") for p in list_shards(tmp_path / "documents"))


def test_mixing_is_deterministic_and_seeded(corpus, tmp_path):
    settings = {"sampling": {"books": 0.5}, "seed": 1, "max_shard_bytes": 4000, "heldout_fraction": 0.1}
    config = MixConfig.from_dict(settings)
    mix_sources(corpus, tmp_path / "one", config)
    mix_sources(corpus, tmp_path / "two", config)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.jsonl.gz"))
    assert len(files) > 4  # small shards: several per source
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*.jsonl.gz"))
    assert all((tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes() for f in files)
    mix_sources(corpus, tmp_path / "three", MixConfig.from_dict({**settings, "seed": 2}))
    assert ids(tmp_path / "one" / "documents" / "books") != ids(tmp_path / "three" / "documents" / "books")


def test_heldout_split(corpus, tmp_path):
    stats = mix_sources(corpus, tmp_path, MixConfig.from_dict({"heldout_fraction": 0.1, "seed": 3}))
    for source in ("books", "web"):
        s = stats["sources"][source]
        heldout = set(ids(tmp_path / "heldout" / source))
        train = set(ids(tmp_path / "documents" / source))
        assert len(heldout) == s["heldout_documents"] and abs(s["heldout_documents"] - s["documents_in"] / 10) < 50
        assert not heldout & train and len(heldout | train) == s["documents_in"]
        assert all(p.name.startswith("heldout-") for p in list_shards(tmp_path / "heldout" / source))


def test_factor_zero_and_unknown_source(corpus, tmp_path):
    stats = mix_sources(corpus, tmp_path, MixConfig.from_dict({"sampling": {"web": 0}}))
    assert stats["sources"]["web"] == {"documents_in": 1000, "documents_out": 0, "bytes_out": 0,
                                       "heldout_documents": 0, "heldout_bytes": 0, "factor": 0}
    with pytest.raises(ConfigError, match="mix.sampling names source.*wiki"):
        mix_sources(corpus, tmp_path / "x", MixConfig.from_dict({"sampling": {"wiki": 2.0}}))
    with pytest.raises(ConfigError, match=r"mix\.sampling\.web"):
        MixConfig.from_dict({"sampling": {"web": -1}})


def test_proportions_set_each_sources_share_of_the_training_bytes(corpus, tmp_path):
    stats = mix_sources(corpus, tmp_path, MixConfig.from_dict({"proportions": {"books": 0.2, "web": 0.8}, "seed": 5}))
    books, web = stats["sources"]["books"], stats["sources"]["web"]
    assert web["factor"] == pytest.approx(1.0)  # the default total: the largest mix without repeating a source
    assert books["factor"] < 1
    assert books["bytes_out"] / (books["bytes_out"] + web["bytes_out"]) == pytest.approx(0.2, abs=0.02)

    sized_config = MixConfig.from_dict({"proportions": {"books": 0.5, "web": 0.5}, "total_bytes": 100_000})
    sized = mix_sources(corpus, tmp_path / "sized", sized_config)
    total = sum(s["bytes_out"] for s in sized["sources"].values())
    assert total == pytest.approx(100_000, rel=0.05)
    assert sized["sources"]["web"]["factor"] > 2  # web alone has about 25 kB: it is repeated


@pytest.mark.parametrize("config, message", [
    ({"proportions": {"books": 0.5, "web": 0.6}}, r"mix\.proportions: expected shares summing to 1"),
    ({"proportions": {"books": 0.5, "web": 0.5}, "sampling": {"web": 2.0}}, "either sampling or proportions"),
    ({"total_bytes": 1000}, r"mix\.total_bytes: expected a positive integer, with proportions"),
])
def test_bad_proportions_are_rejected(config, message):
    with pytest.raises(ConfigError, match=message):
        MixConfig.from_dict(config)


def test_proportions_must_give_every_source_a_share(corpus, tmp_path):
    with pytest.raises(ConfigError, match=r"no share for source\(s\) web"):
        mix_sources(corpus, tmp_path, MixConfig.from_dict({"proportions": {"books": 1.0}}))


def _contents(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.jsonl.gz"))}


def test_sources_mix_in_parallel_and_a_rerun_redoes_only_unfinished_sources(corpus, tmp_path):
    config = MixConfig.from_dict({"sampling": {"web": 1.5}, "seed": 4, "heldout_fraction": 0.05,
                                  "max_shard_bytes": 6000})
    one = mix_sources(corpus, tmp_path / "one", config)
    two = mix_sources(corpus, tmp_path / "two", config, engine=LocalEngine(2), markers=tmp_path / "done")
    assert one == two and _contents(tmp_path / "one") == _contents(tmp_path / "two")

    (tmp_path / "done" / "web.json").unlink()  # as if the run died while mixing web
    stale = tmp_path / "two" / "documents" / "web" / "mix-00099.jsonl.gz"
    stale.write_bytes(b"half a shard")
    finished = (tmp_path / "two" / "documents" / "books" / "mix-00000.jsonl.gz").stat().st_mtime_ns
    again = mix_sources(corpus, tmp_path / "two", config, markers=tmp_path / "done")
    assert again == one and not stale.exists()
    assert _contents(tmp_path / "two") == _contents(tmp_path / "one")
    assert (tmp_path / "two" / "documents" / "books" / "mix-00000.jsonl.gz").stat().st_mtime_ns == finished
