"""The separate environment in which lsg-converter's own modeling code runs.

lsg-converter 0.1.9 does not import under transformers 5, so the reference outputs the LSG tests
compare against come from a second virtual environment with a transformers 4.x it supports. It is
built once under .cache/ and reused; torch is the same pinned CPU wheel as the main environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from importlib import metadata
from pathlib import Path

# Pinned: the reference must not drift. 4.39 is the transformers line lsg-converter 0.1.9 was
# released against (its BertModel still calls the overridable get_extended_attention_mask).
REQUIREMENTS = ("torch==2.13.0", "transformers==4.39.3", "lsg-converter==0.1.9", "numpy<2")
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = ROOT / ".cache" / "lsg-reference"


class Unavailable(RuntimeError):
    """The environment cannot be built here (no package registry)."""


def _shared_torch() -> tuple[Path, list[str], list[str]] | None:
    """The running interpreter's torch when it is the pinned one: its site-packages folder, the
    entries there that make up torch, and torch's own requirements."""
    try:
        dist = metadata.distribution("torch")
    except metadata.PackageNotFoundError:
        return None
    if dist.version.split("+")[0] != REQUIREMENTS[0].split("==")[1]:
        return None
    site = Path(dist.locate_file(""))
    info = [p.name for p in site.glob("torch-*.dist-info") if p.name.startswith(f"torch-{dist.version}.")]
    parts = [name for name in ("torch", "torchgen", "functorch") if (site / name).is_dir()] + info
    requires = [r for r in dist.requires or () if "extra ==" not in r]
    return site, parts, requires


def python(env_dir: Path = DEFAULT_DIR) -> Path:
    """The environment's interpreter, building the environment first if needed."""
    env_dir = Path(os.environ.get("BUCKETRT_LSG_REFERENCE_ENV", env_dir))
    exe = env_dir / "bin" / "python"
    stamp = env_dir / ".requirements"
    shared = _shared_torch()
    # The stamp names the shared torch's folder: a main environment moved or rebuilt elsewhere
    # rebuilds this one.
    wanted = "\n".join(REQUIREMENTS + ((f"torch from {shared[0]}",) if shared else ()))
    if exe.exists() and stamp.exists() and stamp.read_text() == wanted:
        return exe
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    if shared:
        # The main environment's torch (the same pinned CPU wheel), linked in rather than
        # installed a second time: unpacking ~1 GB of wheel was most of this build's time. Only
        # torch's own folders are exposed (a .pth file naming a folder of links), so nothing else
        # of the main environment, transformers 5 above all, leaks in; torch's small
        # requirements are installed here.
        site, parts, requires = shared
        links = env_dir / "shared-torch"
        links.mkdir()
        for name in parts:
            (links / name).symlink_to(site / name)
        purelib = Path(sysconfig.get_path("purelib", vars={"base": str(env_dir), "platbase": str(env_dir)}))
        (purelib / "bucketrt_shared_torch.pth").write_text(f"{links}\n")
        groups = ((*requires, *REQUIREMENTS[1:]),)
    else:
        # torch first and alone, as in the Makefile: the exact pin takes the CPU wheel on this machine.
        groups = (REQUIREMENTS[:1], REQUIREMENTS[1:])
    for group in groups:
        done = subprocess.run(
            [str(exe), "-m", "pip", "install", "-q", "--no-compile", *group], capture_output=True, text=True
        )
        if done.returncode:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise Unavailable(f"pip install {' '.join(group)} failed: {' / '.join(tail)}")
    stamp.write_text(wanted)
    return exe


if __name__ == "__main__":
    print(python())
    sys.exit(0)
