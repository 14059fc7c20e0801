"""TRL's side of the adaptation benchmark: one SFT or DPO run with TRL's own trainers, in its own process.

``python benchmarks/adapt_trl.py sft|dpo '<json options>'`` loads ``transformers``' ``OlmoForCausalLM`` from the
benchmark's exported weights (the same as ours) and trains it with TRL's ``SFTTrainer`` or ``DPOTrainer`` on the
benchmark's examples, already tokenized (the token ids and trained positions of our encoding, in the order our
batches take them, read by a sequential sampler so that every step trains on the same examples as ours), and prints
one JSON line: every step's loss, the wall and CPU seconds between the ends of consecutive steps (a
``TrainerCallback``'s ``on_step_end``), the reference pass's seconds (DPO) and the process's peak memory. It imports
nothing of this project.

Settings, as on our side: fp32 on the CPU, the same threads, ``per_device_train_batch_size`` = the batch, one
micro-batch a step, a constant LR, AdamW (0.9, 0.95, eps 1e-5, no weight decay; transformers' default
implementation, ``adamw_torch_fused``, as ours), clipping at 1.0, no gradient checkpointing (TRL's default turns
it on; ours has none), no packing, no padding-free batches; OLMo has no dropout. DPO: the sigmoid loss with ``beta``,
``precompute_ref_log_probs=True`` with ``precompute_ref_batch_size`` = the batch (ours computes the reference
log-probs once before training, ``reference_batch_size`` pairs at a time).

What is changed in TRL, none of it in a timed step:

- ``SFTTrainer`` gets ``input_ids`` and ``labels`` columns (its "already processed" path): no chat template or
  tokenization of its own.
- ``DPOTrainer._prepare_dataset`` (tokenization) is skipped: the dataset holds ``prompt_ids``, ``chosen_ids``,
  ``rejected_ids`` as its tokenization would. Its collator, ``DataCollatorForPreference``, scores every completion
  token; ours does not score the template's newline after EOS, so ``ScoredPreferenceCollator`` sets
  ``completion_mask`` to our trained positions after TRL's collator made the batch (the same loss as ours).
- ``DPOTrainer._precompute_ref_logps`` is timed.
"""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trainer_arguments(options: dict[str, Any]) -> dict[str, Any]:
    """The ``TrainingArguments`` both of TRL's configs get."""
    return {
        "output_dir": str(Path(options["run_dir"]) / "trl"), "per_device_train_batch_size": options["batch"],
        "gradient_accumulation_steps": 1, "max_steps": options["steps"], "learning_rate": options["lr"],
        "lr_scheduler_type": "constant", "warmup_steps": 0, "weight_decay": 0.0, "adam_beta1": 0.9,
        "adam_beta2": 0.95, "adam_epsilon": 1e-5, "max_grad_norm": 1.0, "optim": "adamw_torch_fused",
        "gradient_checkpointing": False, "bf16": False, "fp16": False, "use_cpu": True, "report_to": "none",
        "save_strategy": "no", "logging_steps": 1, "disable_tqdm": True, "dataloader_num_workers": 0,
        "train_sampling_strategy": "sequential", "seed": options["seed"], "max_length": options["max_length"],
    }


def clock_callback():
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        """Wall and CPU clocks at the start of training and at the end of every step."""

        def __init__(self) -> None:
            self.wall: list[float] = []
            self.cpu: list[float] = []

        def tick(self) -> None:
            self.wall.append(time.perf_counter())
            self.cpu.append(time.process_time())

        def on_train_begin(self, args, state, control, **kwargs):
            self.threads = torch.get_num_threads()
            self.tick()

        def on_step_end(self, args, state, control, **kwargs):
            self.tick()

    return Clock()


