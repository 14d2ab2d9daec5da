"""Make a version's ONNX export once per machine, in a short-lived child process, while other loaders wait.

Without this, every pool process that found no export made its own: on a cold start or after a promotion each
one imported torch (about 10 s and 470 MB here), exported, and kept torch in memory until its next restart. Now
the first loader takes a file lock next to the cache, runs `python -m worker.pipeline.onnx_export` (which imports
torch, exports, checks and publishes through `onnx_cache.build_encoder`, then exits), and every other loader
blocks on the lock and finds the published export. No worker process imports torch on this path.

The lock is `flock` on a file in the cache directory, inherited by the child: it is released when the last of
them exits, so a loader killed mid-export does not let a second export start. It holds across containers that
share a volume on one host; where the filesystem has no locks (some NFS, FUSE or SMB mounts), the cache cannot be
written, or the holder is stuck, a loader serves torch instead of exporting. A failed export is remembered for an
hour (`<version>.failed`, with the model's fingerprint), so the other loaders do not each repeat it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from worker.pipeline.onnx_backend import reproducible
from worker.pipeline.onnx_cache import MANIFEST, version_folder

log = logging.getLogger(__name__)

EXPORT_TIMEOUT_S = 600.0  # an export takes 10-20 s here; a child this slow is stuck
LOCK_WAIT_S = EXPORT_TIMEOUT_S + 60  # longer than any holder may take
_FAILURE_MEMORY_S = 3600.0  # after this long a failed export is tried again (the disk may have been freed)


def export_once(model_dir: str, cache_dir: Path, version_name: str, *, threads: int, fingerprint: str) -> bool:
    """Have a child process publish this version's export unless one exists; True when there is one to load.

    False leaves the model to torch: the layout is not one the ONNX path reproduces, there is no lock to be had,
    or the export failed (now or within the last hour; the log says why).
    """
    if not layout_supported(model_dir):
        return False
    with export_lock(cache_dir, version_name) as lock:
        if lock is None:
            return False
        if (version_folder(cache_dir, version_name) / MANIFEST).is_file():
            return True  # published by the holder this loader waited for
        if _failed_recently(cache_dir, version_name, fingerprint):
            return False
        if _export_in_child(model_dir, cache_dir, version_name, threads=threads, fingerprint=fingerprint, lock=lock):
            return True
        _remember_failure(cache_dir, version_name, fingerprint)
        return False


@contextmanager
def export_lock(cache_dir: Path, version_name: str, *, timeout_s: float = LOCK_WAIT_S) -> Iterator[int | None]:
    """Hold the export lock of this version; yields its file descriptor, or None when it cannot be had."""
    path = _sibling(cache_dir, version_name, "lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a")
    except OSError as exc:
        log.warning("cannot create the export lock %s (%s); serving with torch", path, exc)
        yield None
        return
    with handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    log.warning("waited %.0f s for the export lock %s; serving with torch", timeout_s, path)
                    yield None
                    return
                time.sleep(0.2)
            except OSError as exc:  # ENOLCK, EOPNOTSUPP: a filesystem without locks
                log.warning("cannot lock %s (%s); serving with torch", path, exc)
                yield None
                return
        try:
            yield handle.fileno()
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sibling(cache_dir: Path, version_name: str, suffix: str) -> Path:
    folder = version_folder(cache_dir, version_name)
    return folder.with_name(f"{folder.name}.{suffix}")


def _failed_recently(cache_dir: Path, version_name: str, fingerprint: str) -> bool:
    try:
        failure = json.loads(_sibling(cache_dir, version_name, "failed").read_text())
        recent = time.time() - float(failure["at"]) < _FAILURE_MEMORY_S
        remembered = bool(recent and failure["source"] == fingerprint)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if remembered:
        log.info("the export of %s failed less than an hour ago; serving with torch", version_name)
    return remembered


def _remember_failure(cache_dir: Path, version_name: str, fingerprint: str) -> None:
    with contextlib.suppress(OSError):
        _sibling(cache_dir, version_name, "failed").write_text(json.dumps({"source": fingerprint, "at": time.time()}))


def layout_supported(model_dir: str) -> bool:
    """`onnx_backend.reproducible` from the files alone (the loaded model decides for good): spares a child for
    models the ONNX path does not take. A fast tokenizer shows as tokenizer.json."""
    root = Path(model_dir)
    try:
        modules = json.loads((root / "modules.json").read_text())
        kinds = [module["type"].rsplit(".", 1)[-1] for module in modules]
        pooling = json.loads((root / modules[1]["path"] / "config.json").read_text())
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        return False
    fast = (root / "tokenizer.json").is_file()
    return isinstance(pooling, dict) and reproducible(kinds, pooling, fast_tokenizer=fast)


def _export_in_child(
    model_dir: str, cache_dir: Path, version_name: str, *, threads: int, fingerprint: str, lock: int
) -> bool:
    """Export, check and publish this version in a child process that shares the lock; True when it published."""
    command = [
        sys.executable, "-m", "worker.pipeline.onnx_export", model_dir, str(cache_dir), version_name,
        "--threads", str(threads), "--fingerprint", fingerprint,
    ]  # fmt: skip
    started = time.perf_counter()
    try:  # the child inherits the environment `load_embedder` set up (offline hub, no tokenizer threads)
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S, check=False, pass_fds=(lock,)
        )
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
