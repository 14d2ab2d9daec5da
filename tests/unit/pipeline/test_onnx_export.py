"""The file-level checks around the one-per-machine ONNX export: which layouts go to the child, and the lock."""

from __future__ import annotations

import errno
import fcntl
import json
from pathlib import Path

import pytest

from worker.pipeline.onnx_export import export_lock, layout_supported

MEAN = {"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False}
MODULES = ["Transformer", "Pooling", "Normalize"]


def model_dir(root: Path, *, modules: list[str] = MODULES, pooling: object = MEAN, tokenizer: bool = True) -> str:
    (root / "1_Pooling").mkdir(parents=True)
    paths = {"Pooling": "1_Pooling"}
    listed = [{"type": f"sentence_transformers.models.{m}", "path": paths.get(m, "")} for m in modules]
    (root / "modules.json").write_text(json.dumps(listed))
    (root / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    if tokenizer:
        (root / "tokenizer.json").write_text("{}")
    return str(root)


def test_a_mean_pooling_model_with_a_fast_tokenizer_takes_the_onnx_path(tmp_path: Path) -> None:
    assert layout_supported(model_dir(tmp_path))
    assert layout_supported(model_dir(tmp_path / "new-style", pooling={"pooling_mode": "mean"}))
    assert layout_supported(model_dir(tmp_path / "unnormalized", modules=["Transformer", "Pooling"]))


@pytest.mark.parametrize(
    "layout",
    [
        {"pooling": {**MEAN, "pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}},
        {"pooling": {**MEAN, "pooling_mode_max_tokens": True}},
        {"pooling": {**MEAN, "pooling_mode_lasttoken": True}},
        {"modules": ["Transformer", "Pooling", "Dense", "Normalize"]},
        {"tokenizer": False},
        {"pooling": "not a mapping"},
    ],
    ids=["cls", "mean-and-max", "last-token", "dense-head", "slow-tokenizer", "garbage"],
)
def test_other_layouts_stay_on_torch_without_a_child(tmp_path: Path, layout: dict[str, object]) -> None:
    assert not layout_supported(model_dir(tmp_path, **layout))  # type: ignore[arg-type]


@pytest.mark.slow
def test_the_loaded_model_and_its_files_agree() -> None:
    from sentence_transformers import SentenceTransformer

    from worker.pipeline.embed import resolve_model_path
    from worker.pipeline.onnx_backend import supported

    path = resolve_model_path("all-MiniLM-L6-v2")
    assert layout_supported(path)
    assert supported(SentenceTransformer(path, device="cpu"))


def test_a_missing_directory_is_not_supported(tmp_path: Path) -> None:
    assert not layout_supported(str(tmp_path / "absent"))


def test_the_export_lock_is_held_by_one_loader_at_a_time(tmp_path: Path) -> None:
    with export_lock(tmp_path, "org/model@abc") as first:
        with export_lock(tmp_path, "org/model@abc", timeout_s=0.3) as second:
            assert first is not None and second is None  # the second gave up waiting: it serves torch
        with export_lock(tmp_path, "org/model@other", timeout_s=0.3) as other_version:
            assert other_version is not None
    with export_lock(tmp_path, "org/model@abc", timeout_s=0.3) as after_release:
        assert after_release is not None


def test_a_cache_that_cannot_be_created_gives_no_lock(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with export_lock(blocker / "onnx", "model@abc", timeout_s=0.3) as lock:
        assert lock is None


def test_a_filesystem_without_locks_gives_no_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_locks(*_: object) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with export_lock(tmp_path, "model@abc", timeout_s=0.3) as lock:
        assert lock is None
