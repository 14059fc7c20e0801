"""Workers that fail the ways a training worker does, launched as the training steps launch theirs.

``python failing_workers.py NAME [NPROC]`` runs worker ``NAME`` under ``launch_workers`` and prints, as its last
line, the JSON ``{"type": ..., "message": ..., "traceback": ...}`` of what the launcher raised.
"""
import json
import os
import signal
import sys

from integrations.launcher import launch_workers


def _no_error_file() -> None:
    """What a full disk does to the elastic agent's channel: its error file cannot be written."""
    os.environ["TORCHELASTIC_ERROR_FILE"] = "/nonexistent-olmo-tango-test/error.json"


def disk_full() -> None:
    _no_error_file()
    raise OSError(28, "No space left on device")


def save_failed() -> None:
    _no_error_file()
    raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 5632 vs 5520")


def exits() -> None:
    sys.exit(3)


def killed() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def rank_one_fails() -> None:
    if int(os.environ["RANK"]) == 1:
        _no_error_file()
        raise ValueError("rank one's own problem")


WORKERS = {function.__name__: function for function in (disk_full, save_failed, exits, killed, rank_one_fails)}


if __name__ == "__main__":
    name, nproc = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1
    try:
        launch_workers(WORKERS[name], (), nproc)
        outcome = {"type": None}
    except Exception as error:  # noqa: BLE001 (the test reads what was raised)
        outcome = {"type": type(error).__name__, "message": str(error),
                   "traceback": getattr(error, "worker_traceback", None)}
    print(json.dumps(outcome))
