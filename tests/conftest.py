"""Suite-wide settings: tiny models run fastest (and most steadily on a loaded machine) on one thread;
and the `device` parameter of the device-dependent tests.

A test that takes a `device` argument runs once per device given with `--device` (repeatable;
default cpu) and carries the `device` marker, so that on a GPU machine

    python -m pytest -m device --device cuda

runs exactly the device-dependent tests (model forward and backward, a shard's training, posterior
sampling, checkpoint loading, the reference operations) on CUDA. A CUDA device this machine lacks is
skipped.
"""

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        action="append",
        default=None,
        metavar="DEVICE",
        help="device of the tests that take `device` (cpu, cuda, cuda:N); repeatable; default cpu",
    )


def _parametrized_by_hand(metafunc, name: str) -> bool:
    """True if a `parametrize` mark of the test already gives `name` (a plain argument)."""
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else names
        if name in names:
            return True
    return False


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames and not _parametrized_by_hand(metafunc, "device"):
        devices = metafunc.config.getoption("--device") or ["cpu"]
        marks = []
        for d in devices:
            missing = d.startswith("cuda") and not torch.cuda.is_available()
            skip = pytest.mark.skipif(missing, reason=f"{d}: CUDA is not available here")
            marks.append(pytest.param(d, id=d, marks=[pytest.mark.device, skip]))
        metafunc.parametrize("device", marks)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
