"""Play the newcomer: the README's Quick start, word for word, on a fresh clone.

Clones this repository (its committed HEAD) into a temporary directory,
creates a virtual environment there, reads the commands of the first code
block under "## Quick start" in the clone's README.md, and runs each line
exactly as written with bash, in the clone, with the venv activated. Fails
unless every command exits 0; prints the time of each and the machine load.

The venv is made with --system-site-packages so that the heavy optional
peers CI installed globally (torch, scikit-learn, matplotlib) are not
downloaded again; nopt itself is never importable from there (CI does not
install it globally, and the venv's own install comes first on sys.path),
which the script checks after the commands ran.

Usage: python .ci/quickstart.py [--keep] [--then COMMAND]
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quick_start_commands(readme_text):
    """The command lines of the first fenced code block under '## Quick start'."""
    match = re.search(r"^## Quick start[ \t]*\n(.*?)(?=^## )", readme_text, re.M | re.S)
    if match is None:
        raise SystemExit("README.md has no '## Quick start' section")
    block = re.search(r"^```[a-z]*\n(.*?)^```", match.group(1), re.M | re.S)
    if block is None:
        raise SystemExit("README.md's Quick start has no code block")
    commands = [line.rstrip() for line in block.group(1).splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    if not commands:
        raise SystemExit("README.md's Quick start code block has no commands")
    return commands


def _load():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--then", metavar="COMMAND",
                        help="one more bash command to run afterwards, in the clone with the venv")
    args = parser.parse_args(argv)

    work = tempfile.mkdtemp(prefix="nopt-quickstart-")
    clone, venv = os.path.join(work, "nopt"), os.path.join(work, "venv")
    try:
        subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", ROOT, clone], check=True)
        head = subprocess.run(["git", "-C", clone, "log", "-1", "--format=%h %s"], check=True,
                              capture_output=True, text=True).stdout.strip()
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
        with open(os.path.join(clone, "README.md"), encoding="utf-8") as f:
            commands = quick_start_commands(f.read())

        # What `source venv/bin/activate` does, for every bash command below.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["VIRTUAL_ENV"] = venv
        env["PATH"] = os.path.join(venv, "bin") + os.pathsep + env.get("PATH", "")
        print(f"quickstart: fresh clone of {head} in {clone}; load average {_load()}", flush=True)
        timings = []
        for command in commands + ([args.then] if args.then else []):
            print(f"quickstart: $ {command}", flush=True)
            t0 = time.perf_counter()
            done = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=clone, env=env)
            seconds = time.perf_counter() - t0
            timings.append((command, seconds))
            print(f"quickstart: exit {done.returncode} after {seconds:.0f} s "
                  f"(load average {_load()})", flush=True)
            if done.returncode != 0:
                raise SystemExit(f"quickstart: FAILED: {command!r} exited {done.returncode}")

        # The commands used the clone's nopt, not some other one. Asked from the
        # venv's own folder: in ``work`` the clone's folder is named nopt and
        # would be imported as a namespace package.
        where = subprocess.run(
            [os.path.join(venv, "bin", "python"), "-c", "import nopt; print(nopt.__file__)"],
            cwd=venv, env=env, check=True, capture_output=True, text=True).stdout.strip()
        if not where.startswith(clone + os.sep):
            raise SystemExit(f"quickstart: FAILED: the venv imports nopt from {where}, not the clone")

        total = sum(seconds for command, seconds in timings[:len(commands)])
        print("quickstart: the README's Quick start passed on a fresh clone:")
        for command, seconds in timings:
            print(f"  {seconds:6.0f} s  {command}")
        print(f"  {total:6.0f} s  in all ({os.cpu_count()} CPUs, load average now {_load()})")
    finally:
        if args.keep:
            print(f"quickstart: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
