"""`fim-server infill --ray`: the same job on a local Ray instance gives the same files, the same
records and the same resume behaviour as the local runner. One Ray instance for the module."""

import json
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from fim_server import cli  # noqa: E402
from fim_server.batch import InfillOptions, LocalRunner, infill  # noqa: E402
from fim_server.batch.journal import Journal  # noqa: E402
from fim_server.batch.ray_runner import RayRunner  # noqa: E402
from test_infill import (CONFIG, TREE, Crash, Recording, engine, fp, make_tree, many_holes,  # noqa: E402,F401
                         one_thread, read_tree)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024 * 1024,
             log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def options(tmp: Path, name: str, **kw) -> InfillOptions:
    return InfillOptions(out_dir=tmp / name, state_dir=tmp / f"{name}-state", jsonl=str(tmp / f"{name}.jsonl"),
                         progress=False, **kw)


def records(path: str) -> list[dict]:
    """Per-hole records without timings (those differ run to run)."""
    out = []
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        r["stats"] = {k: v for k, v in r["stats"].items() if not k.endswith("_ms")}
        out.append(r)
    return out


def test_cli_ray_auto_matches_the_local_run(tmp_path, local_ray, engine, fp, random_dlm_dir):
    src = make_tree(tmp_path / "src", TREE)
    local = infill([src], None, LocalRunner(engine, CONFIG), fp, options(tmp_path, "local", batch=2))
    rc = cli.main(["infill", str(src), "--out", str(tmp_path / "ray"), "--jsonl", str(tmp_path / "ray.jsonl"),
                   "--batch", "2", "--model", str(random_dlm_dir), "--dtype", "float64", "--max-tokens", "8",
                   "--no-progress", "--ray", "auto", "--ray-replicas", "1"])
    assert rc == 0
    assert local["holes"]["filled"] == 6
    assert read_tree(tmp_path / "ray") == read_tree(tmp_path / "local")
    assert records(str(tmp_path / "ray.jsonl")) == records(str(tmp_path / "local.jsonl"))


def test_replicas_that_cannot_load_fail_their_holes_not_the_run(tmp_path, local_ray, fp):
    src = make_tree(tmp_path / "src", {"a.py": TREE["a.py"]})
    runner = RayRunner({"kind": "diffusion", "model": str(tmp_path / "no-such-model")}, CONFIG)
    try:
        summary = infill([src], None, runner, fp, options(tmp_path, "out"))
    finally:
        runner.close()
    assert summary["holes"]["failed"] == 2 and summary["holes"]["filled"] == 0
    assert all("Ray replica failed" in m["message"] or "no Ray replica" in m["message"]
               for m in summary["hole_messages"])
    assert read_tree(tmp_path / "out") == {}


@pytest.fixture(scope="module")
def two_replicas(local_ray, random_dlm_dir):
    runner = RayRunner({"kind": "diffusion", "model": str(random_dlm_dir), "dtype": "float64"}, CONFIG,
                       replicas=2, cpus_per_replica=1)
    yield runner
    runner.close()


def test_two_replicas_resume_a_crashed_local_run_and_match_it(tmp_path, engine, fp, two_replicas):
    files = many_holes(9)
    src = make_tree(tmp_path / "src", files)
    full = infill([src], None, LocalRunner(engine, CONFIG), fp, options(tmp_path, "full", batch=2))
    opts = options(tmp_path, "mixed", batch=2)
    with pytest.raises(Crash):
        infill([src], None, LocalRunner(Recording(engine, crash_after=2), CONFIG), fp, opts)
    done = len(Journal(opts.state_dir / "journal.jsonl"))
    assert done == 4
    summary = infill([src], None, two_replicas, fp, opts)
    assert summary["holes"]["skipped"] == done
    assert summary["requests_computed"] == full["holes"]["filled"] - done
    assert read_tree(tmp_path / "mixed") == read_tree(tmp_path / "full")
    got, want = records(opts.jsonl), records(str(tmp_path / "full.jsonl"))
    assert [r["completion"] for r in got] == [r["completion"] for r in want]
