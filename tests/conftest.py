import os
from pathlib import Path

import pytest
import torch

# A native kernel that does not build must fail the tests that use it, not quietly send them to the
# pure-PyTorch reference (a compiler is always there where the tests run).
os.environ.setdefault("VIDEOMAMBA_REQUIRE_KERNELS", "1")

# Without a GPU, run the Triton kernels in Triton's interpreter on CPU tensors (tiny shapes only).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    from triton_interpreter import install as _fast_interpreter   # same results, slices instead of elements

    _fast_interpreter()

DATA = Path(__file__).parent / "data"
OFFICIAL = DATA / "official"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def load_official(name: str) -> dict:
    """Official-output fixture (see tests/data/official/README.md)."""
    return torch.load(OFFICIAL / f"{name}.pt", weights_only=False)


# A skipped test tests nothing: where the README's test command installed everything (.[dev,video]),
# every skip fails the run. Skips whose reason starts with "platform:" (a package without wheels for this
# platform) are allowed; VIDEOMAMBA_ALLOW_SKIPS=1 allows all (a partial install on purpose).
_unexpected_skips: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if "platform:" not in reason:
            _unexpected_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if _unexpected_skips and os.environ.get("VIDEOMAMBA_ALLOW_SKIPS") != "1" and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    if _unexpected_skips and os.environ.get("VIDEOMAMBA_ALLOW_SKIPS") != "1":
        terminalreporter.write_sep("=", f"{len(_unexpected_skips)} skipped tests fail this run", red=True)
        for line in _unexpected_skips[:20]:
            terminalreporter.write_line(f"  {line}")
        terminalreporter.write_line("  install what they need (pip install -e '.[dev,video]') or set "
                                    "VIDEOMAMBA_ALLOW_SKIPS=1")
