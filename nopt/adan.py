"""Adan: adaptive Nesterov momentum (Xie et al. 2022)."""
from . import _beyond
from ._kernels.helpers import adan as _adan_kernel
from .optimizer import Optimizer

__all__ = ["Adan"]

_KEYS = ("exp_avg", "exp_avg_diff", "exp_avg_sq", "pre_grad")


class Adan(Optimizer):
    r"""Adan, as the paper's Algorithm 1 and the authors' implementation.

    With :math:`\beta_i` the decay rates (the paper writes :math:`1-\beta_i`):

    .. math::
        \begin{aligned}
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) \qquad
        \Delta_t \leftarrow g_t - g_{t-1} \ (0 \text{ at } t = 1) \\
        m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1) g_t \qquad
        v_t \leftarrow \beta_2 v_{t-1} + (1-\beta_2) \Delta_t \\
        n_t &\leftarrow \beta_3 n_{t-1} + (1-\beta_3) (g_t + \beta_2 \Delta_t)^2 \\
        u_t &\leftarrow \Big(\frac{m_t}{1-\beta_1^t} + \beta_2\frac{v_t}{1-\beta_2^t}\Big)
             \Big/ \Big(\frac{\sqrt{n_t}}{\sqrt{1-\beta_3^t}} + \epsilon\Big) \\
        \theta_t &\leftarrow (\theta_{t-1} - \gamma u_t) / (1 + \gamma\lambda)
             \quad\text{or, with } \texttt{no\_prox},\quad
             (1-\gamma\lambda)\,\theta_{t-1} - \gamma u_t
        \end{aligned}

    The sign of the gradient is ``-`` when ``maximize``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 1e-3
        Learning rate :math:`\gamma`.
    betas : (float, float, float), default (0.98, 0.92, 0.99)
        Decay rates :math:`\beta_1, \beta_2, \beta_3`, in [0, 1).
    eps : float, default 1e-8
        Added to the denominator.
    weight_decay : float, default 0
        Weight decay :math:`\lambda`: proximal (the paper's division) by
        default, decoupled with ``no_prox=True``.
    no_prox : bool, default False
        Decay as AdamW (multiply by :math:`1-\gamma\lambda` first).
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Notes
    -----
    State per parameter: ``step`` (a float), ``exp_avg``, ``exp_avg_diff``,
    ``exp_avg_sq`` and ``pre_grad`` (the authors' names; ``pre_grad`` holds
    the last signed gradient). Matches pytorch-optimizer's ``Adan``.
    ``optax.adan`` weighs the gradient difference by :math:`1-\beta_2` where
    the paper (and the authors' code) use :math:`\beta_2`, its
    :math:`1-\beta_2`: the two agree only for :math:`\beta_2 = 0.5`, where
    the tests compare with it (``no_prox=True``, ``eps_root=0``).

    References
    ----------
    .. [1] Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster
       Optimizing Deep Models", IEEE TPAMI 2024, arXiv:2208.06677, Algorithm 1.
    """

    _elementwise_state = _KEYS
    _required_state = ("step",) + _KEYS
    _fresh = {"step": 0.0}
    _copied = ()
    _init_state = _beyond.init_state

    def __init__(self, params, lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0, *,
                 no_prox=False, maximize=False):
        _beyond.check_non_negative(lr=lr, eps=eps)
        betas = _beyond.check_betas(betas, 3)
        _beyond.check_non_negative(weight_decay=weight_decay)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, no_prox=no_prox,
                        maximize=maximize)
        super().__init__(params, defaults)

    def _plan(self, batch, calls, undo):
        group = batch.group
        tag = (batch.group_index, batch.is_double)
        columns, steps, common = self._count_step(batch, _KEYS, undo, cache=tag)
        beta1, beta2, beta3 = group["betas"]
        lr, wd = group["lr"], group["weight_decay"]
        if group["no_prox"]:
            pre, post = 1.0 - lr * wd, 1.0
        else:
            pre, post = 1.0, 1.0 / (1.0 + lr * wd)
        sign = -1.0 if group["maximize"] else 1.0
        for k, (step, params, grads, part) in enumerate(_beyond.split_steps(batch, columns, steps, common)):
            c1 = 1 / (1 - beta1 ** step)
            c2 = beta2 / (1 - beta2 ** step)
            inv_bc3_sqrt = 1 / (1 - beta3 ** step) ** 0.5
            ptrs, chunks, n_threads = self._table([params, grads, *part], (batch.group_index, k))
            calls.append((_adan_kernel, (ptrs, chunks, batch.is_double, n_threads, sign, beta1,
                                         beta2, beta3, c1, c2, inv_bc3_sqrt, group["eps"], -lr,
                                         pre, post, step == 1)))
