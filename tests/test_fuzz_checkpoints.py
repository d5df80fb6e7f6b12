"""Fuzzing: corrupted checkpoint bytes and mutated state dicts never crash
with anything but a clear TypeError/ValueError, and never change the optimizer."""
import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nopt
from nopt import CheckpointError
from harness import assert_same_snapshot, snapshot


def _trained(momentum=0.9):
    rng = np.random.default_rng(0)
    params = [nopt.Parameter(rng.standard_normal(s)) for s in [(3,), (2, 2), (1,)]]
    opt = nopt.SGD([{"params": params[:2]}, {"params": params[2:], "lr": 0.5}], lr=0.1, momentum=momentum)
    for _ in range(2):
        for p in params:
            p.grad = rng.standard_normal(p.shape)
        opt.step()
    return params, opt


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "c.nopt"
    _, opt = _trained()
    nopt.save({"optimizer": opt.state_dict(), "note": "x", "n": [1, 2.5, None]}, path)
    return path.read_bytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_bytes_raise_checkpoint_error_or_load(checkpoint_bytes, data, tmp_path):
    raw = bytearray(checkpoint_bytes)
    kind = data.draw(st.sampled_from(["flip", "truncate", "splice", "zero"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "splice":
        i = data.draw(st.integers(0, len(raw)))
        raw[i:i] = data.draw(st.binary(min_size=1, max_size=64))
    else:
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i:i + data.draw(st.integers(1, 200))] = b"\0" * 8
    path = tmp_path / "c.nopt"
    path.write_bytes(bytes(raw))
    try:
        nopt.load(path)
    except CheckpointError:
        pass


_MUTATIONS = ["drop", "string", "none", "shape", "dtype", "nan_step", "neg_step", "list", "big_id", "extra_group", "nested"]


def _mutate(sd, data):
    sd = copy.deepcopy(sd)
    kind = data.draw(st.sampled_from(_MUTATIONS))
    where = data.draw(st.sampled_from(["state", "group"]))
    if where == "state":
        pid = data.draw(st.sampled_from(sorted(sd["state"])))
        target = sd["state"][pid]
        key = data.draw(st.sampled_from(sorted(target) or ["momentum_buffer"]))
    else:
        gi = data.draw(st.integers(0, len(sd["param_groups"]) - 1))
        target = sd["param_groups"][gi]
        key = data.draw(st.sampled_from(sorted(target)))
    value = target.get(key)
    if kind == "drop":
        target.pop(key, None)
    elif kind == "string":
        target[key] = "oops"
    elif kind == "none":
        target[key] = None
    elif kind == "shape" and isinstance(value, np.ndarray):
        target[key] = np.zeros(value.size + 1)
    elif kind == "dtype" and isinstance(value, np.ndarray):
        target[key] = value.astype(data.draw(st.sampled_from([np.int32, np.complex128, object, bool])))
    elif kind == "nan_step":
        target[key] = float("nan")
    elif kind == "neg_step":
        target[key] = -3
    elif kind == "list":
        target[key] = [value, value]
    elif kind == "big_id":
        sd["state"][10**9] = {}
    elif kind == "extra_group":
        sd["param_groups"].append(dict(sd["param_groups"][0], params=[77]))
    elif kind == "nested":
        target[key] = {"a": {"b": value}}
    return sd


from harness import run_nopt  # noqa: E402
from optim_db import records  # noqa: E402

_TRAINED = [(r.name, r, r.option_sets[-1]) for r in records(elementwise=True, sparse_grad=False)]


def _trained_record(record, options):
    return run_nopt(record, options, np.float64, 3)


@pytest.mark.parametrize("name,record,options", _TRAINED, ids=[t[0] for t in _TRAINED])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_mutated_state_dict_of_every_optimizer_changes_nothing(name, record, options, data):
    params, opt = _trained_record(record, options)
    _check_mutation(params, opt, data)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_state_dict_raises_cleanly_and_changes_nothing(data):
    params, opt = _trained()
    _check_mutation(params, opt, data)


def _check_mutation(params, opt, data):
    sd = copy.deepcopy(opt.state_dict())
    bad = _mutate(sd, data)
    before = snapshot(params, opt)
    try:
        opt.load_state_dict(bad)
    except (TypeError, ValueError):
        assert_same_snapshot(before, snapshot(params, opt))
        return
    # Accepted: the optimizer must still step (or fail cleanly before changing anything).
    for p in params:
        p.grad = np.ones_like(p)
    before = snapshot(params, opt)
    try:
        opt.step()
    except (TypeError, ValueError):
        assert_same_snapshot(before, snapshot(params, opt))
