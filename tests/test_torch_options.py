"""torch's foreach/fused/capturable/differentiable keywords on every nopt optimizer."""
import inspect

import numpy as np
import pytest

import nopt
from nopt.demo import optimizer_classes
from nopt._torch_options import TORCH_OPTIONS

OPTIONS = list(TORCH_OPTIONS)


def _constructible():
    """Exported optimizers that take params first and need nothing else."""
    for name, cls in optimizer_classes().items():
        parameters = list(inspect.signature(cls).parameters.values())
        if parameters and parameters[0].name == "params" and all(
                p.default is not inspect.Parameter.empty
                or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters[1:]):
            yield name


NAMES = sorted(_constructible())


def test_every_torch_style_optimizer_is_covered():
    assert {"SGD", "Adam", "AdamW", "SparseAdam", "ASGD", "LBFGS", "CG"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_none_and_false_are_accepted_and_ignored(name):
    cls = getattr(nopt, name)
    p, q = nopt.Parameter(np.ones((2, 2))), nopt.Parameter(np.ones((2, 2)))
    plain = cls([p])
    with_options = cls([q], foreach=None, fused=None, capturable=False, differentiable=False)
    assert with_options.defaults == plain.defaults
    assert with_options.param_groups[0].keys() == plain.param_groups[0].keys()
    for option in OPTIONS:
        assert option not in with_options.defaults
    cls([nopt.Parameter(np.ones((2, 2)))], foreach=False, fused=False, capturable=np.bool_(False))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("option", OPTIONS)
def test_true_is_refused_with_the_reason(name, option):
    cls = getattr(nopt, name)
    with pytest.raises(ValueError, match=rf"^{name}\({option}=True\) is not supported: "
                                         r"nopt has one kernel path"):
        cls([nopt.Parameter(np.ones((2, 2)))], **{option: True})
    with pytest.raises(TypeError, match=f"{option} must be None or a bool"):
        cls([nopt.Parameter(np.ones((2, 2)))], **{option: "yes"})


@pytest.mark.parametrize("name", NAMES)
def test_signature_stays_the_optimizers_own(name):
    cls = getattr(nopt, name)
    init = cls.__dict__.get("__init__")
    params = inspect.signature(cls).parameters
    assert list(params)[0] == "params"
    assert not any(p.kind is p.VAR_KEYWORD for p in params.values())
    if init is not None:
        assert inspect.signature(init) == inspect.signature(init.__wrapped__)
    # Unknown keywords still fail as Python's own error does.
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        cls([nopt.Parameter(np.ones((2, 2)))], bogus=1)


def test_step_is_not_wrapped_by_it():
    # The options are handled at construction; step's wrapper is only the hook one.
    step = nopt.Adam.step
    assert getattr(step, "_nopt_hooked", False)
    # The base class owns step (the rule layer): Adam has no step of its own.
    assert step is nopt.Optimizer.step
    assert step.__wrapped__.__qualname__ == "Optimizer.step"


def test_subclass_forwarding_kwargs_checks_once():
    calls = []

    class Mine(nopt.SGD):
        def __init__(self, params, **kwargs):
            calls.append(kwargs)
            super().__init__(params, **kwargs)

    p = nopt.Parameter(np.ones((2, 2)))
    Mine([p], lr=0.1, foreach=False)
    assert calls == [{"lr": 0.1, "foreach": False}]
    with pytest.raises(ValueError, match=r"^Mine\(fused=True\)"):
        Mine([p], fused=True)


def test_wrappers_around_an_optimizer_are_left_alone():
    class Wrapper(nopt.Optimizer):
        def __init__(self, optimizer, k=5):
            super().__init__(optimizer.param_groups[0]["params"], {"k": k})

    assert "__wrapped__" not in vars(Wrapper.__init__)
    with pytest.raises(TypeError, match="unexpected keyword argument 'foreach'"):
        Wrapper(nopt.SGD([nopt.Parameter(np.ones((2, 2)))], lr=0.1), foreach=False)
