import copy
import pickle

import numpy as np
import pytest

import nopt
from nopt import Parameter


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wraps_float_array_without_copy(dtype):
    x = np.arange(6, dtype=dtype).reshape(2, 3)
    p = Parameter(x)
    assert isinstance(p, np.ndarray) and isinstance(p, Parameter)
    assert p.dtype == dtype and p.shape == (2, 3)
    assert np.shares_memory(p, x)
    assert p.grad is None


def test_defaults_and_conversion():
    assert Parameter([1.0, 2.0]).dtype == np.float64
    assert Parameter([1, 2]).dtype == np.float64
    assert Parameter(3.0).shape == ()
    p = Parameter(np.arange(3), dtype=np.float32)
    assert p.dtype == np.float32
    x = np.ones(3)
    q = Parameter(x, dtype=np.float32)  # explicit conversion copies
    assert not np.shares_memory(q, x)


@pytest.mark.parametrize("bad", [np.arange(3), np.ones(2, dtype=np.float16), np.ones(2, complex),
                                 np.array(["a"]), np.array([object()])])
def test_rejects_other_dtypes(bad):
    with pytest.raises(TypeError):
        Parameter(bad)


@pytest.mark.parametrize("bad", ["abc", None, {"a": 1}, {1, 2}, [object()]])
def test_rejects_other_inputs(bad):
    with pytest.raises(TypeError):
        Parameter(bad)


def test_rejects_bad_dtype_argument():
    with pytest.raises(TypeError, match="float32 or float64"):
        Parameter([1.0], dtype=np.int32)
    with pytest.raises(TypeError, match="float32 or float64"):
        Parameter([1.0], dtype="not a dtype")


def test_rejects_readonly():
    y = np.ones(3)
    y.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        Parameter(y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [
    lambda x: np.asfortranarray(x),
    lambda x: x[:, ::2],
    lambda x: x.T,
    lambda x: x[::-1],
], ids=["fortran", "strided", "transposed", "reversed"])
def test_non_contiguous_data_is_copied_to_c_order(make, dtype):
    base = np.arange(24, dtype=dtype).reshape(4, 6)
    data = make(base)
    p = Parameter(data)
    assert p.flags.c_contiguous and p.flags.writeable
    assert p.dtype == dtype and p.shape == data.shape
    np.testing.assert_array_equal(p, data)
    assert not np.shares_memory(p, base)
    # The optimizer updates the copy; the original is left alone.
    import nopt
    before = base.copy()
    p.grad = np.ones(p.shape, dtype)
    nopt.SGD([p], lr=0.5).step()
    np.testing.assert_array_equal(p, data - dtype(0.5))
    np.testing.assert_array_equal(base, before)


def test_read_only_non_contiguous_data_is_copied():
    x = np.ones((3, 4))
    x.flags.writeable = False
    p = Parameter(x.T)
    assert p.flags.writeable and p.flags.c_contiguous and p.shape == (4, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_c_contiguous_writeable_float_data_is_wrapped_without_copy(dtype):
    for data in (np.zeros((3, 4), dtype), np.zeros(5, dtype), np.zeros((4, 6), dtype)[1:3]):
        p = Parameter(data)
        assert np.shares_memory(p, data) and p.__array_interface__["data"][0] == data.ctypes.data
        p.grad = np.ones(p.shape, dtype)
        import nopt
        nopt.SGD([p], lr=1.0).step()
        np.testing.assert_array_equal(data, -np.ones_like(data))


def test_arithmetic_returns_plain_ndarray():
    p = Parameter(np.ones(3))
    for result in (p + 1, p * p, -p, np.exp(p), p.sum(), p @ p, np.dot(p, p),
                   np.concatenate([p, p]), p[1:], np.where(p > 0, p, 0)):
        assert type(result) is not Parameter
    assert type(p + 1) is np.ndarray


def test_inplace_ops_keep_identity_and_memory():
    x = np.ones(3)
    p = Parameter(x)
    q = p
    p += 1
    p *= 2
    np.add(p, 1, out=p)
    assert p is q and type(p) is Parameter
    np.testing.assert_array_equal(x, [5, 5, 5])


def test_hashable_by_identity():
    p, q = Parameter(np.ones(2)), Parameter(np.ones(2))
    d = {p: 1, q: 2}
    assert d[p] == 1 and d[q] == 2
    assert hash(p) != hash(q)


def test_grad_assignment_and_checks():
    p = Parameter(np.zeros((2, 2), dtype=np.float32))
    g = np.ones((2, 2), dtype=np.float32)
    p.grad = g
    assert p.grad is g
    p.grad[...] = 3
    assert p.grad[0, 0] == 3
    with pytest.raises(ValueError, match="shape"):
        p.grad = np.ones(4, dtype=np.float32)
    with pytest.raises(TypeError, match="dtype"):
        p.grad = np.ones((2, 2))
    with pytest.raises(TypeError):
        p.grad = [[1.0, 1.0], [1.0, 1.0]]
    p.grad = None
    assert p.grad is None
    p.grad = g
    del p.grad
    assert p.grad is None


def test_step_updates_in_place():
    x = np.ones(3)
    p = Parameter(x)
    address = p.__array_interface__["data"][0]
    opt = nopt.SGD([p], lr=0.5)
    p.grad = np.ones(3)
    opt.step()
    assert p.__array_interface__["data"][0] == address
    np.testing.assert_array_equal(x, [0.5, 0.5, 0.5])


def test_copy_pickle_roundtrip():
    p = Parameter(np.arange(3.0))
    p.grad = np.ones(3)
    q = copy.deepcopy(p)
    assert type(q) is Parameter and not np.shares_memory(p, q)
    np.testing.assert_array_equal(q.grad, p.grad)
    r = pickle.loads(pickle.dumps(p))
    assert type(r) is Parameter
    np.testing.assert_array_equal(r, p)


def test_grad_accepts_scipy_sparse_of_the_same_shape():
    import scipy.sparse as sp

    p = Parameter(np.zeros((3, 4)))
    g = sp.coo_array(([1.0], ([0], [1])), shape=(3, 4))
    p.grad = g
    assert p.grad is g
    with pytest.raises(ValueError, match="shape"):
        p.grad = sp.csr_matrix((4, 3))
