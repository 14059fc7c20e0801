"""Train on an instances artifact with the shared trainer in a 2-process gloo group (launched by torchrun).

``python -m torch.distributed.run --standalone --nproc-per-node 2 two_rank_training.py SPEC.json`` where the
spec holds ``instances`` (path and manifest of the artifact), ``model``, ``data_order``, ``train`` and
``metrics`` (the file rank 0 writes every step's metrics to, one JSON object a line). Gradients are averaged
by DistributedDataParallel; each rank feeds the model its own rows of every global batch.
"""
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from olmo_model import Olmo
from steps.common.artifacts import Artifact
from steps.train.steps import TrainingStep, model_config, pretraining_batches
from steps.train.trainer import train


def main(spec_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    dist.init_process_group("gloo")
    instances = Artifact(Path(spec["instances"]["path"]), spec["instances"]["manifest"])
    config = TrainingStep.train_config(spec["train"], global_batch_size=spec["data_order"]["global_batch_size"])
    model = Olmo(model_config(spec["model"]))
    model.reset_parameters(torch.Generator().manual_seed(config.seed))
    state = train(DistributedDataParallel(model), pretraining_batches(instances, spec["data_order"]), config,
                  log=lambda metrics: None)
    if dist.get_rank() == 0:
        Path(spec["metrics"]).write_text("".join(json.dumps(m) + "\n" for m in state.history))
    dist.barrier()  # no rank tears gloo down while the other still uses it
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
