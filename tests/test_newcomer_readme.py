"""The README a newcomer follows: Quick start, examples and asv commands stay runnable.

The Quick start itself is run on a fresh clone by .ci/quickstart.py (from .ci/run);
these checks are the fast part: the commands it will parse, the snippets, the config.
"""
import importlib.util
import os
import re
import tomllib

import numpy as np

import nopt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def _quickstart_module():
    spec = importlib.util.spec_from_file_location("quickstart", os.path.join(ROOT, ".ci", "quickstart.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _section_code(title, lang):
    text = _readme()
    section = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#+ )", text, re.M | re.S).group(1)
    return re.findall(rf"^```{lang}\n(.*?)^```", section, re.M | re.S)


def test_quick_start_builds_once_then_tests():
    commands = _quickstart_module().quick_start_commands(_readme())
    assert commands == ['pip install -e ".[test]" && nopt demo', "python -m pytest"]
    # One build: the second command must not install (and so compile) nopt again.
    assert sum("pip install" in c for c in commands) == 1
    assert "QUICKSTART_TIMES" not in _readme()


def test_quick_start_parser_reads_only_the_first_block():
    parse = _quickstart_module().quick_start_commands
    text = "# x\n## Quick start\n\ntext\n```bash\n# a comment\ncmd one\n\ncmd two  # note\n```\n" \
           "```bash\nnot this\n```\n## Usage\n```bash\nnor this\n```\n"
    assert parse(text) == ["cmd one", "cmd two  # note"]


def test_ci_runs_the_newcomer_script():
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        assert "quickstart.py" in f.read()


def test_usage_and_param_group_examples_run():
    (loop,) = _section_code("A NumPy training loop", "python")
    (groups,) = _section_code("Param groups", "python")
    namespace = {}
    exec(compile(loop, "README: training loop", "exec"), namespace)
    exec(compile(groups, "README: param groups", "exec"), namespace)
    opt = namespace["opt"]
    assert len(opt.param_groups) == 3 and opt.param_groups[2]["params"] == [namespace["extra"]]
    assert opt.param_groups[2]["lr"] == 1e-3 and opt.param_groups[2]["momentum"] == 0.9


def test_asv_commands_are_the_documented_working_ones():
    blocks = "\n".join(_section_code("Performance", "bash"))
    lines = [line.split("#")[0].strip() for line in blocks.splitlines()]
    assert 'pip install -e ".[bench]"' in lines
    assert "asv machine --yes" in lines
    assert "asv run --python=same --quick" in lines
    assert lines.index("asv machine --yes") < lines.index("asv run --python=same --quick")
    # -E existing next to --python=same made two identical environments.
    assert not any("-E existing" in line or "ASV_PYTHONPATH" in line for line in lines)
    assert "QUICK_ASV" not in _readme()


def test_pyproject_extras_and_version():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    extras = project["optional-dependencies"]
    assert any(r.startswith("asv") for r in extras["bench"])
    assert any(r.startswith("threadpoolctl") for r in extras["bench"])
    assert any(r.startswith("pytest") for r in extras["test"])
    assert "version" in project.get("dynamic", []) or project.get("version") == nopt.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", nopt.__version__)


def _asv_benchmarks():
    """(module, class) for every asv benchmark class in benchmarks/."""
    import inspect
    import sys

    sys.path.insert(0, ROOT)
    try:
        import benchmarks.bench_minimize as bench_minimize
        import benchmarks.bench_optimizers as bench_optimizers
    finally:
        sys.path.remove(ROOT)
    for module in (bench_optimizers, bench_minimize):
        for name, cls in vars(module).items():
            if inspect.isclass(cls) and cls.__module__ == module.__name__ and not name.startswith("_") \
                    and any(a.startswith(("time_", "peakmem_", "track_")) for a in dir(cls)):
                yield module, cls


def test_every_asv_benchmark_runs_on_its_first_parameter_set():
    # What `asv run --quick` does for each benchmark, on one parameter set each.
    import itertools

    seen = 0
    for module, cls in _asv_benchmarks():
        params = getattr(cls, "params", [])
        if params and not isinstance(params[0], (list, tuple)):
            params = [params]
        first = next(itertools.product(*params)) if params else ()
        for method in [a for a in dir(cls) if a.startswith(("time_", "peakmem_", "track_"))]:
            bench = cls()
            try:
                bench.setup(*first)
            except NotImplementedError:
                continue
            try:
                result = getattr(bench, method)(*first)
                if method.startswith("track_"):
                    assert np.isfinite(result), (cls.__name__, method, result)
            finally:
                if hasattr(bench, "teardown"):
                    bench.teardown(*first)
            seen += 1
    assert seen >= 8
