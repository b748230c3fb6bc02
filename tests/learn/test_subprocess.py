"""Training in a child process: a result back on success; an exception, a kill and a timeout become TrainingError."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from flywheel.errors import TrainingError
from flywheel.learn.finetune import TrainConfig
from flywheel.learn.subprocess import train_in_subprocess
from tests.helpers.factories import make_training_examples


@pytest.mark.slow
def test_train_in_subprocess_success_and_failures(tiny: str, tmp_path: Path) -> None:
    """The child trains and returns a result; an exception, a kill and a timeout become TrainingError."""
    result = train_in_subprocess(
        tiny, make_training_examples(), tmp_path / "ok", TrainConfig(batch_size=8, max_steps=2)
    )
    assert result.steps == 2 and (tmp_path / "ok" / "meta.json").is_file()

    with pytest.raises(TrainingError, match=r"exit code 1\): InvalidInput: cannot load base model"):
        train_in_subprocess(str(tmp_path / "no-such-model"), make_training_examples(), tmp_path / "bad", TrainConfig())
    assert not (tmp_path / "bad").exists()

    def crash_child() -> None:
        """Simulate a segfault: send SIGSEGV to the training child once it runs."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            children = [c for c in multiprocessing.active_children() if c.name == "flywheel-train"]
            if children:
                time.sleep(1.0)
                os.kill(children[0].pid, signal.SIGSEGV)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=crash_child)
    killer.start()
    with pytest.raises(TrainingError, match="killed by SIGSEGV"):
        train_in_subprocess(tiny, make_training_examples(2000), tmp_path / "crash", TrainConfig(batch_size=4))
    killer.join()

    with pytest.raises(TrainingError, match="timed out"):
        train_in_subprocess(tiny, make_training_examples(), tmp_path / "slow", TrainConfig(), timeout_s=0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok"]
