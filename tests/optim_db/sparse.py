"""SparseAdam: scipy.sparse gradients (tests/test_sparse_adam.py runs it
against torch with sparse COO tensors, and against its NumPy reference)."""
from nopt import _reference

from . import OptimRecord

RECORDS = [
    OptimRecord(
        name="SparseAdam",
        option_sets=[dict(lr=0.05)],
        quick_options=[dict(lr=0.05), dict(lr=0.05, maximize=True)],
        invalid=[
            (dict(lr=-0.1), ValueError, "Invalid learning rate: -0.1"),
            (dict(eps=-1.0), ValueError, "Invalid epsilon value: -1.0"),
            (dict(betas=(1.0, 0.9)), ValueError, "Invalid beta parameter at index 0: 1.0"),
        ],
        state_keys=("exp_avg", "exp_avg_sq"),
        reference=_reference.sparse_adam,   # grad: a COO triple (rows, cols, vals)
        elementwise=False,       # the generic harness feeds dense gradients
        sparse_grad=True,
        supports_weight_decay=False,
        torch_kwargs={},
    ),
]
