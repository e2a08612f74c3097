"""How long generation takes, hooks included (the target: well under one second).

Renders the template with the cookiecutter API several times per case, after
one warm-up render (imports), and prints the median and the slowest run.
No network is used: the post-generation hook copies a lock, it never resolves.

Usage: python scripts/bench_generate.py [runs]   (default 5)
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from cookiecutter.main import cookiecutter

ROOT = Path(__file__).resolve().parent.parent
CASES = {
    "defaults (init_git)": {},
    "defaults, init_git=no": {"init_git": False},
    "gitlab, sqlite, no docker": {"ci": "gitlab", "database": "sqlite", "use_docker": False},
}
TARGET_SECONDS = 1.0


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the hooks too: they are subprocesses writing to file descriptor 1."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def render(context: dict[str, object]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(f'cookiecutters_dir: "{tmp}/cc"\nreplay_dir: "{tmp}/replay"\n')
        start = time.perf_counter()
        with quiet():
            cookiecutter(
                str(ROOT),
                no_input=True,
                extra_context=context,
                output_dir=str(Path(tmp) / "out"),
                config_file=str(config),
            )
        return time.perf_counter() - start


def main(argv: list[str]) -> int:
    runs = int(argv[0]) if argv else 5
    render({})  # warm-up: imports and caches
    slow = False
    for name, context in CASES.items():
        times = [render(context) for _ in range(runs)]
        median, worst = statistics.median(times), max(times)
        slow |= median >= TARGET_SECONDS
        print(f"{name:30} median {median * 1000:6.0f} ms   slowest {worst * 1000:6.0f} ms")
    print(f"target: median under {TARGET_SECONDS:.0f} s: {'MISSED' if slow else 'met'}")
    return 1 if slow else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
