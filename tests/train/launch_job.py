"""Launch a pickled ``TrainingJob`` the way the pretrain step does, from its own process (so a test can
``kill -9`` it, or start two of them as two "nodes").

``python launch_job.py JOB.pkl NPROC_PER_NODE [NNODES RDZV_ENDPOINT RUN_ID]``
"""
import pickle
import sys
from pathlib import Path

from integrations.launcher import Rendezvous, launch_workers
from steps.train.runtime import worker_environment
from steps.train.worker import run_training_job


def main(job_file: str, nproc_per_node: str, nnodes: str = "1", endpoint: str | None = None,
         run_id: str = "test") -> None:
    job = pickle.loads(Path(job_file).read_bytes())
    launch_workers(run_training_job, (job,), int(nproc_per_node), Rendezvous(int(nnodes), endpoint, run_id),
                   environment=worker_environment())


if __name__ == "__main__":
    main(*sys.argv[1:])
