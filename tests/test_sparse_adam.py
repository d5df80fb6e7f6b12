"""nopt.SparseAdam against torch.optim.SparseAdam and a NumPy reference.

Gradients are random (row, col, value) triplets with duplicate coordinates,
fed to nopt as scipy.sparse COO/CSR matrices and arrays (CSR built directly
from the triplets, so it keeps duplicates and unsorted columns) and to torch
as uncoalesced sparse COO tensors. Some steps give a parameter an empty
gradient (torch still counts the step) or none at all.
"""
import warnings

import numpy as np
import pytest

import nopt
import optim_db
from harness import TOL, assert_close, assert_same_snapshot, snapshot

sp = pytest.importorskip("scipy.sparse")

DTYPES = [np.float64, np.float32]
DTYPE_IDS = ["f64", "f32"]
SHAPES = [(6, 5), (12, 3), (4, 7), (1, 9)]
FORMATS = ["coo_matrix", "coo_array", "csr_matrix", "csr_array"]


def set_grad(p, g):
    p.grad = g


def triplets(rng, shape, dtype, t):
    """Random coordinates with duplicates; empty every 7th step."""
    if t % 7 == 3:
        nnz = 0
    else:
        nnz = int(rng.integers(1, 2 * shape[0] * shape[1]))
    rows = rng.integers(0, shape[0], nnz)
    cols = rng.integers(0, shape[1], nnz)
    vals = rng.standard_normal(nnz).astype(dtype)
    return rows, cols, vals


def to_scipy(rows, cols, vals, shape, fmt):
    if fmt.startswith("coo"):
        cls = sp.coo_matrix if fmt == "coo_matrix" else sp.coo_array
        return cls((vals, (rows, cols)), shape=shape)
    # CSR straight from the triplets: duplicates and unsorted columns kept.
    order = np.argsort(rows, kind="stable")
    indptr = np.zeros(shape[0] + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=shape[0]), out=indptr[1:])
    cls = sp.csr_matrix if fmt == "csr_matrix" else sp.csr_array
    g = cls((vals[order], cols[order].astype(np.int32), indptr), shape=shape)
    assert g.nnz == len(vals)
    return g


def to_torch(rows, cols, vals, shape):
    import torch
    return torch.sparse_coo_tensor(np.stack([rows, cols]), torch.from_numpy(vals.copy()), shape)


class Source:
    """The gradient triplets of every step, the same for every consumer."""

    def __init__(self, dtype, shapes=SHAPES, seed=1):
        self.dtype, self.shapes, self.seed = dtype, shapes, seed

    def __call__(self, t):
        rng = np.random.default_rng([self.seed, t])
        out = []
        for i, shape in enumerate(self.shapes):
            if (t + i) % 9 == 4:
                out.append(None)  # no gradient this step
            else:
                out.append(triplets(rng, shape, self.dtype, t + i))
        return out


def groups_of(items, options):
    lr = options.get("lr", 1e-3)
    return [{"params": items[:2]}, {"params": items[2:], "lr": lr * 0.5}]


