"""Training in a spawned child process, so a crash, hang or kill in training cannot take the server down."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flywheel.errors import TrainingError
from flywheel.learn.finetune import TrainConfig, TrainResult, train_into
from flywheel.types import LabelledPair, TrainingExample
from flywheel.util.files import move_into_place, prepare_tmp_dir


def train_in_subprocess(
    base_model: str,
    examples: Sequence[TrainingExample],
    out_dir: Path,
    config: TrainConfig,
    timeout_s: float | None = None,
    *,
    pairs: Sequence[LabelledPair] = (),
) -> TrainResult:
    """Run train_model in a spawned child, so a crash or hang in training cannot take the caller down.

    Args:
        base_model: As for train_model.
        examples: As for train_model.
        out_dir: As for train_model; only ever appears complete.
        config: Hyperparameters.
        timeout_s: Kill the child after this many seconds.
        pairs: As for train_model.

    Returns:
        The child's TrainResult.

    Raises:
        TrainingError: The child raised, died (signal, os._exit) or timed out; the message has the exit
            code and the child's last error, and `out_dir` is not created.
    """
    out_dir = Path(out_dir)
    config.validate()
    tmp = prepare_tmp_dir(out_dir)
    error_file = tmp.with_name(tmp.name + ".error")
    ctx = mp.get_context("spawn")
    child = ctx.Process(
        target=_child_main,
        args=(base_model, list(examples), list(pairs), str(tmp), asdict(config), str(error_file), os.getpid()),
        name="flywheel-train",
        daemon=True,
    )
    try:
        child.start()
        child.join(timeout_s)
        if child.is_alive():
            _stop(child)
            raise TrainingError(f"training timed out after {timeout_s:g} s and was killed")
        if child.exitcode != 0:
            status = _exit_status(child.exitcode)
            raise TrainingError(f"training process failed ({status}): {_read(error_file)}")
        meta = json.loads((tmp / "meta.json").read_text(encoding="utf-8"))
        move_into_place(tmp, out_dir)
    except BaseException:
        if child.is_alive():
            _stop(child)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        error_file.unlink(missing_ok=True)
    return TrainResult.from_meta(meta, out_dir)


def _exit_with_parent(parent_pid: int) -> None:
    """Exit when the parent is gone: after a kill -9 of the server, an orphaned child must not keep training
    and write a model into the registry that the restarted server has already cleaned."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _child_main(
    base_model: str,
    examples: list,
    pairs: list,
    tmp: str,
    config: dict[str, Any],
    error_file: str,
    parent_pid: int | None = None,
) -> None:
    """Entry point of the training child: train into `tmp`, or report the error to the parent and exit 1."""
    if parent_pid is not None:
        _exit_with_parent(parent_pid)
    try:
        train_into(base_model, examples, Path(tmp), TrainConfig(**config), True, pairs)
    except BaseException as exc:  # everything must reach the parent, as text
        trace = "".join(traceback.format_exception(exc))
        sys.stderr.write(trace)  # the full trace goes to the server's log; the parent gets the summary
        Path(error_file).write_text(f"{type(exc).__name__}: {exc}\n\n{trace}", encoding="utf-8")
        raise SystemExit(1) from None


def _stop(child: Any) -> None:
    """Terminate a child, escalating to SIGKILL when it ignores SIGTERM."""
    child.terminate()
    child.join(10)
    if child.is_alive():
        child.kill()
        child.join(10)


def _exit_status(code: int | None) -> str:
    """Human-readable exit status, naming the signal when the child was killed by one."""
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        return f"killed by {name}"
    return f"exit code {code}"


def _read(path: Path) -> str:
    """The child's one-line error report, or a note that it left none (e.g. a segfault)."""
    try:
        return path.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError):
        return "no error report (the process died before it could write one)"
