"""Loading the model: a CPU worker serves a checked ONNX export, from its files alone after the first load."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from worker.errors import ModelLoadError
from worker.pipeline.embed import load_embedder, resolve_model_path
from worker.pipeline.onnx_cache import MANIFEST
from worker.settings import DEFAULT_MODEL, ModelSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TEXTS = ["CAC went up after the price change", "organic traffic from SEO", "", "word " * 700]
CPU = ModelSettings(device="cpu")

# Loads the embedder in a fresh interpreter and reports what it imported, with its vectors of TEXTS.
_CHILD = """
import json, logging, sys
logging.basicConfig(level=logging.INFO)
from pathlib import Path
from worker.pipeline.embed import load_embedder
from worker.settings import ModelSettings
embedder = load_embedder(ModelSettings(device="cpu"), cache_dir=Path(sys.argv[1]))
result = embedder.embed(json.loads(sys.argv[2]))
print(json.dumps({"backend": embedder.backend, "dims": embedder.dims, "vectors": result.vectors.tolist(),
                  "chunks": result.chunks_total, "torch": "torch" in sys.modules,
                  "sentence_transformers": "sentence_transformers" in sys.modules}))
"""


@pytest.fixture(scope="module")
def onnx_cache(data_dir: Path) -> Path:
    """The suite's cache (the one its workers use), with the default model exported into it."""
    cache = data_dir / "onnx"
    load_embedder(CPU, cache_dir=cache)
    return cache


def start_child(cache: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-c", _CHILD, str(cache), json.dumps(TEXTS)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def child_result(child: subprocess.Popen[str]) -> tuple[dict[str, object], str]:
    """What the child printed, and its log."""
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1]), err


def load_in_child(cache: Path) -> dict[str, object]:
    return child_result(start_child(cache))[0]


def default_export(cache: Path) -> Path:
    """The folder of the default model's export in `cache`."""
    (folder,) = [p for p in cache.iterdir() if p.name.startswith("all-MiniLM-L6-v2@") and (p / MANIFEST).is_file()]
    return folder


def test_a_cpu_process_serves_the_export_without_importing_torch(onnx_cache: Path) -> None:
    folder = default_export(onnx_cache)
    assert {p.name for p in folder.iterdir()} == {"model.onnx", "tokenizer.json", MANIFEST}

    child = load_in_child(onnx_cache)

    assert child["backend"] == "onnx"
    assert child["torch"] is False and child["sentence_transformers"] is False
    reference = load_embedder(CPU.model_copy(update={"backend": "torch"})).embed(TEXTS)
    vectors = np.array(child["vectors"], dtype=np.float32)
    assert np.min(np.sum(vectors * reference.vectors, axis=1)) > 0.9999
    assert child["chunks"] == reference.chunks_total == [1, 1, 1, 3]


def _garbage_model(folder: Path) -> None:
    (folder / "model.onnx").write_bytes(b"not a model")


def _other_settings(folder: Path) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "source": "made-from-other-settings"}))


@pytest.mark.parametrize("damage", [_garbage_model, _other_settings], ids=["garbage-model", "other-settings"])
def test_a_damaged_or_stale_export_is_replaced_from_the_weights(
    onnx_cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Callable[[Path], None]
) -> None:
    cache = tmp_path / "onnx"
    shutil.copytree(onnx_cache, cache)
    damage(default_export(cache))

    with caplog.at_level(logging.INFO):
        embedder = load_embedder(CPU, cache_dir=cache)

    assert "cannot be used" in caplog.text and "in a child process" in caplog.text
    assert embedder.backend == "onnx"
    folder = default_export(cache)
    assert (folder / "model.onnx").stat().st_size > 1_000_000
    assert json.loads((folder / MANIFEST).read_text())["source"] != "made-from-other-settings"
    assert load_in_child(cache)["backend"] == "onnx"


def test_the_torch_backend_setting_neither_reads_nor_writes_the_cache(onnx_cache: Path, tmp_path: Path) -> None:
    cache = tmp_path / "onnx"
    shutil.copytree(onnx_cache, cache)
    _garbage_model(default_export(cache))

    embedder = load_embedder(CPU.model_copy(update={"backend": "torch"}), cache_dir=cache)

    assert embedder.backend == "torch"
    assert (default_export(cache) / "model.onnx").read_bytes() == b"not a model"  # not read, so not replaced


def test_a_cold_start_exports_once_and_no_loader_imports_torch(tmp_path: Path) -> None:
    cache = tmp_path / "onnx"

    children = [start_child(cache) for _ in range(2)]  # two pool processes starting on an empty cache
    results = [child_result(child) for child in children]

    assert all(result["backend"] == "onnx" and result["torch"] is False for result, _ in results)
    assert sum(log.count("in a child process (") for _, log in results) == 1  # the other one waited for it
    assert [p.name for p in cache.iterdir() if p.is_dir()] == [default_export(cache).name]  # no staging left


def test_when_the_export_cannot_be_written_torch_serves(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")

    with caplog.at_level(logging.INFO):
        embedder = load_embedder(CPU, cache_dir=blocker / "onnx")

    assert embedder.backend == "torch"
    assert "cannot create the export lock" in caplog.text and "in a child process" not in caplog.text
    assert embedder.embed(TEXTS).vectors.shape == (len(TEXTS), 384)


def test_a_failed_export_is_not_repeated_by_every_loader(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = tmp_path / "broken-model"
    shutil.copytree(resolve_model_path(DEFAULT_MODEL), broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    settings = CPU.model_copy(update={"name_or_path": str(broken)})

    with caplog.at_level(logging.INFO), pytest.raises(ModelLoadError, match="could not load model"):
        load_embedder(settings, cache_dir=tmp_path / "onnx")
    assert "in a child process failed" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO), pytest.raises(ModelLoadError, match="could not load model"):
        load_embedder(settings, cache_dir=tmp_path / "onnx")  # the next pool process

    assert "failed less than an hour ago" in caplog.text and "in a child process" not in caplog.text
