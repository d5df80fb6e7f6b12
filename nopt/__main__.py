"""Command line: ``nopt demo``, ``nopt bench``, ``nopt config``."""
import os
import sys

USAGE = """usage: nopt [--version] {demo,bench,config} [options]

  demo     train a softmax regression and an MLP on the shipped digits (the main job)
  bench    benchmark nopt against NumPy and torch.optim (python -m nopt.bench)
  config   print versions, OpenMP status, threads and build flags

Run 'nopt COMMAND --help' for a command's options; 'nopt --version' prints the version."""


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"nopt {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "demo":
        from .demo import main as run
    elif command == "bench":
        from .bench import main as run
    elif command == "config":
        from ._config import show_config

        show_config()
        return 0
    else:
        print(f"nopt: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    run(rest)
    return 0


def _console():
    """The ``nopt`` script: ``main()``, quiet when a pipe closes early (``nopt config | head``)."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would complain again at exit, flushing into the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(_console())