def load_model(options: dict[str, Any]):
    from transformers import AutoTokenizer, OlmoForCausalLM

    model = OlmoForCausalLM.from_pretrained(options["hf_model"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(options["hf_model"])
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(options["pad_token_id"])
    return model, tokenizer


def run_sft(options: dict[str, Any], clock) -> dict[str, Any]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows = [{"input_ids": ids, "labels": labels} for ids, labels in json.loads(Path(options["items"]).read_text())]
    model, tokenizer = load_model(options)
    args = SFTConfig(**trainer_arguments(options), packing=False, padding_free=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         callbacks=[clock])
    if trainer.data_collator.pad_token_id != options["pad_token_id"]:
        raise RuntimeError(f"TRL pads with {trainer.data_collator.pad_token_id}, ours with {options['pad_token_id']}")
    trainer.train()
    return {"trainer": trainer}


def run_dpo(options: dict[str, Any], clock) -> dict[str, Any]:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    class ScoredPreferenceCollator(DataCollatorForPreference):
        """TRL's collator, then ``completion_mask`` = the positions our encoding trains on (``*_scored``)."""

        def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
            batch = super().torch_call(examples)
            scored = [example["chosen_scored"] for example in examples] + [
                example["rejected_scored"] for example in examples]
            mask = torch.zeros_like(batch["completion_mask"])
            for row, positions in enumerate(scored):
                mask[row, : len(positions)] = torch.tensor(positions, dtype=mask.dtype)
            batch["completion_mask"] = mask
            return batch

    class Trainer(DPOTrainer):
        reference_seconds = reference_cpu_seconds = 0.0

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset  # already tokenized: prompt_ids, chosen_ids, rejected_ids

        def _precompute_ref_logps(self, dataset, name, batch_size):
            wall, cpu = time.perf_counter(), time.process_time()
            out = super()._precompute_ref_logps(dataset, name, batch_size)
            type(self).reference_seconds += time.perf_counter() - wall
            type(self).reference_cpu_seconds += time.process_time() - cpu
            return out

    rows = []
    for (chosen, chosen_labels), (rejected, rejected_labels) in json.loads(Path(options["items"]).read_text()):
        start = next(i for i, label in enumerate(chosen_labels) if label != options["ignore_index"])
        if chosen[:start] != rejected[:start]:
            raise RuntimeError("chosen and rejected do not share their prompt")
        rows.append({"prompt_ids": chosen[:start], "chosen_ids": chosen[start:], "rejected_ids": rejected[start:],
                     "chosen_scored": [int(label != options["ignore_index"]) for label in chosen_labels],
                     "rejected_scored": [int(label != options["ignore_index"]) for label in rejected_labels]})
    model, tokenizer = load_model(options)
    args = DPOConfig(**trainer_arguments(options), disable_dropout=True, beta=options["beta"], loss_type=["sigmoid"],
                     precompute_ref_log_probs=True, precompute_ref_batch_size=options["batch"],
                     remove_unused_columns=False)  # keeps the *_scored columns for the collator
    collator = ScoredPreferenceCollator(pad_token_id=options["pad_token_id"], max_length=options["max_length"])
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                      data_collator=collator, callbacks=[clock])
    if Trainer.reference_seconds == 0.0:
        raise RuntimeError("DPOTrainer did not precompute the reference log-probs")
    trainer.train()
    return {"trainer": trainer, "reference_seconds": Trainer.reference_seconds,
            "reference_cpu_seconds": Trainer.reference_cpu_seconds}


def run(stage: str, options: dict[str, Any]) -> dict[str, Any]:
    torch.manual_seed(options["seed"])
    torch.set_num_threads(options["threads"])
    clock = clock_callback()
    found = {"sft": run_sft, "dpo": run_dpo}[stage](options, clock)
    trainer = found.pop("trainer")
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    if len(losses) != options["steps"] or len(clock.wall) != options["steps"] + 1:
        raise RuntimeError(f"expected {options['steps']} steps, logged {len(losses)} losses and "
                           f"{len(clock.wall) - 1} step ends")
    return {
        "losses": losses,
        # step k (k >= 2): from the end of step k-1 to the end of step k, as on our side (step 1's interval from
        # the start of training is left out)
        "step_seconds": [b - a for a, b in zip(clock.wall[1:], clock.wall[2:])],
        "step_cpu_seconds": [b - a for a, b in zip(clock.cpu[1:], clock.cpu[2:])],
        "peak_rss_mb": peak_rss_mb(), "torch_threads": clock.threads, **found,
    }


def main() -> None:
    stage, options = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(run(stage, options)), flush=True)


if __name__ == "__main__":
    main()
