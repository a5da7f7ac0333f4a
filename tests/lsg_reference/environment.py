"""The separate environment in which lsg-converter's own modeling code runs.

lsg-converter 0.1.9 does not import under transformers 5, so the reference outputs the LSG tests
compare against come from a second virtual environment with a transformers 4.x it supports. It is
built once under .cache/ and reused; torch is the same pinned CPU wheel as the main environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

# Pinned: the reference must not drift. 4.39 is the transformers line lsg-converter 0.1.9 was
# released against (its BertModel still calls the overridable get_extended_attention_mask).
REQUIREMENTS = ("torch==2.13.0", "transformers==4.39.3", "lsg-converter==0.1.9", "numpy<2")
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = ROOT / ".cache" / "lsg-reference"


class Unavailable(RuntimeError):
    """The environment cannot be built here (no package registry)."""


def python(env_dir: Path = DEFAULT_DIR) -> Path:
    """The environment's interpreter, building the environment first if needed."""
    env_dir = Path(os.environ.get("BUCKETRT_LSG_REFERENCE_ENV", env_dir))
    exe = env_dir / "bin" / "python"
    stamp = env_dir / ".requirements"
    wanted = "\n".join(REQUIREMENTS)
    if exe.exists() and stamp.exists() and stamp.read_text() == wanted:
        return exe
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    # torch first and alone, as in the Makefile: the exact pin takes the CPU wheel on this machine.
    for group in (REQUIREMENTS[:1], REQUIREMENTS[1:]):
        done = subprocess.run([str(exe), "-m", "pip", "install", "-q", *group], capture_output=True, text=True)
        if done.returncode:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise Unavailable(f"pip install {' '.join(group)} failed: {' / '.join(tail)}")
    stamp.write_text(wanted)
    return exe


if __name__ == "__main__":
    print(python())
    sys.exit(0)
