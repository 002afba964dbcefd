"""Run the benchmarks that finish in a few minutes and print their ratios (``make bench``).

OmniXAI's comparison runs only when its virtualenv exists (``bash benchmarks/omnixai_env.sh``).
``--device cuda`` is handed to every script.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device handed to every benchmark (cpu, cuda)")
    device = ["--device", parser.parse_args(argv).device]
    scripts = [
        ["bench_overhead.py"],
        ["bench_batching.py", "--repeats", "2"],
        ["bench_memory.py"],
        ["bench_caption.py"],
        ["bench_dataset.py"],
        ["bench_regions.py"],
        ["bench_detection.py"],
    ]
    if (HERE.parent / ".venv-omnixai" / "bin" / "python").exists():
        scripts.append(["bench_omnixai.py"])
    else:
        print("skipping bench_omnixai.py: run `bash benchmarks/omnixai_env.sh` first")
    failed = 0
    for script in scripts:
        print(f"\n=== {script[0]}", flush=True)
        failed += subprocess.run([sys.executable, str(HERE / script[0]), *script[1:], *device]).returncode != 0
    return failed


if __name__ == "__main__":
    sys.exit(main())
