"""workflows/olmo7b.jsonnet hands its pretrain and anneal steps the OLMo-7B paper's settings.

Checked on the typed configs the steps build from their arguments (TrainConfig, LRSchedule, OlmoConfig), against the
paper's formulas written out here, not on the raw Jsonnet values alone.
"""
import functools
import json
from pathlib import Path

import pytest
import rjsonnet
from tango import StepGraph
from tango.common.util import import_module_and_submodules

import_module_and_submodules("steps")  # registers the step types, as tango.yml's include_package does

from steps.evaluation.config import InLoopEvalConfig  # noqa: E402
from steps.train.trainer import OptimizerConfig  # noqa: E402

RECIPE = Path(__file__).resolve().parents[2] / "workflows" / "olmo7b.jsonnet"
PEAK, FLOOR, WARMUP = 3e-4, 3e-5, 5000
ANNEAL_START, ANNEAL_STEPS = 2.3e-5, 1000
BATCH, SEQ_LEN, MICRO_BATCH, SEED = 2048, 2048, 2, 6198
PAPER_OPTIMIZER = OptimizerConfig(betas=(0.9, 0.95), eps=1e-5, weight_decay=0.1)


@functools.lru_cache(maxsize=1)
def graph() -> StepGraph:
    return StepGraph.from_file(RECIPE)


def recipe_params(field: str):
    """A field of the recipe's params object (hidden in the evaluated workflow)."""
    snippet = f"(import '{RECIPE.name}').params.{field}"
    return json.loads(rjsonnet.evaluate_snippet(str(RECIPE), snippet, jpathdir=[str(RECIPE.parent)]))


def pretrain_config():
    return graph()["pretrain"].kwargs["train"]


def anneal_config():
    kwargs = graph()["anneal"].kwargs
    return kwargs["train"].train_config(kwargs["train"].start_lr, kwargs["data_order"].global_batch_size)


def paper_pretrain_lr(step: int, total: int) -> float:
    """Linear warmup from 0.1x peak over 5000 steps, then linear decay to 0.1x peak at the last step."""
    if step <= WARMUP:
        return PEAK * (0.1 + 0.9 * step / WARMUP)
    return PEAK - (PEAK - FLOOR) * (min(step, total) - WARMUP) / (total - WARMUP)


def test_pretrain_optimizer_clipping_batch_seed_and_precision():
    config = pretrain_config()
    assert config.optimizer == PAPER_OPTIMIZER
    assert config.max_grad_norm == 1.0
    assert (config.global_batch_size, config.micro_batch_size) == (BATCH, MICRO_BATCH)
    assert config.seed == SEED and graph()["pretrain"].kwargs["data_order"].seed == SEED
    assert config.precision == "bf16"


def test_pretrain_lr_schedule_is_the_papers():
    config = pretrain_config()
    total = config.max_steps
    assert config.schedule.total_steps == total
    assert total * BATCH * SEQ_LEN >= 2e12 > (total - 1) * BATCH * SEQ_LEN  # 2T tokens, no step more
    schedule = config.schedule
    # The trainer's optimizer step s (1-based) runs at lr_at(s).
    assert schedule.lr_at(1) == pytest.approx(PEAK * (0.1 + 0.9 / WARMUP))
    assert schedule.lr_at(WARMUP) == pytest.approx(PEAK)
    assert schedule.lr_at(total) == pytest.approx(FLOOR)
    for step in (1, 2500, WARMUP - 1, WARMUP, WARMUP + 1, (WARMUP + total) // 2, total - 1, total, total + 10):
        assert schedule.lr_at(step) == pytest.approx(paper_pretrain_lr(step, total), rel=1e-12), step


def test_pretrain_model_sequences_and_sharding():
    pretrain = graph()["pretrain"].kwargs
    model = pretrain["model"]
    assert model.num_parameters() == 6_888_095_744 and not model.weight_tying
    assert model.max_sequence_length == SEQ_LEN == graph()["instances"].kwargs["seq_len"]
    assert pretrain["execution"].sharding == "full"  # FSDP full shard; the trainer shards per block
    assert graph()["training_batch"].kwargs["micro_batch_size"] == MICRO_BATCH


def test_anneal_lr_goes_linearly_from_2_3e_5_to_0_over_1000_steps():
    config = anneal_config()
    assert config.max_steps == ANNEAL_STEPS
    schedule = config.schedule
    assert schedule.lr_at(0) == pytest.approx(ANNEAL_START)
    assert schedule.lr_at(1) == pytest.approx(ANNEAL_START * (1 - 1 / ANNEAL_STEPS))
    assert schedule.lr_at(500) == pytest.approx(ANNEAL_START / 2)
    assert schedule.lr_at(ANNEAL_STEPS) == 0.0


def test_anneal_keeps_the_pretraining_settings_and_continues_its_data_order():
    anneal, pretrain = graph()["anneal"], graph()["pretrain"]
    config = anneal_config()
    assert config.optimizer == PAPER_OPTIMIZER
    assert config.max_grad_norm == 1.0 and config.precision == "bf16" and config.seed == SEED
    assert (config.global_batch_size, config.micro_batch_size) == (BATCH, MICRO_BATCH)
    assert anneal.kwargs["pretrained"] is pretrain
    assert anneal.kwargs["instances"] is pretrain.kwargs["instances"] is graph()["instances"]
    assert anneal.kwargs["data_order"] == pretrain.kwargs["data_order"]  # the same order, continued
    assert anneal.kwargs["execution"].sharding == "full"


def test_in_loop_evaluation_every_100_anneal_steps_and_1000_pretraining_steps():
    in_loop_eval = recipe_params("in_loop_eval")
    for config in in_loop_eval.values():
        InLoopEvalConfig.from_dict(config)
    assert (in_loop_eval["anneal"]["every"], in_loop_eval["pretrain"]["every"]) == (100, 1000)
