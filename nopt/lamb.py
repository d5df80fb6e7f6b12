"""LAMB: Adam's update scaled per parameter by a trust ratio (You et al. 2020)."""
from . import _beyond
from ._kernels.helpers import lamb as _lamb_kernel
from .optimizer import Optimizer

__all__ = ["LAMB"]

_KEYS = ("exp_avg", "exp_avg_sq")


class LAMB(Optimizer):
    r"""LAMB, as the paper's Algorithm 2 (with :math:`\phi` the identity) and ``optax.lamb``.

    .. math::
        \begin{aligned}
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) \\
        m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1) g_t \qquad
        v_t \leftarrow \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        r_t &\leftarrow \frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}
              + \lambda\theta_{t-1} \\
        \theta_t &\leftarrow \theta_{t-1} - \gamma\,
            \frac{\|\theta_{t-1}\|}{\|r_t\|}\, r_t
        \end{aligned}

    with the norms taken over each parameter array, and a trust ratio of 1
    when either norm is 0. The sign of the gradient is ``-`` when ``maximize``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 1e-3
        Learning rate :math:`\gamma`.
    betas : (float, float), default (0.9, 0.999)
        Decay rates :math:`\beta_1, \beta_2`, in [0, 1).
    eps : float, default 1e-6
        Added to the denominator (outside the square root, as the paper).
    weight_decay : float, default 0
        :math:`\lambda`, added to the Adam ratio before the trust ratio.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Notes
    -----
    State per parameter: ``step`` (a float), ``exp_avg``, ``exp_avg_sq``.
    A step is one kernel call per group: a first pass updates the moments
    and reduces :math:`\|\theta\|^2` and :math:`\|r\|^2` per parameter (in
    double, per fixed chunk, summed in chunk order: the same bits for any
    thread count); a second pass recomputes :math:`r` (never stored) and
    updates the parameters.

    References
    ----------
    .. [1] You et al., "Large Batch Optimization for Deep Learning: Training BERT
       in 76 minutes", ICLR 2020, arXiv:1904.00962, Algorithm 2.
    """

    _elementwise_state = _KEYS
    _required_state = ("step",) + _KEYS
    _fresh = {"step": 0.0}
    _copied = ()
    _init_state = _beyond.init_state

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0, *,
                 maximize=False):
        _beyond.check_non_negative(lr=lr, eps=eps)
        betas = _beyond.check_betas(betas, 2)
        _beyond.check_non_negative(weight_decay=weight_decay)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def _plan(self, batch, calls, undo):
        group = batch.group
        tag = (batch.group_index, batch.is_double)
        columns, steps, common = self._count_step(batch, _KEYS, undo, cache=tag)
        beta1, beta2 = group["betas"]
        sign = -1.0 if group["maximize"] else 1.0
        for k, (step, params, grads, part) in enumerate(_beyond.split_steps(batch, columns, steps, common)):
            c1 = 1 / (1 - beta1 ** step)
            inv_bc2_sqrt = 1 / (1 - beta2 ** step) ** 0.5
            ptrs, chunks, rows, partials, scale, n_threads = _beyond.segmented_table(
                self, [params, grads, *part], (batch.group_index, k))
            calls.append((_lamb_kernel, (ptrs, chunks, rows, partials, scale, batch.is_double,
                                         n_threads, sign,
                                         beta1, beta2, c1, inv_bc2_sqrt, group["eps"],
                                         group["weight_decay"], -group["lr"])))
