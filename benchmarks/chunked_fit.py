"""One chunk of a long ``python -m framework fit`` that spans several short GPU slots (docs/framework.md, "Runs across
short GPU slots").

    python benchmarks/chunked_fit.py --run NAME --config CONFIG.yaml --seconds 420 --out $OUT [--test-after] \\
        [-- further CLI overrides]

Each call (one slot):

1. restores ``<state-dir>/NAME/`` from ``<state-dir>/NAME.tar`` (or its ``.partNN`` pieces) when the previous slot's
   archive was carried in (and no unpacked folder is there yet);
2. runs ``fit`` with the config, a CSV logger in ``<state-dir>/NAME/logs`` (one ``metrics_<chunk>_<stage>.csv`` per
   chunk and stage; the W&B logger is
   replaced because the GPU image has no wandb — with ``--wandb``, a W&B offline run with id NAME and ``resume=allow``
   is kept instead, and every chunk continues that run), :class:`~framework.callbacks.epoch_time_limit.EpochBoundaryTimeLimit`
   (``--seconds`` of training, checkpoint ``<state-dir>/NAME/chunk.ckpt``),
   :class:`~framework.callbacks.rng_state.RNGStateCheckpoint`, a hard ``--trainer.max_time`` ``--hard-seconds`` as a
   safety net, and ``--ckpt_path chunk.ckpt`` when a previous chunk left one;
3. if the fit has finished and ``--test-after`` is given, runs ``test`` on the best checkpoint of the config's
   ``ModelCheckpoint`` (or ``chunk.ckpt`` when there is none);
4. writes ``<out>/NAME.tar`` — the whole state folder except ``last.ckpt`` (the chunk checkpoint, the best
   checkpoint the config's ``ModelCheckpoint`` keeps, the metrics CSV, ``chunk.json``) — split into pieces of at most
   ``--piece-mib`` MiB when larger, so it comes back through a size-limited output folder.

``chunk.json`` in the state folder records every chunk (steps before and after, seconds, whether training finished).
Generated data are not carried: every chunk regenerates them from the config's seed (deterministic, same cache
fingerprint).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from framework.atomic_files import write_json_atomic  # noqa: E402


def restore_state(state_dir: Path, run: str) -> None:
    folder = state_dir / run
    if folder.exists():
        return
    pieces = sorted(state_dir.glob(f"{run}.tar.part*"))
    archive = state_dir / f"{run}.tar"
    if pieces and not archive.exists():
        with archive.open("wb") as out:
            for piece in pieces:
                out.write(piece.read_bytes())
    if archive.exists():
        with tarfile.open(archive) as tar:
            tar.extractall(state_dir, filter="data")
        print(f"restored {folder} from {archive.name}", flush=True)


def pack_state(state_dir: Path, run: str, out: Path, piece_mib: float) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"{run}.tar"
    tmp = archive.with_suffix(".tar.tmp")
    with tarfile.open(tmp, "w") as tar:
        tar.add(state_dir / run, arcname=run, filter=lambda info: None if info.name.endswith("last.ckpt") else info)
    os.replace(tmp, archive)
    limit = int(piece_mib * 2**20)
    if archive.stat().st_size <= limit:
        return [archive]
    data, pieces = archive.read_bytes(), []
    for index in range(0, len(data), limit):
        piece = out / f"{run}.tar.part{index // limit:02d}"
        piece.write_bytes(data[index:index + limit])
        pieces.append(piece)
    archive.unlink()
    return pieces


def _set_aside_metrics(folder: Path, label: str) -> None:
    """Rename the CSV logger's ``metrics.csv`` to ``metrics_<label>.csv``: Lightning's CSV writer, started in a new
    process on an existing file, rewrites it with only the new process's columns, losing earlier chunks' rows."""
    current = folder / "logs" / "version_0" / "metrics.csv"
    if current.exists():
        os.replace(current, current.with_name(f"metrics_{label}.csv"))


def _global_step(path: Path) -> int | None:
    if not path.exists():
        return None
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="name of the long run (letters, digits, '_', '-')")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--seconds", required=True, type=float, help="training budget of this chunk")
    parser.add_argument("--hard-seconds", type=float, default=None,
                        help="Lightning max_time as a hard stop (default: seconds + 120)")
    parser.add_argument("--state-dir", type=Path, default=Path(".chunks"))
    parser.add_argument("--out", type=Path, required=True, help="where the archive of the state goes ($OUT)")
    parser.add_argument("--piece-mib", type=float, default=15.0)
    parser.add_argument("--test-after", action="store_true", help="run `test` once the fit has finished")
    parser.add_argument("--wandb", action="store_true", help="keep a W&B offline logger (id = --run, resumed)")
    parser.add_argument("overrides", nargs="*", help="further CLI overrides (after --)")
    args = parser.parse_args()
    if not args.run.replace("_", "").replace("-", "").isalnum():
        parser.error(f"--run must be letters, digits, '_' and '-', got {args.run!r}")
    if not args.config.is_file():
        parser.error(f"--config {args.config} is not a file")
    if args.seconds <= 0:
        parser.error(f"--seconds must be > 0, got {args.seconds}")
    hard = args.hard_seconds if args.hard_seconds is not None else args.seconds + 120
    state_dir = args.state_dir.resolve()
    folder = state_dir / args.run
    restore_state(state_dir, args.run)
    folder.mkdir(parents=True, exist_ok=True)
    chunk = folder / "chunk.ckpt"
    before = _global_step(chunk)
    if args.wandb:
        logger = ["--trainer.logger=framework.loggers.WandbRunLogger", f"--trainer.logger.init_args.save_dir={folder}",
                  f"--trainer.logger.init_args.id={args.run}", "--trainer.logger.init_args.resume=allow"]
    else:
        logger = ["--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.init_args.save_dir={folder}",
                  "--trainer.logger.init_args.name=logs", "--trainer.logger.init_args.version=0"]
    days, rest = divmod(int(hard), 86_400)
    hours, rest = divmod(rest, 3600)
    fit = [sys.executable, "-m", "framework", "fit", "--config", str(args.config), *logger,
           "--trainer.callbacks+=framework.callbacks.epoch_time_limit.EpochBoundaryTimeLimit",
           f"--trainer.callbacks.seconds={args.seconds}", f"--trainer.callbacks.checkpoint_path={chunk}",
           "--trainer.callbacks+=framework.callbacks.rng_state.RNGStateCheckpoint",
           f"--trainer.max_time={days:02d}:{hours:02d}:{rest // 60:02d}:{rest % 60:02d}", *args.overrides]
    if before is not None:
        fit.append(f"--ckpt_path={chunk}")
    print("$", " ".join(fit), flush=True)
    start = time.perf_counter()
    chunk_index = len(json.loads((folder / "chunk.json").read_text())) if (folder / "chunk.json").exists() else 0
    code = subprocess.run(fit, cwd=REPO).returncode
    seconds = time.perf_counter() - start
    _set_aside_metrics(folder, f"{chunk_index:02d}_fit")
    after = _global_step(chunk)
    record = {"run": args.run, "config": str(args.config), "overrides": args.overrides, "exit_code": code,
              "steps_before": before, "steps_after": after, "fit_seconds": round(seconds, 1),
              "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    finished = code == 0 and after is not None and (before is None or after > before) and _finished(fit, after)
    record["finished"] = finished
    if finished and args.test_after:
        best = sorted(folder.rglob("epoch=*.ckpt"), key=os.path.getmtime)
        target = best[-1] if best else chunk
        test = [sys.executable, "-m", "framework", "test", "--config", str(args.config), *logger, *args.overrides,
                f"--ckpt_path={target}"]
        print("$", " ".join(test), flush=True)
        record["test_exit_code"] = subprocess.run(test, cwd=REPO).returncode
        _set_aside_metrics(folder, f"{chunk_index:02d}_test")
        record["test_checkpoint"] = target.name
    history = json.loads((folder / "chunk.json").read_text()) if (folder / "chunk.json").exists() else []
    history.append(record)
    write_json_atomic(folder / "chunk.json", history, indent=1, keep_nonfinite=True)
    files = pack_state(state_dir, args.run, args.out, args.piece_mib)
    sizes = {f.name: round(f.stat().st_size / 2**20, 2) for f in files}
    print(json.dumps({**record, "archive_mib": sizes}), flush=True)
    if code != 0:
        raise SystemExit(code)


def _finished(fit_command: list[str], step: int) -> bool:
    """Whether ``step`` reached the run's ``max_steps`` (from the command's overrides or the config)."""
    for arg in reversed(fit_command):
        if arg.startswith("--trainer.max_steps="):
            return step >= int(arg.split("=", 1)[1])
    import yaml

    config = yaml.safe_load(Path(fit_command[fit_command.index("--config") + 1]).read_text())
    max_steps = (config.get("trainer") or {}).get("max_steps", -1)
    return max_steps is not None and max_steps > 0 and step >= max_steps


if __name__ == "__main__":
    main()
