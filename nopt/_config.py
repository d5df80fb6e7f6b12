"""``nopt.show_config()``: versions and how the kernels were built."""
import platform
import sys

import numpy as np
import scipy

from ._kernels import _plan

__all__ = ["show_config", "get_config"]


def _build_info():
    try:
        from ._build_info import BUILD_INFO
    except ImportError:  # built by a tool that skipped setup.py's build_ext
        BUILD_INFO = {}
    return dict(BUILD_INFO)


def get_config():
    """Return the build and runtime configuration as a dict."""
    from . import __version__
    from ._threads import get_num_threads

    build = _build_info()
    return {
        "nopt": __version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "openmp": bool(_plan.HAVE_OPENMP),
        "openmp_note": build.get("openmp_note", ""),
        "num_threads": get_num_threads(),
        "flush_to_zero": bool(_plan.HAVE_FTZ),
        "simd_level": _plan.SIMD_LEVEL,
        "simd_dispatch": bool(_plan.HAVE_SIMD_DISPATCH),
        "compiler": build.get("compiler", "unknown"),
        "compile_flags": build.get("compile_flags", []),
        "link_flags": build.get("link_flags", []),
        "cython_debug": build.get("debug", False),
        "chunk_elements": _plan.CHUNK,
        "serial_below_elements": _plan.SERIAL_BELOW,
    }


def show_config(file=None):
    """Print nopt's versions, OpenMP status, thread count and build flags."""
    config = get_config()
    lines = [
        f"nopt {config['nopt']}",
        f"  numpy:        {config['numpy']}",
        f"  scipy:        {config['scipy']}",
        f"  python:       {config['python']} ({config['platform']})",
        "  openmp:       " + ("on" if config["openmp"] else f"off ({config['openmp_note'] or 'serial build'})"),
        f"  threads:      {config['num_threads']} (default for large steps)",
        f"  flush-to-zero in kernels: {'on' if config['flush_to_zero'] else 'unavailable on this CPU'}",
        f"  SIMD:         {config['simd_level']} "
        + ("(chosen at load time from per-ISA kernel copies)" if config["simd_dispatch"] else "(one build)"),
        f"  compiler:     {config['compiler']}",
        f"  compile flags: {' '.join(config['compile_flags'])}",
        f"  link flags:   {' '.join(config['link_flags'])}",
        f"  bounds checks (NOPT_CYTHON_DEBUG): {'on' if config['cython_debug'] else 'off'}",
    ]
    print("\n".join(lines), file=file or sys.stdout)
