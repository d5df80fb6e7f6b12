"""The registry is complete and its flags tell the truth.

Every exported optimizer has a record in tests/optim_db; every elementwise
record's rule is in nopt/_registry.py (what the bench and its NumPy peer
read); the capability flags match what the optimizer does.
"""
import inspect

import numpy as np
import pytest

import nopt
import optim_db
from nopt import _reference, _registry

_HOW = ("add an OptimRecord for it to tests/optim_db/ (a module there with RECORDS = [...]); "
        "for an elementwise rule also add its Entry to nopt/_registry.py and its NumPy reference to "
        "nopt/_reference.py (README: Development, adding an optimizer)")


_OPTIMIZER_API = ("step", "zero_grad", "state_dict", "load_state_dict", "param_groups")


def _exported_optimizers():
    """Optimizer subclasses in nopt.__all__, and classes that act as one (wrappers)."""
    out = []
    for name in nopt.__all__:
        value = getattr(nopt, name)
        if not isinstance(value, type) or value is nopt.Optimizer:
            continue
        if issubclass(value, nopt.Optimizer) or all(hasattr(value, a) for a in _OPTIMIZER_API):
            out.append(name)
    return out


def test_every_exported_optimizer_has_a_record():
    names = {r.name for r in optim_db.RECORDS}
    missing = [n for n in _exported_optimizers() if n not in names]
    assert not missing, f"exported optimizers without a record: {missing}: {_HOW}"


def test_records_are_unique_and_exported():
    names = [r.name for r in optim_db.RECORDS]
    assert len(names) == len(set(names)), "two records for one optimizer"
    for r in optim_db.RECORDS:
        assert r.name in nopt.__all__, f"record {r.name!r} names no exported optimizer"
        assert r.quick_options, f"{r.name}: give it quick_options (a plain option set first)"


def test_registry_rules_match_the_elementwise_records():
    elementwise = {r.name for r in optim_db.records(elementwise=True)}
    per_array = {name for name, rule in _registry.RULES.items() if rule.per_array}
    assert per_array == elementwise, (
        f"nopt/_registry.py has {sorted(_registry.RULES)}, tests/optim_db's elementwise records "
        f"{sorted(elementwise)}: {_HOW}")
    for r in optim_db.records(elementwise=True):
        assert r.reference is _registry.RULES[r.name].reference, r.name


def test_records_filter_by_flag():
    assert [r.name for r in optim_db.records(needs_closure=True)] == ["LBFGS", "CG"]
    assert "ApplyIfFinite" in _exported_optimizers()
    assert [r.name for r in optim_db.records(wraps_optimizer=True)] == [
        "ApplyIfFinite", "MultiSteps", "Lookahead"]
    with pytest.raises(TypeError, match="no flag"):
        optim_db.records(banana=True)


def _params(record):
    rng = np.random.default_rng(0)
    return [nopt.Parameter(rng.standard_normal(s)) for s in ((3, 2), (2, 2))]


def _one_step(record, opt, params):
    if record.sparse_grad:
        import scipy.sparse as sp

        for p in params:
            p.grad = sp.csr_matrix(np.ones(p.shape))
        return opt.step()
    for p in params:
        p.grad = np.ones_like(p)
    if record.needs_closure:
        def closure():
            for p in params:
                p.grad = np.asarray(p) * 2.0
            return float(sum(np.sum(np.asarray(p) ** 2) for p in params))
        return opt.step(closure)
    return opt.step()


@pytest.mark.parametrize("record", optim_db.RECORDS, ids=lambda r: r.name)
def test_flags_match_the_optimizer(record):
    signature = inspect.signature(record.cls).parameters
    assert record.supports_maximize == ("maximize" in signature), "supports_maximize"
    assert record.supports_weight_decay == ("weight_decay" in signature), "supports_weight_decay"
    for options in record.option_sets + record.quick_options:
        assert set(options) <= set(signature), f"unknown options {options}"
    params = _params(record)
    opt = record.make(params, **record.quick_options[0])
    assert record.eager_state == (len(opt.state) > 0), "eager_state"
    if record.needs_closure:
        with pytest.raises((TypeError, RuntimeError, ValueError)):
            opt.step()
    _one_step(record, opt, params)
    assert record.counts_steps == all("step" in opt.state[p] for p in params), "counts_steps"
    if record.torch_oracle:
        torch = pytest.importorskip("torch")
        assert hasattr(torch.optim, record.torch_name or record.name), "torch_oracle"


@pytest.mark.parametrize("name", sorted(_registry.RULES))
def test_reference_reads_its_gradient_only(name):
    """The bench refills its gradients in place and reuses them: a reference must not write them."""
    rule = _registry.RULES[name]
    rng = np.random.default_rng(1)
    for options in optim_db.by_name(name).option_sets:
        opt = _reference.make(name, [rng.standard_normal(5)], [rng.standard_normal(5)], **options)
        grad = opt.grads[0].copy()
        for _ in range(3):
            opt.step()
        assert opt.grads[0].tobytes() == grad.tobytes(), options
    assert all(0 <= w <= r for r, w in rule.all_passes) and rule.bench_kwargs