def initial(dtype, shapes=SHAPES, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def run_nopt(dtype, options, steps, start=0, params=None, optimizer=None, shapes=SHAPES):
    if params is None:
        params = [nopt.Parameter(a) for a in initial(dtype, shapes)]
        optimizer = nopt.SparseAdam(groups_of(params, options), **options)
    source = Source(dtype, shapes)
    for t in range(start, start + steps):
        for i, (p, trip) in enumerate(zip(params, source(t))):
            set_grad(p, None if trip is None else to_scipy(*trip, p.shape, FORMATS[(t + i) % 4]))
        optimizer.step()
    return params, optimizer


def run_torch(dtype, options, steps, shapes=SHAPES):
    import torch
    tparams = [torch.tensor(a, requires_grad=True) for a in initial(dtype, shapes)]
    optimizer = torch.optim.SparseAdam(groups_of(tparams, options), **options)
    source = Source(dtype, shapes)
    for t in range(steps):
        for p, trip in zip(tparams, source(t)):
            p.grad = None if trip is None else to_torch(*trip, tuple(p.shape))
        optimizer.step()
    return tparams, optimizer


OPTIONS = [
    dict(lr=0.05),
    dict(lr=0.05, maximize=True),
    dict(lr=0.01, betas=(0.5, 0.9), eps=1e-6),
    dict(lr=0.2, betas=(0.0, 0.99), maximize=True),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("options", OPTIONS, ids=[str(o) for o in OPTIONS])
def test_parity_with_torch(dtype, options):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    rtol = TOL[dtype]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's sparse invariant-check notice
        params, optimizer = run_nopt(dtype, options, 100)
        tparams, toptimizer = run_torch(dtype, options, 100)
    for i, (p, tp) in enumerate(zip(params, tparams)):
        assert_close(p, tp.detach().numpy(), rtol, f"param {i}")
    ours = optimizer.state_dict()["state"]
    theirs = toptimizer.state_dict()["state"]
    assert sorted(ours) == sorted(theirs)
    for pid, tstate in theirs.items():
        assert set(ours[pid]) == set(tstate) == {"step", "exp_avg", "exp_avg_sq"}
        assert ours[pid]["step"] == tstate["step"] and type(ours[pid]["step"]) is int
        for key in ("exp_avg", "exp_avg_sq"):
            assert ours[pid][key].dtype == dtype
            assert_close(ours[pid][key], tstate[key].numpy(), rtol, f"state[{pid}][{key!r}]")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_moments_are_bitwise_torch(dtype):
    """Same coalescing and order of operations as torch: the moments agree to the bit.

    Each coordinate appears at most twice, as torch's coalesce sums three or
    more duplicates in an order of its own (its sort is not stable). The
    parameters agree to rounding only: torch's vectorised sqrt (MKL VML) is
    not always correctly rounded, nopt's is.
    """
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    shape = (9, 7)
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    p = nopt.Parameter(x.copy())
    tp = torch.tensor(x.copy(), requires_grad=True)
    opt = nopt.SparseAdam([p], lr=0.1, maximize=True)
    topt = torch.optim.SparseAdam([tp], lr=0.1, maximize=True)
    rng = np.random.default_rng(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in range(40):
            lin = rng.choice(p.size, int(rng.integers(1, p.size)), replace=False)
            lin = rng.permutation(np.concatenate([lin, lin[: lin.size // 2]]))
            rows, cols = np.divmod(lin, shape[1])
            vals = rng.standard_normal(lin.size).astype(dtype)
            set_grad(p, to_scipy(rows, cols, vals, shape, FORMATS[t % 4]))
            tp.grad = to_torch(rows, cols, vals, shape)
            opt.step()
            topt.step()
    for key in ("exp_avg", "exp_avg_sq"):
        assert opt.state[p][key].tobytes() == topt.state[tp][key].numpy().tobytes(), key
    assert_close(p, tp.detach().numpy(), TOL[dtype], "param")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("options", OPTIONS, ids=[str(o) for o in OPTIONS])
def test_matches_numpy_reference(dtype, options):
    record = optim_db.by_name("SparseAdam")   # its reference: nopt/_reference.py
    steps = 40
    params, optimizer = run_nopt(dtype, options, steps)
    arrays = initial(dtype)
    states = [dict() for _ in arrays]
    defaults = dict(optimizer.defaults)
    source = Source(dtype)
    for t in range(steps):
        trips = source(t)
        for gi, group in enumerate(groups_of(list(range(len(arrays))), options)):
            hyper = {**defaults, **{k: v for k, v in group.items() if k != "params"}}
            for i in group["params"]:
                if trips[i] is not None:
                    record.reference(arrays[i], trips[i], states[i], hyper)
    rtol = TOL[dtype]
    for i, (p, a) in enumerate(zip(params, arrays)):
        assert_close(p, a, rtol, f"param {i}")
        assert optimizer.state[p]["step"] == states[i]["step"]
        for key in ("exp_avg", "exp_avg_sq"):
            assert_close(optimizer.state[p][key], states[i][key], rtol, f"state[{i}][{key!r}]")


def test_only_stored_entries_change():
    p = nopt.Parameter(np.arange(12.0).reshape(3, 4))
    before = np.array(p)
    opt = nopt.SparseAdam([p], lr=0.1)
    # (0, 1) twice: summed to zero, still a stored entry; (2, 3) an explicit zero.
    set_grad(p, sp.coo_array(([1.0, -1.0, 0.0, 2.0], ([0, 0, 2, 1], [1, 1, 3, 0])), shape=(3, 4)))
    opt.step()
    touched = np.zeros((3, 4), bool)
    touched[[0, 2, 1], [1, 3, 0]] = True
    np.testing.assert_array_equal(p[~touched], before[~touched])
    assert np.all(opt.state[p]["exp_avg"][~touched] == 0)
    assert p[1, 0] < before[1, 0]
    # Zero-valued entries still decay their moments (and move nothing at step 1).
    set_grad(p, sp.csr_array(([0.0], [0], [0, 0, 1, 1]), shape=(3, 4)))
    opt.step()
    assert opt.state[p]["exp_avg"][1, 0] == pytest.approx(0.9 * 0.2)
    assert opt.state[p]["step"] == 2


def test_other_formats_and_dtypes_are_converted():
    rows, cols, vals = np.array([0, 2, 0]), np.array([1, 0, 1]), np.array([1.0, 2.0, 3.0])
    reference = None
    for make in (
        lambda: sp.coo_matrix((vals, (rows, cols)), shape=(3, 2)),
        lambda: sp.csc_matrix(sp.coo_matrix((vals, (rows, cols)), shape=(3, 2))),
        lambda: sp.lil_array(sp.coo_array((vals, (rows, cols)), shape=(3, 2))),
        lambda: sp.coo_array((vals.astype(np.float32), (rows, cols)), shape=(3, 2)),
        lambda: sp.coo_array((np.array([1, 2, 3]), (rows, cols)), shape=(3, 2)),
    ):
        p = nopt.Parameter(np.ones((3, 2)))
        opt = nopt.SparseAdam([p], lr=0.1)
        set_grad(p, make())
        opt.step()
        if reference is None:
            reference = np.array(p)
        np.testing.assert_array_equal(p, reference)


def test_dense_gradient_raises_like_torch():
    p = nopt.Parameter(np.zeros((2, 3)))
    opt = nopt.SparseAdam([p])
    p.grad = np.ones((2, 3))
    with pytest.raises(RuntimeError, match=r"SparseAdam does not support dense gradients, "
                                           r"please consider Adam instead.*\['params'\]\[0\]"):
        opt.step()
    assert len(opt.state) == 0 and np.all(p == 0)


@pytest.mark.parametrize("bad, exc, match", [
    ("dense", RuntimeError, "dense gradients"),
    ("shape", ValueError, r"shape \(4, 8\); expected \(4, 7\)"),
    ("complex", TypeError, "complex128"),
    ("list", TypeError, "scipy.sparse"),
    ("index", ValueError, "out of range"),
    ("indptr", ValueError, "malformed CSR"),
])
@pytest.mark.parametrize("warm", [False, True], ids=["fresh", "warm"])
def test_bad_gradient_changes_nothing(bad, exc, match, warm):
    options = dict(lr=0.05)
    if warm:
        params, optimizer = run_nopt(np.float64, options, 5)
    else:
        params = [nopt.Parameter(a) for a in initial(np.float64)]
        optimizer = nopt.SparseAdam(groups_of(params, options), **options)
    before = snapshot(params, optimizer)
    for p in params:
        set_grad(p, sp.coo_array(([1.0], ([0], [0])), shape=p.shape))
    p = params[2]  # group 1: group 0 is valid and must not be stepped either
    if bad == "dense":
        p.grad = np.ones(p.shape)
    elif bad == "shape":
        p._grad = sp.coo_array(([1.0], ([0], [0])), shape=(4, 8))  # past the setter: the step checks too
    elif bad == "complex":
        set_grad(p, sp.coo_array(([1.0 + 1j], ([0], [0])), shape=p.shape))
    elif bad == "list":
        p._grad = [[1.0]]
    elif bad == "index":
        g = sp.coo_array(([1.0], ([0], [0])), shape=p.shape)
        g.col[0] = 7  # scipy does not re-check after construction
        set_grad(p, g)
    else:
        g = sp.csr_array(([1.0, 2.0], [0, 1], [0, 2, 2, 2, 2]), shape=p.shape)
        g.indptr[1] = 3
        set_grad(p, g)
    with pytest.raises(exc, match=match):
        optimizer.step()
    with pytest.raises(exc, match=r"param_groups\[1\]\['params'\]\[0\]"):
        optimizer.step()
    assert_same_snapshot(before, snapshot(params, optimizer))
    if not warm:
        assert len(optimizer.state) == 0


def test_invalid_hyperparameters_like_torch():
    torch = pytest.importorskip("torch")
    for kwargs, match in [
        (dict(lr=0.0), "Invalid learning rate"),
        (dict(lr=-1.0), "Invalid learning rate"),
        (dict(eps=0.0), "Invalid epsilon value"),
        (dict(betas=(1.0, 0.9)), "Invalid beta parameter at index 0"),
        (dict(betas=(0.9, -0.1)), "Invalid beta parameter at index 1"),
    ]:
        with pytest.raises(ValueError, match=match):
            nopt.SparseAdam([nopt.Parameter(np.zeros((2, 2)))], **kwargs)
        with pytest.raises(ValueError, match=match):
            torch.optim.SparseAdam([torch.zeros(2, 2, requires_grad=True)], **kwargs)
    with pytest.raises(TypeError):
        nopt.SparseAdam({nopt.Parameter(np.zeros((2, 2)))})
    opt = nopt.SparseAdam([nopt.Parameter(np.zeros((2, 2)))], 0.1, (0.8, 0.9), 1e-6, True)
    assert opt.defaults == dict(lr=0.1, betas=(0.8, 0.9), eps=1e-6, maximize=True)


def test_state_dict_round_trip_continues_bitwise(tmp_path):
    options = dict(lr=0.05, maximize=True)
    for dtype in DTYPES:
        params, optimizer = run_nopt(dtype, options, 12)
        nopt.save({"optimizer": optimizer.state_dict(), "params": [np.array(p) for p in params]},
                  tmp_path / "ckpt.nopt")
        run_nopt(dtype, options, 12, start=12, params=params, optimizer=optimizer)

        saved = nopt.load(tmp_path / "ckpt.nopt")
        params2 = [nopt.Parameter(a) for a in saved["params"]]
        optimizer2 = nopt.SparseAdam(groups_of(params2, options), **options)
        optimizer2.load_state_dict(saved["optimizer"])
        assert all(type(s["step"]) is int for s in optimizer2.state.values())
        run_nopt(dtype, options, 12, start=12, params=params2, optimizer=optimizer2)
        assert_same_snapshot(snapshot(params, optimizer), snapshot(params2, optimizer2))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_threads_give_identical_bits(dtype):
    """Enough entries (with duplicates) to split over threads: 1, 2, 3 threads agree bitwise."""
    shapes = [(1000, 500), (7, 3), (300, 200)]
    results = []
    for n in (1, 2, 3):
        rng = np.random.default_rng(3)
        params = [nopt.Parameter(rng.standard_normal(s).astype(dtype)) for s in shapes]
        optimizer = nopt.SparseAdam(params, lr=0.01)
        with nopt.num_threads(n):
            for t in range(3):
                for i, p in enumerate(params):
                    nnz = p.size // 3
                    rows = rng.integers(0, p.shape[0], nnz)
                    cols = rng.integers(0, p.shape[1], nnz)
                    vals = rng.standard_normal(nnz).astype(dtype)
                    set_grad(p, to_scipy(rows, cols, vals, p.shape, FORMATS[(t + i) % 4]))
                optimizer.step()
        results.append([p.tobytes() for p in params]
                        + [optimizer.state[p][k].tobytes() for p in params
                           for k in ("exp_avg", "exp_avg_sq")])
    assert results[0] == results[1] == results[2]


def test_parameter_listed_twice_is_rejected():
    # torch warns and steps it twice; nopt's kernels update a group in parallel,
    # so the base class refuses duplicates outright.
    p = nopt.Parameter(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="duplicate parameters"):
        nopt.SparseAdam([p, p], lr=0.1)


def test_zero_grad_keeps_sparse_format_and_empties_it():
    p = nopt.Parameter(np.ones((3, 4)))
    opt = nopt.SparseAdam([p], lr=0.1)
    for fmt in FORMATS:
        set_grad(p, to_scipy(np.array([0, 2]), np.array([1, 3]), np.array([1.0, 2.0]), p.shape, fmt))
        opt.zero_grad(set_to_none=False)
        assert type(p.grad).__name__ == fmt and p.grad.shape == (3, 4) and p.grad.nnz == 0
        before = np.array(p)
        opt.step()  # an empty gradient: the step count moves, nothing else
        np.testing.assert_array_equal(p, before)
    assert opt.state[p]["step"] == 4
    opt.zero_grad()
    assert p.grad is None
