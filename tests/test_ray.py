"""The Ray path on a local 2-CPU instance gives what the single-process path gives."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embengine import ops
from embengine.bulk import Fields, embed_files, read_output
from embengine.engine import Engine

ray = pytest.importorskip("ray", reason="the Ray path needs the 'ray' extra")
pq = pytest.importorskip("pyarrow.parquet")

from embengine.distributed.ray import dedup_pairs, embed_files_ray, init_ray  # noqa: E402


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A private 2-CPU Ray instance. Ray workers put the driver's working directory first
    on sys.path, so start them outside the source tree: they must import the installed
    package (with its native modules), as a user's workers would."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("ray-cwd"))
        init_ray("local", num_cpus=2)
        yield
        ray.shutdown()


def test_distributed_dedup_pairs_equal_the_single_process_pairs(
    local_ray: None, rng: np.random.Generator
) -> None:
    base = rng.standard_normal((120, 24)).astype(np.float32)
    x = np.concatenate([base, base[:40] + 0.05 * rng.standard_normal((40, 24))]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    expected = ops.pairs_above(x, 0.9)
    assert len(expected[0]) >= 40  # the planted near-duplicates, across blocks
    for blocks in (1, 3, 7):
        got = dedup_pairs(x, 0.9, blocks=blocks)
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_array_equal(g, e)


def test_ray_embedding_matches_the_single_process_path(
    local_ray: None, tmp_path: Path, engine: Engine
) -> None:
    texts = [f"ray record {i}: {w} weather today" for i, w in enumerate(["sunny", "wet"] * 12)]
    path = tmp_path / "in.jsonl"
    path.write_text(
        "".join(json.dumps({"key": 1000 + i, "body": t}) + "\n" for i, t in enumerate(texts))
    )
    fields = Fields("body", "key")
    rows = embed_files_ray(
        [path], tmp_path / "ray", fields=fields, device="cpu", actors=2, cpus_per_actor=0.5
    )
    assert rows == len(texts)
    on_ray = pq.read_table(tmp_path / "ray").sort_by("id")
    embed_files(engine, [path], tmp_path / "single", fields=fields)
    single = read_output(tmp_path / "single").sort_by("id")
    assert on_ray.column_names == ["id", "text_sha256", "vector"]
    assert on_ray.column("id").to_pylist() == single.column("id").to_pylist()
    assert on_ray.column("text_sha256").equals(single.column("text_sha256"))
    ray_vectors = np.stack(on_ray.column("vector").to_numpy(zero_copy_only=False))
    single_vectors = np.stack(single.column("vector").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(ray_vectors, single_vectors, atol=1e-5)
