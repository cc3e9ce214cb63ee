"""bench/gpu_check.py: its quick mode on the CPU end to end, with Ray unimportable (the GPU machine
has none), and its pieces: which test files it runs, how it fits steps into its budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import gpu_check  # noqa: E402

RAY_BLOCKER = """import os
with open(os.environ["RAY_IMPORT_LOG"], "a") as log:
    log.write("import ray\\n")
raise ImportError("ray is blocked: the GPU machine has no Ray")
"""


def _no_ray_env(tmp_path: Path) -> dict[str, str]:
    """An environment in which `import ray` fails, and leaves a line in tmp_path/ray_imports."""
    (tmp_path / "blocker" / "ray").mkdir(parents=True)
    (tmp_path / "blocker" / "ray" / "__init__.py").write_text(RAY_BLOCKER)
    path = os.pathsep.join([str(tmp_path / "blocker"), str(ROOT / "src")])
    return dict(
        os.environ,
        PYTHONPATH=path,
        RAY_IMPORT_LOG=str(tmp_path / "ray_imports"),
        AUTOLFADS_ACCEL="none",  # no C++ build inside the test; CUDA runs the reference too
    )


def test_the_blocker_blocks_ray(tmp_path):
    env = _no_ray_env(tmp_path)
    code = "from autolfads.pbt.resources import ray_available; print(ray_available())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
    assert (tmp_path / "ray_imports").read_text() == "import ray\n"


@pytest.mark.slow
def test_quick_mode_runs_every_part_on_the_cpu_without_ray(tmp_path):
    """~40-60 s: nested pytest, two spawned processes, `autolfads run` in a subprocess."""
    env = _no_ray_env(tmp_path)
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--quick"]
    proc = subprocess.run(
        [*cmd, "--out", str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not (tmp_path / "ray_imports").exists(), "something tried to import ray"
    report = json.loads((out / "gpu_check.json").read_text())
    rows = report["rows"]
    assert {r["part"] for r in rows} == {"tests", "train", "posterior", "run"}
    assert all(r["status"] == "ok" for r in rows), [(r["part"], r["status"]) for r in rows]
    tests = next(r for r in rows if r["part"] == "tests")
    assert tests["passed"] >= 3 and tests["failures"] == tests["errors"] == 0
    train = {(r["K"], r["layout"]) for r in rows if r["part"] == "train"}
    assert train == {(1, "batched")} | {(k, lay) for k in (2, 4) for lay in gpu_check.LAYOUTS}
    assert all(r["samples_per_s"] > 0 for r in rows if r["part"] == "train")
    table = (out / "gpu_check.md").read_text()
    assert table.count("\n| train |") == 7 and "| run |" in table
    assert table.splitlines()[2].startswith("| part | what | result | wall s | samples/s |")


def test_device_test_files_are_those_with_device_tests():
    files = gpu_check.device_test_files()
    assert "tests/test_devices.py" in files and "tests/train/test_shard.py" in files
    assert "tests/pbt/test_ray_backend.py" not in files  # its `device` is its own parameter
    for name in files:
        assert "def test_" in (ROOT / name).read_text()


@pytest.mark.parametrize(
    ("steps", "per_step", "left", "expected"),
    [
        (5, None, 10.0, 5),  # nothing measured yet
        (5, 0.1, 100.0, 5),
        (5, 1.0, 6.0, 3),  # 1.5 s a step with the margin: 4 fit, one of them the warm-up
        (5, 1.0, 2.0, 0),
        (5, 0.1, 0.0, 0),
    ],
)
def test_fit_steps_shortens_a_layout_to_its_time(steps, per_step, left, expected):
    assert gpu_check.fit_steps(steps, per_step, left) == expected
