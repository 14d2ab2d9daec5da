"""Make a version's ONNX export once per machine, in a short-lived child process, while other loaders wait.

Without this, every pool process that found no export made its own: on a cold start or after a promotion each
one imported torch (about 10 s and 470 MB here), exported, and kept torch in memory until its next restart. Now
the first loader takes a file lock next to the cache, runs `python -m worker.pipeline.onnx_export` (which imports
torch, exports, checks and publishes through `onnx_cache.build_encoder`, then exits), and every other loader
blocks on the lock and finds the published export. No worker process imports torch on this path.

The lock is `flock` on a file in the cache directory: the kernel releases it when its holder dies, and it holds
across containers that share the volume on one host (not across hosts on NFS, where two exports may still race;
`onnx_cache` publishes with one rename, so a race costs time, not correctness).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from worker.pipeline.onnx_cache import version_folder

log = logging.getLogger(__name__)

EXPORT_TIMEOUT_S = 600.0  # an export takes 10-20 s here; a child this slow is stuck


@contextmanager
def export_lock(cache_dir: Path, version_name: str, *, timeout_s: float = EXPORT_TIMEOUT_S + 60) -> Iterator[bool]:
    """Hold the export lock of this version; yields False (unlocked) when the lock cannot be had in time."""
    folder = version_folder(cache_dir, version_name)
    path = folder.with_name(f"{folder.name}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a")
    except OSError as exc:
        log.warning("cannot create the export lock %s (%s); exporting without it", path, exc)
        yield False
        return
    with handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    log.warning("waited %.0f s for the export lock %s; exporting without it", timeout_s, path)
                    yield False
                    return
                time.sleep(0.2)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def layout_supported(model_dir: str) -> bool:
    """From the files alone: Transformer -> mean Pooling (-> Normalize) with a fast tokenizer, what the ONNX path
    reproduces (`onnx_backend.supported` decides for good on the loaded model). Spares a child for other models."""
    root = Path(model_dir)
    try:
        kinds = [module["type"].rsplit(".", 1)[-1] for module in json.loads((root / "modules.json").read_text())]
        pooling = json.loads((root / "1_Pooling" / "config.json").read_text())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    if not isinstance(pooling, dict):
        return False
    others = ("cls_token", "max_tokens", "mean_sqrt_len_tokens")
    mean = pooling.get("pooling_mode") in ("mean", "mean_tokens") or (
        pooling.get("pooling_mode_mean_tokens") is True and not any(pooling.get(f"pooling_mode_{o}") for o in others)
    )
    layout = kinds[:2] == ["Transformer", "Pooling"] and all(kind == "Normalize" for kind in kinds[2:])
    return layout and mean and (root / "tokenizer.json").is_file()


def export_in_child(model_dir: str, cache_dir: Path, version_name: str, *, threads: int, fingerprint: str) -> bool:
    """Export, check and publish this version in a child process; True when it published an export."""
    command = [
        sys.executable, "-m", "worker.pipeline.onnx_export", model_dir, str(cache_dir), version_name,
        "--threads", str(threads), "--fingerprint", fingerprint,
    ]  # fmt: skip
    started = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("exporting %s in a child process failed (%s)", version_name, exc)
        return False
    if done.returncode != 0:
        log.warning("exporting %s in a child process failed (exit %d): %s", version_name, done.returncode,
                    done.stderr.strip()[-1500:])  # fmt: skip
        return False
    log.info("exported %s to ONNX in %s in a child process (%.1f s)", version_name, cache_dir,
             time.perf_counter() - started)  # fmt: skip
    return True


def main(argv: list[str] | None = None) -> int:
    """Child entry point: 0 when the export is published, 3 when the model cannot take the ONNX path."""
    parser = argparse.ArgumentParser(prog="python -m worker.pipeline.onnx_export")
    parser.add_argument("model_dir")
    parser.add_argument("cache_dir", type=Path)
    parser.add_argument("version_name")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--fingerprint", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from sentence_transformers import SentenceTransformer

    from worker.pipeline.onnx_cache import build_encoder

    model = SentenceTransformer(args.model_dir, device="cpu", trust_remote_code=False).eval()
    encoder = build_encoder(model, args.cache_dir, args.version_name, args.threads, args.fingerprint)
    return 0 if encoder is not None else 3


if __name__ == "__main__":
    sys.exit(main())
