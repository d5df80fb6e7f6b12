"""Build nopt's Cython kernels, with OpenMP when the compiler has it.

Environment switches:

- ``NOPT_DISABLE_OPENMP=1``: build serially even if OpenMP is available.
- ``NOPT_CYTHON_DEBUG=1``: turn bounds checking and wraparound back on.
- ``NOPT_EXTRA_CFLAGS``: extra compile flags (e.g. ``-march=native``).

The elementwise kernels are generated: every ``RULE = Rule(...)`` in
``nopt/*.py`` (see ``nopt/_kernels/_spec.py``) is rendered through
``nopt/_kernels/rules.pyx.tp`` into ``nopt/_kernels/rules.pyx``, and the
other kernels' ``helpers.pyx.tp`` into ``helpers.pyx`` (generated files are
not committed). Every other ``.pyx`` in ``nopt/_kernels`` is compiled as it is.
Extensions are cythonized and compiled in parallel (one job per CPU, also
under pip, which passes no ``-j``).
"""
import ast
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
KERNEL_DIR = os.path.join("nopt", "_kernels")

OPENMP_TEST = r"""
#include <omp.h>
#include <stdio.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    printf("%d %d\n", n, omp_get_max_threads());
    return 0;
}
"""


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _compiler_kind(compiler):
    if compiler.compiler_type == "msvc":
        return "msvc"
    cc = os.path.basename(compiler.compiler_so[0]) if compiler.compiler_so else "cc"
    try:
        version = subprocess.run(
            [compiler.compiler_so[0], "--version"], capture_output=True, text=True
        ).stdout
    except OSError:
        version = ""
    if sys.platform == "darwin" and "clang" in (cc + version).lower():
        return "apple-clang"
    return "gcc-like"


def _compiler_version(compiler):
    if compiler.compiler_type == "msvc":
        return "msvc"
    try:
        out = subprocess.run(
            [compiler.compiler_so[0], "--version"], capture_output=True, text=True
        ).stdout
        return out.splitlines()[0].strip() if out else compiler.compiler_so[0]
    except OSError:
        return compiler.compiler_so[0]


def _openmp_flags(kind):
    """(compile flags, link flags) that enable OpenMP for this compiler kind."""
    if kind == "msvc":
        return ["/openmp"], []
    if kind == "apple-clang":
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    return ["-fopenmp"], ["-fopenmp"]


def _try_openmp(compiler, compile_flags, link_flags):
    """Compile, link and run a small OpenMP program; True if it all works."""
    tmp = tempfile.mkdtemp(prefix="nopt-omp-")
    cwd = os.getcwd()
    try:
        os.chdir(tmp)
        with open("test_omp.c", "w") as f:
            f.write(OPENMP_TEST)
        objects = compiler.compile(["test_omp.c"], extra_postargs=compile_flags)
        compiler.link_executable(objects, "test_omp", extra_postargs=link_flags)
        exe = os.path.join(tmp, "test_omp" + (".exe" if os.name == "nt" else ""))
        out = subprocess.run([exe], capture_output=True, text=True, timeout=30)
        return out.returncode == 0 and len(out.stdout.split()) == 2
    except Exception:  # any compile, link or run failure means: no OpenMP
        return False
    finally:
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)


def _base_flags(kind):
    if kind == "msvc":
        return ["/O2", "/fp:precise"]
    # -fno-math-errno lets gcc vectorise sqrt, and -fno-trapping-math lets it
    # vectorise loops with selects; neither changes any result (only errno and
    # FP exception flags). -ffp-contract=off keeps a*b+c as two roundings
    # whatever -march is, so results do not depend on the target's FMA support.
    # -g0 undoes Python's default -g: debug info costs a quarter of the compile
    # time and most of the wheel's size (NOPT_EXTRA_CFLAGS=-g brings it back).
    return ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", "-g0"]


def _jobs():
    return max(1, min(os.cpu_count() or 1, 8))


