"""Fine-tune on a Modal GPU: `flywheel train` on an exported pair snapshot, the model directory comes back.

    pip install 'flywheel[modal]' && modal setup
    modal run deploy/modal_train.py --snapshot flywheel-data/cycles/<cycle_id>/pairs.parquet --out ./v7-gpu

The snapshot is the Parquet file every cycle writes (train and held-out pairs); only the training side is
uploaded (the same stable split the cycle uses), as `query, document, label` JSONL. Plain pair files
(`query,document,label` or Quora's `question1,question2,is_duplicate` JSONL) work too: pass `--pairs`.
The returned folder is a normal model directory with meta.json (device "cuda", hyperparameters, duration);
evaluate it with `flywheel evaluate` before you let anything serve it.

`modal` is an optional dependency: this file imports without it (the helpers are tested on CPU), and only
`modal run` needs it.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

try:  # optional: `pip install 'flywheel[modal]'`
    import modal
except ImportError:  # pragma: no cover - the CPU test environment has no modal
    modal = None

APP_NAME = "flywheel-train"
GPU = os.environ.get("FLYWHEEL_MODAL_GPU", "A10G")  # any Modal GPU type: "T4", "L4", "A100", "H100", ...
TIMEOUT_S = int(os.environ.get("FLYWHEEL_MODAL_TIMEOUT_S", "7200"))
ROOT = Path(__file__).resolve().parent.parent


def export_training_pairs(snapshot: Path, out: Path, heldout_percent: int = 20) -> int:
    """Write the training side of a cycle's pairs.parquet as `query, document, label` JSONL.

    Args:
        snapshot: `<data_dir>/cycles/<cycle_id>/pairs.parquet`.
        out: the JSONL file to write.
        heldout_percent: the cycle's `heldout_percent` (held-out groups never leave the machine).

    Returns:
        The number of pairs written.
    """
    import pyarrow.parquet as pq

    from flywheel.cycle.split import is_heldout

    rows = pq.read_table(snapshot, columns=["group", "query", "doc_text", "label"]).to_pylist()
    train = [r for r in rows if not is_heldout(r["group"], heldout_percent)]
    with out.open("w", encoding="utf-8") as fh:
        for r in train:
            fh.write(json.dumps({"query": r["query"], "document": r["doc_text"], "label": int(r["label"])}) + "\n")
    return len(train)


def train_command(
    pairs: str, out: str, base: str | None, epochs: float, batch_size: int, max_minutes: float
) -> list[str]:
    """The `flywheel train` command line the GPU container runs."""
    cmd = [sys.executable, "-m", "flywheel", "train", "--pairs", pairs, "--out", out, "--epochs", str(epochs)]
    cmd += ["--batch-size", str(batch_size), "--max-minutes", str(max_minutes)]
    return cmd + (["--base", base] if base else [])


def pack(folder: Path) -> bytes:
    """A folder as tar.gz bytes (how the model directory travels back)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=".")
    return buffer.getvalue()


def unpack(data: bytes, out: Path) -> Path:
    """Extract a model directory packed by `pack` into `out` (which must not exist or be empty)."""
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(out, filter="data")  # "data": no absolute paths, links or devices from the archive
    return out


def train_on_gpu(pairs_jsonl: bytes, base: str | None, epochs: float, batch_size: int, max_minutes: float) -> bytes:
    """Runs inside the Modal container: write the pairs, run `flywheel train`, return the model as tar.gz."""
    with tempfile.TemporaryDirectory() as tmp:
        pairs = Path(tmp) / "pairs.jsonl"
        pairs.write_bytes(pairs_jsonl)
        out = Path(tmp) / "model"
        subprocess.run(train_command(str(pairs), str(out), base, epochs, batch_size, max_minutes), check=True)
        return pack(out)


if modal is not None:
    image = (
        modal.Image.debian_slim(python_version="3.11")
        .pip_install_from_pyproject(str(ROOT / "pyproject.toml"))  # CUDA torch wheels on Linux by default
        .env({"HF_HUB_OFFLINE": "1"})  # the packaged MiniLM loads offline; hub names need this removed
        .add_local_python_source("flywheel")
    )
    app = modal.App(APP_NAME, image=image)
    remote_train = app.function(gpu=GPU, timeout=TIMEOUT_S)(train_on_gpu)

    @app.local_entrypoint()
    def main(
        out: str,
        snapshot: str = "",
        pairs: str = "",
        base: str = "",
        epochs: float = 1.0,
        batch_size: int = 128,
        max_minutes: float = 60.0,
        heldout_percent: int = 20,
    ) -> None:
        """Upload the training pairs, train on a GPU, and unpack the model directory into `out`."""
        if bool(snapshot) == bool(pairs):
            raise SystemExit("pass exactly one of --snapshot (a cycle's pairs.parquet) or --pairs (JSONL)")
        if snapshot:
            with tempfile.TemporaryDirectory() as tmp:
                exported = Path(tmp) / "pairs.jsonl"
                n = export_training_pairs(Path(snapshot), exported, heldout_percent)
                print(f"exported {n} training pairs from {snapshot}")
                data = exported.read_bytes()
        else:
            data = Path(pairs).read_bytes()
        model = remote_train.remote(data, base or None, epochs, batch_size, max_minutes)
        folder = unpack(model, Path(out))
        meta = json.loads((folder / "meta.json").read_text())
        print(f"model in {folder}: {meta['steps']} steps in {meta['duration_s']:.0f} s on {meta['device']}")