def test_bench_iterates_the_registry():
    from nopt import bench

    assert bench.OPTIMIZERS is _registry.RULES
    assert set(bench.BYTES) == set(_registry.RULES)
    assert bench.BEYOND == [name for name, e in _registry.RULES.items() if not e.in_torch]


def test_registry_says_which_optimizers_torch_has():
    torch = pytest.importorskip("torch")
    for name, entry in _registry.RULES.items():
        assert entry.in_torch == hasattr(torch.optim, name), name


def _torch_signature_rows(cls):
    """(name, kind, default) of ``cls``'s constructor after ``self``, annotations dropped."""
    return [(p.name, p.kind, p.default)
            for p in list(inspect.signature(cls.__init__).parameters.values())[1:]]


@pytest.mark.parametrize("record", optim_db.records(torch_oracle=True), ids=lambda r: r.name)
def test_constructor_binds_every_torch_call_the_same(record):
    """torch's constructor arguments, in torch's order, with torch's kinds and defaults.

    So any call that binds for torch binds the same for nopt: ``ASGD(params, 0.01, 1e-4,
    0.75, 1e6, 0, None, True)`` maximizes in both. torch's kernel options may be left out
    only where torch takes them by keyword (the base class accepts them, see
    nopt._torch_options); nopt's own additions come last, with defaults.
    """
    torch = pytest.importorskip("torch")
    from nopt._torch_options import TORCH_OPTIONS

    theirs = [row for row in _torch_signature_rows(record.torch_cls)
              if not (row[0] in TORCH_OPTIONS and row[1] is inspect.Parameter.KEYWORD_ONLY)]
    ours = _torch_signature_rows(record.cls)
    assert ours[:len(theirs)] == theirs
    for name, kind, default in ours[len(theirs):]:
        assert default is not inspect.Parameter.empty, f"nopt-only {name} needs a default"
        assert name not in TORCH_OPTIONS


@pytest.mark.parametrize("record", optim_db.records(torch_oracle=True), ids=lambda r: r.name)
def test_positional_torch_options_are_checked(record):
    """An option torch takes by position is checked there too: True is refused, as by keyword."""
    from nopt._torch_options import TORCH_OPTIONS

    rows = _torch_signature_rows(record.cls)
    positional = [i for i, (name, kind, _) in enumerate(rows)
                  if name in TORCH_OPTIONS and kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    for i in positional:
        args = [default for _, _, default in rows[1:i]] + [True]
        with pytest.raises(ValueError, match=rf"{rows[i][0]}=True\) is not supported"):
            record.cls(_params(record), *args)


def test_asgd_and_rmsprop_take_maximize_by_position_as_torch():
    """The stop's finding: torch accepts maximize by position for ASGD and RMSprop."""
    for cls, args in ((nopt.ASGD, (0.01, 1e-4, 0.75, 1e6, 0, None, True)),
                      (nopt.RMSprop, (0.01, 0.99, 1e-8, 0, 0, False, False, None, True))):
        p = nopt.Parameter(np.zeros(3))
        p.grad = np.ones(3)
        opt = cls([p], *args)
        assert opt.defaults["maximize"] is True
        assert "foreach" not in opt.defaults and "capturable" not in opt.defaults
        opt.step()
        assert (np.asarray(p) > 0).all()   # maximizing: moved along the gradient


def test_registry_entries_take_kernel_facts_from_the_rule_spec():
    """One source of truth: an optimizer with a rule spec states no stream counts in the
    registry (they come from the spec's streams under the bench's options); only one whose
    kernel is its own states them."""
    for name, entry in _registry.RULES.items():
        spec = getattr(nopt, name).rule
        assert (entry.reads is None) == (spec is not None), name
        if spec is not None:
            assert entry.spec is spec
            group = entry.spec.resolve(
                getattr(nopt, name)([nopt.Parameter(np.zeros(1))], **entry.bench_kwargs)
                .param_groups[0])[0]
            assert (entry.n_read, entry.n_write) == (2 + len(group), 1 + len(group)), name
    # The figures the bench has always used (README, Performance).
    assert [(_registry.RULES[n].n_read, _registry.RULES[n].n_write)
            for n in ("SGD", "Adam", "Adagrad", "RMSprop", "Rprop", "ASGD")] == [
        (3, 2), (4, 3), (3, 2), (3, 2), (4, 3), (3, 2)]
    assert not hasattr(_registry, "Rule"), "one Rule class: nopt._kernels._spec.Rule"


def test_records_take_state_keys_and_step_count_from_the_rule_spec():
    for record in optim_db.RECORDS:
        spec = getattr(record.cls, "rule", None)
        if spec is not None:
            assert record.state_keys == spec.stream_keys, record.name
            assert record.counts_steps == spec.step, record.name
    with pytest.raises(ValueError, match="come from its rule spec"):
        optim_db.OptimRecord(name="Adam", option_sets=[{}], state_keys=("exp_avg",))