class BuildExt(build_ext):
    """build_ext that probes OpenMP once, records the build config, and compiles in parallel."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            # pip and `setup.py build_ext` without -j: one job per CPU anyway.
            self.parallel = _jobs()

    def build_extensions(self):
        from setuptools._distutils.sysconfig import customize_compiler

        customize_compiler(self.compiler)
        kind = _compiler_kind(self.compiler)
        compile_flags = _base_flags(kind)
        link_flags = []
        omp_compile, omp_link = _openmp_flags(kind)
        if _flag("NOPT_DISABLE_OPENMP"):
            openmp = False
            reason = "disabled by NOPT_DISABLE_OPENMP"
        else:
            openmp = _try_openmp(self.compiler, omp_compile, omp_link)
            reason = "" if openmp else "the compiler could not build an OpenMP test program"
        if openmp:
            compile_flags += omp_compile
            link_flags += omp_link
        else:
            print(f"nopt: building WITHOUT OpenMP ({reason}); kernels run on one thread")
        extra = os.environ.get("NOPT_EXTRA_CFLAGS", "").split()
        compile_flags += extra
        # Recompile every extension when the flags change between builds.
        stamp = os.path.join(HERE, "build", "compile-flags.txt")
        wanted = repr((compile_flags, link_flags, self.inplace))
        if not os.path.exists(stamp) or open(stamp).read() != wanted:
            self.force = True
        os.makedirs(os.path.dirname(stamp), exist_ok=True)
        with open(stamp, "w") as f:
            f.write(wanted)
        for ext in self.extensions:
            ext.extra_compile_args = list(compile_flags)
            ext.extra_link_args = list(link_flags)
        # The parallel build hands extensions to its workers in order: the
        # largest first, so that the longest compile does not start last.
        self.extensions.sort(key=lambda ext: -sum(_size(src) for src in ext.sources))
        _write_build_info(
            openmp=openmp,
            openmp_note=reason,
            compiler=_compiler_version(self.compiler),
            compile_flags=compile_flags,
            link_flags=link_flags,
            debug=_flag("NOPT_CYTHON_DEBUG"),
            build_lib=None if self.inplace else self.build_lib,
        )
        super().build_extensions()


def _size(path):
    return os.path.getsize(path) if os.path.exists(path) else 0


def _write_build_info(build_lib, **info):
    text = (
        "# Written by setup.py at build time; do not edit.\n"
        f"BUILD_INFO = {info!r}\n"
    )
    targets = [os.path.join(HERE, "nopt", "_build_info.py")]
    if build_lib:
        targets.append(os.path.join(build_lib, "nopt", "_build_info.py"))
    for path in targets:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


# ---------------------------------------------------------------- generated kernels
def _load_spec():
    path = os.path.join(HERE, KERNEL_DIR, "_spec.py")
    spec = importlib.util.spec_from_file_location("_nopt_rule_spec", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rule_specs(spec_module):
    """Every ``Rule(...)`` assigned at module level in nopt/*.py, from its literal fields."""
    rules = []
    for path in sorted(glob.glob(os.path.join(HERE, "nopt", "*.py"))):
        with open(path, encoding="utf-8") as f:
            source = f.read()
        if "Rule(" not in source:
            continue
        for node in ast.parse(source, path).body:
            if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                    and getattr(node.value.func, "id", None) == "Rule"):
                continue
            call = node.value
            where = f"{os.path.relpath(path, HERE)}:{node.lineno}"
            fields = {}
            try:
                args = [ast.literal_eval(a) for a in call.args]
                for kw in call.keywords:
                    if kw.arg in spec_module.LITERAL_FIELDS:
                        fields[kw.arg] = ast.literal_eval(kw.value)
            except ValueError as exc:
                raise SystemExit(f"{where}: the Rule fields {spec_module.LITERAL_FIELDS} must be "
                                 f"literals (setup.py reads them without importing nopt): {exc}")
            rules.append(spec_module.Rule(*args, **fields))
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise SystemExit(f"two rules share a name: {sorted(names)}")
    return rules


def _render_templates():
    """Write every nopt/_kernels/X.pyx from its X.pyx.tp (only when it changes).

    The templates see ``rules`` (one render context per rule spec) and
    ``drive`` (the chunk loop every kernel shares), from _spec.py.
    """
    from Cython import Tempita

    spec_module = _load_spec()
    namespace = dict(rules=[spec_module.render_context(r) for r in _rule_specs(spec_module)],
                     drive=spec_module.drive)
    for template in sorted(glob.glob(os.path.join(HERE, KERNEL_DIR, "*.pyx.tp"))):
        with open(template, encoding="utf-8") as f:
            text = Tempita.sub(f.read(), **namespace)
        target = template[:-len(".tp")]
        old = open(target, encoding="utf-8").read() if os.path.exists(target) else None
        if old != text:
            with open(target, "w", encoding="utf-8") as f:
                f.write(text)


def _extensions():
    _render_templates()
    debug = _flag("NOPT_CYTHON_DEBUG")
    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": debug,
        "initializedcheck": debug,
        "cdivision": True,
        "nonecheck": False,
        "embedsignature": True,
    }
    sources = sorted(glob.glob(os.path.join(KERNEL_DIR, "*.pyx")))
    extensions = [
        Extension(
            "nopt._kernels." + os.path.splitext(os.path.basename(src))[0],
            [src],
            include_dirs=[numpy.get_include(), KERNEL_DIR],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
        )
        for src in sources
    ]
    # Regenerate the C files when the directives change between builds.
    stamp = os.path.join(HERE, "build", "cython-directives.txt")
    wanted = repr(sorted(directives.items()))
    previous = open(stamp).read() if os.path.exists(stamp) else None
    modules = cythonize(
        extensions,
        compiler_directives=directives,
        force=previous != wanted or _flag("NOPT_FORCE_CYTHON"),
        quiet=True,
        nthreads=_jobs(),
    )
    os.makedirs(os.path.dirname(stamp), exist_ok=True)
    with open(stamp, "w") as f:
        f.write(wanted)
    return modules


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
