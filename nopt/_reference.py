"""Plain NumPy references of nopt's update rules: one per rule.

Each reference is a function ``rule(param, grad, state, group)`` that steps
one array in place: ``param`` and the arrays in ``state`` (the per-parameter
dict, with torch's keys, ``"step"`` included) are updated, ``grad`` is only
read, and ``group`` holds every hyperparameter. An empty ``state`` is
initialised on the first call, as torch does.

They serve twice:

* the tests' second oracle (``tests/optim_db`` records name them through
  :mod:`nopt._registry`), compared with nopt and torch;
* the NumPy peer of ``python -m nopt.bench`` (:func:`make`), the answer to
  "why not just NumPy?".

So they are written the way a careful NumPy user would write them: the
single-tensor (``foreach=False``) order of operations of their torch.optim
namesake, whole-array expressions, in-place ``op=`` where it is natural, one
temporary or two per array, and Python only for per-step scalars. Two
details follow torch because they change the bits, at no cost in speed:
``torch.lerp`` picks one of two formulas by the weight (:func:`_lerp_`), and
scalars are cast to the array's dtype (so float32 stays float32). NumPy has
no fused multiply-add, so where torch and nopt round ``a * b + c`` once
(RMSprop in float32) this rounds twice; the tests' tolerances cover it.

Usage as the bench's peer: ``opt = make("Adam", params, grads, lr=1e-3);
opt.step()``; ``grads`` is a list of arrays, read at every step (refill them
in place).
"""
import inspect
import math

import numpy as np

__all__ = ["make", "NumpyOptimizer", "Prodigy"]


def _lerp_(start, end, weight):
    """``start`` moved in place towards ``end`` by ``weight``, as ``torch.lerp``:
    ``start + w (end - start)`` for ``|w| < 0.5``, else ``end - (end - start)(1 - w)``."""
    dt = start.dtype.type
    if abs(weight) < 0.5:
        start += (end - start) * dt(weight)
    else:
        diff = end - start
        diff *= dt(1 - weight)
        np.subtract(end, diff, out=start)


def _direction(param, grad, group, coupled=True):
    """The gradient, negated for ``maximize``, plus coupled weight decay ``wd * param``."""
    g = -grad if group["maximize"] else grad
    wd = group.get("weight_decay", 0)
    if wd and coupled:
        g = g + param.dtype.type(wd) * param
    return g


def _decay(param, grad, group):
    """Adam-family weight decay: decoupled (``param *= 1 - lr wd``) or coupled (into the gradient)."""
    if group.get("decoupled_weight_decay", False):
        if group["weight_decay"]:
            param *= param.dtype.type(1 - group["lr"] * group["weight_decay"])
        return _direction(param, grad, group, coupled=False)
    return _direction(param, grad, group)


def _zeros(state, param, *keys):
    for key in keys:
        state[key] = np.zeros_like(param)


def sgd(param, grad, state, group):
    r"""SGD: :math:`b \leftarrow \mu b + (1 - \tau) g` (:math:`b_1 = g`), then
    :math:`p \leftarrow p - \eta (g + \mu b)` (Nesterov) or :math:`p - \eta b`."""
    dt = param.dtype.type
    g = _direction(param, grad, group)
    momentum = group["momentum"]
    if momentum:
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = g.copy()
        else:
            buf *= dt(momentum)
            buf += dt(1 - group["dampening"]) * g
        g = g + dt(momentum) * buf if group["nesterov"] else buf
    param -= dt(group["lr"]) * g


def adam(param, grad, state, group):
    r"""Adam and AdamW: :math:`m \leftarrow \mathrm{lerp}(m, g, 1 - \beta_1)`,
    :math:`v \leftarrow \beta_2 v + (1 - \beta_2) g^2` (AMSGrad: its running max),
    :math:`p \leftarrow p - \frac{\eta}{1 - \beta_1^t} m / (\sqrt{v / (1 - \beta_2^t)} + \epsilon)`."""
    dt = param.dtype.type
    if not state:
        state["step"] = 0.0
        _zeros(state, param, "exp_avg", "exp_avg_sq", *(("max_exp_avg_sq",) if group["amsgrad"] else ()))
    beta1, beta2 = group["betas"]
    state["step"] += 1
    t = state["step"]
    g = _decay(param, grad, group)
    m, v = state["exp_avg"], state["exp_avg_sq"]
    _lerp_(m, g, 1 - beta1)
    v *= dt(beta2)
    v += dt(1 - beta2) * g * g
    if group["amsgrad"]:
        np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
        v = state["max_exp_avg_sq"]
    denom = np.sqrt(v)
    denom /= dt(math.sqrt(1 - beta2 ** t))
    denom += dt(group["eps"])
    param -= dt(group["lr"] / (1 - beta1 ** t)) * m / denom


def adamax(param, grad, state, group):
    r"""Adamax: :math:`m \leftarrow \mathrm{lerp}(m, g, 1 - \beta_1)`,
    :math:`u \leftarrow \max(\beta_2 u, |g| + \epsilon)`,
    :math:`p \leftarrow p - \frac{\eta}{1 - \beta_1^t} m / u`."""
    dt = param.dtype.type
    if not state:
        state["step"] = 0.0
        _zeros(state, param, "exp_avg", "exp_inf")
    beta1, beta2 = group["betas"]
    state["step"] += 1
    g = _direction(param, grad, group)
    m, u = state["exp_avg"], state["exp_inf"]
    _lerp_(m, g, 1 - beta1)
    u *= dt(beta2)
    np.maximum(u, np.abs(g) + dt(group["eps"]), out=u)
    param -= dt(group["lr"] / (1 - beta1 ** state["step"])) * m / u


def nadam(param, grad, state, group):
    r"""NAdam: Adam's moments with momentum schedule
    :math:`\mu_t = \beta_1 (1 - \frac12 0.96^{t \psi})`;
    :math:`p \leftarrow p - \eta \frac{1 - \mu_t}{1 - \prod_{i \le t} \mu_i} g / d
    - \eta \frac{\mu_{t+1}}{1 - \prod_{i \le t+1} \mu_i} m / d`,
    :math:`d = \sqrt{v / (1 - \beta_2^t)} + \epsilon`.

    torch keeps ``mu_product`` in a float32 tensor whatever the dtype, so its
    update is a float32 product.
    """
    dt = param.dtype.type
    if not state:
        state.update(step=0.0, mu_product=1.0)
        _zeros(state, param, "exp_avg", "exp_avg_sq")
    beta1, beta2 = group["betas"]
    lr, psi = group["lr"], group["momentum_decay"]
    state["step"] += 1
    t = state["step"]
    g = _decay(param, grad, group)
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * psi))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * psi))
    state["mu_product"] = mu_product = float(np.float32(state["mu_product"]) * np.float32(mu))
    m, v = state["exp_avg"], state["exp_avg_sq"]
    _lerp_(m, g, 1 - beta1)
    v *= dt(beta2)
    v += dt(1 - beta2) * g * g
    denom = v / dt(1 - beta2 ** t)
    np.sqrt(denom, out=denom)
    denom += dt(group["eps"])
    param -= dt(lr * (1 - mu) / (1 - mu_product)) * g / denom
    param -= dt(lr * mu_next / (1 - mu_product * mu_next)) * m / denom


def radam(param, grad, state, group):
    r"""RAdam: Adam's moments; with :math:`\rho_\infty = 2 / (1 - \beta_2) - 1` and
    :math:`\rho_t = \rho_\infty - 2 t \beta_2^t / (1 - \beta_2^t)`, the step is
    :math:`\eta \hat m r_t \sqrt{1 - \beta_2^t} / (\sqrt v + \epsilon)` when
    :math:`\rho_t > 5` (:math:`r_t` the rectification), else :math:`\eta \hat m`."""
    dt = param.dtype.type
    if not state:
        state["step"] = 0.0
        _zeros(state, param, "exp_avg", "exp_avg_sq")
    beta1, beta2 = group["betas"]
    state["step"] += 1
    t = state["step"]
    g = _decay(param, grad, group)
    m, v = state["exp_avg"], state["exp_avg_sq"]
    _lerp_(m, g, 1 - beta1)
    v *= dt(beta2)
    v += dt(1 - beta2) * g * g
    bc1, bc2 = 1 - beta1 ** t, 1 - beta2 ** t
    m_hat = m / dt(bc1)
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * beta2 ** t / bc2
    if rho_t > 5.0:
        rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        adaptive = np.sqrt(v)
        adaptive += dt(group["eps"])
        np.divide(dt(math.sqrt(bc2)), adaptive, out=adaptive)
        param -= m_hat * dt(group["lr"]) * adaptive * dt(rect)
    else:
        param -= m_hat * dt(group["lr"])


def adagrad(param, grad, state, group):
    r"""Adagrad (dense): :math:`s \leftarrow s + g^2`,
    :math:`p \leftarrow p - \frac{\eta}{1 + (t - 1) \delta} g / (\sqrt s + \epsilon)`."""
    dt = param.dtype.type
    if not state:
        state.update(step=0.0, sum=np.full_like(param, group["initial_accumulator_value"]))
    state["step"] += 1
    g = _direction(param, grad, group)
    clr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
    acc = state["sum"]
    acc += g * g
    std = np.sqrt(acc)
    std += dt(group["eps"])
    param -= dt(clr) * g / std


def adadelta(param, grad, state, group):
    r"""Adadelta: :math:`v \leftarrow \rho v + (1 - \rho) g^2`,
    :math:`\Delta = \sqrt{u + \epsilon} / \sqrt{v + \epsilon}\, g`,
    :math:`u \leftarrow \rho u + (1 - \rho) \Delta^2`, :math:`p \leftarrow p - \eta \Delta`."""
    dt = param.dtype.type
    if not state:
        state["step"] = 0.0
        _zeros(state, param, "square_avg", "acc_delta")
    state["step"] += 1
    g = _direction(param, grad, group)
    rho, eps = dt(group["rho"]), dt(group["eps"])
    sq, acc = state["square_avg"], state["acc_delta"]
    sq *= rho
    sq += dt(1 - group["rho"]) * g * g
    std = np.sqrt(sq + eps)
    delta = np.sqrt(acc + eps)
    delta /= std
    delta *= g
    acc *= rho
    acc += dt(1 - group["rho"]) * delta * delta
    param -= dt(group["lr"]) * delta


def rmsprop(param, grad, state, group):
    r"""RMSprop: :math:`v \leftarrow \alpha v + (1 - \alpha) g^2`; centered:
    :math:`\bar g \leftarrow \mathrm{lerp}(\bar g, g, 1 - \alpha)`, :math:`d = \sqrt{v - \bar g^2} + \epsilon`
    (else :math:`\sqrt v + \epsilon`); :math:`b \leftarrow \mu b + g / d`, :math:`p \leftarrow p - \eta b`
    with momentum, else :math:`p \leftarrow p - \eta g / d`."""
    dt = param.dtype.type
    if not state:
        state["step"] = 0.0
        _zeros(state, param, "square_avg")
        if group["momentum"] > 0:
            _zeros(state, param, "momentum_buffer")
        if group["centered"]:
            _zeros(state, param, "grad_avg")
    state["step"] += 1
    g = _direction(param, grad, group)
    alpha = group["alpha"]
    sq = state["square_avg"]
    sq *= dt(alpha)
    sq += dt(1 - alpha) * g * g
    if group["centered"]:
        ga = state["grad_avg"]
        _lerp_(ga, g, 1 - alpha)
        avg = sq - ga * ga
        np.sqrt(avg, out=avg)
    else:
        avg = np.sqrt(sq)
    avg += dt(group["eps"])
    if group["momentum"] > 0:
        buf = state["momentum_buffer"]
        buf *= dt(group["momentum"])
        buf += g / avg
        param -= dt(group["lr"]) * buf
    else:
        param -= dt(group["lr"]) * g / avg


def rprop(param, grad, state, group):
    r"""Rprop: per element, the step size grows by :math:`\eta_+` while the gradient
    keeps its sign and shrinks by :math:`\eta_-` when it flips (then that gradient
    counts as zero), clipped to ``step_sizes``; :math:`p \leftarrow p - \mathrm{sign}(g)\, s`."""
    dt = param.dtype.type
    if not state:
        state.update(step=0.0, prev=np.zeros_like(param), step_size=np.full_like(param, group["lr"]))
    state["step"] += 1
    g = _direction(param, grad, group)
    etaminus, etaplus = group["etas"]
    lo, hi = group["step_sizes"]
    prev, step_size = state["prev"], state["step_size"]
    sign = np.sign(g * prev)  # NaN compares false below: factor 1, as torch.sign(NaN) = 0
    factor = np.where(sign > 0, dt(etaplus), np.where(sign < 0, dt(etaminus), dt(1)))
    step_size *= factor
    np.clip(step_size, dt(lo), dt(hi), out=step_size)
    g = np.where(sign < 0, dt(0), g)
    param -= np.sign(g) * step_size
    prev[...] = g


def asgd(param, grad, state, group):
    r"""ASGD: :math:`p \leftarrow p (1 - \lambda \eta_t) - \eta_t g`, the average
    :math:`a \leftarrow a + \mu_t (p - a)`, then
    :math:`\eta_{t+1} = \eta / (1 + \lambda \eta t)^\alpha`, :math:`\mu_{t+1} = 1 / \max(1, t - t_0)`.

    torch keeps ``eta`` and ``mu`` in float32 tensors whatever the dtype.
    """
    dt = param.dtype.type
    f32 = lambda x: float(np.float32(x))  # noqa: E731
    if not state:
        state.update(step=0.0, eta=f32(group["lr"]), mu=1.0, ax=np.zeros_like(param))
    state["step"] += 1
    t, lr = state["step"], group["lr"]
    g = _direction(param, grad, group)
    eta = state["eta"]
    param *= dt(1 - group["lambd"] * eta)
    param -= dt(eta) * g
    ax = state["ax"]
    if state["mu"] != 1:
        ax += (param - ax) * dt(state["mu"])
    else:
        ax[...] = param
    state["eta"] = f32(lr / ((1 + group["lambd"] * lr * t) ** group["alpha"]))
    state["mu"] = f32(1 / max(1, t - group["t0"]))


def sparse_adam(param, grad, state, group):
    r"""SparseAdam, for one 2-D parameter: Adam's moments and update, applied only
    to the entries the gradient stores (``grad`` is a COO triple
    ``(rows, cols, vals)``, duplicates summed):
    :math:`m \leftarrow m + (1 - \beta_1)(g - m)`, :math:`v \leftarrow v + (1 - \beta_2)(g^2 - v)`,
    :math:`p \leftarrow p - \eta \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t} m / (\sqrt v + \epsilon)`.

    (Dense masks: a test oracle, not a fast sparse update; the bench does not time SparseAdam.)
    """
    rows, cols, vals = grad
    dt = param.dtype.type
    if not state:
        state.update(step=0, exp_avg=np.zeros_like(param), exp_avg_sq=np.zeros_like(param))
    state["step"] += 1
    if len(vals) == 0:
        return
    g = np.zeros_like(param)
    np.add.at(g, (rows, cols), vals)
    if group["maximize"]:
        g = -g
    mask = np.zeros(param.shape, dtype=bool)
    mask[rows, cols] = True
    beta1, beta2 = group["betas"]
    m, v = state["exp_avg"], state["exp_avg_sq"]
    new_m = m + (g - m) * dt(1 - beta1)
    new_v = v + (g * g - v) * dt(1 - beta2)
    t = state["step"]
    step_size = group["lr"] * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
    update = (new_m / (np.sqrt(new_v) + dt(group["eps"]))) * dt(-step_size)
    m[mask] = new_m[mask]
    v[mask] = new_v[mask]
    param[mask] = (param + update)[mask]


# ---------------------------------------------------------------- beyond torch.optim
# From the papers (and their authors' code); nopt/_kernels/beyond.pxi's order of operations.
def _norm(x):
    """The 2-norm in double (also for float32 arrays), as nopt's per-parameter reductions."""
    x = x.ravel().astype(np.float64)
    return math.sqrt(float(np.dot(x, x)))


def lion(param, grad, state, group):
    r"""Lion: :math:`c = \beta_1 m + (1-\beta_1) g`, :math:`p \leftarrow (1-\eta\lambda) p
    - \eta\,\mathrm{sign}(c)`, then :math:`m \leftarrow \beta_2 m + (1-\beta_2) g`."""
    dt = param.dtype.type
    g = -grad if group["maximize"] else grad
    if not state:
        _zeros(state, param, "exp_avg")
    beta1, beta2 = group["betas"]
    m = state["exp_avg"]
    c = m * dt(beta1) + dt(1 - beta1) * g
    param *= dt(1 - group["lr"] * group["weight_decay"])
    param += dt(-group["lr"]) * np.sign(c)
    m *= dt(beta2)
    m += dt(1 - beta2) * g


def adabelief(param, grad, state, group):
    r"""AdaBelief: Adam with :math:`s \leftarrow \beta_2 s + (1-\beta_2)(g - m)^2 + \epsilon`."""
    dt = param.dtype.type
    if not state:
        state["step"] = 0.0
        _zeros(state, param, "exp_avg", "exp_avg_var")
    state["step"] += 1
    t = state["step"]
    g = _decay(param, grad, group)
    beta1, beta2 = group["betas"]
    eps = group["eps"]
    m, s = state["exp_avg"], state["exp_avg_var"]
    m *= dt(beta1)
    m += dt(1 - beta1) * g
    r = g - m
    s *= dt(beta2)
    s += dt(1 - beta2) * r * r
    s += dt(eps)
    denom = np.sqrt(s) * dt(1 / math.sqrt(1 - beta2 ** t)) + dt(eps)
    param += dt(-group["lr"] / (1 - beta1 ** t)) * m / denom


def adan(param, grad, state, group):
    r"""Adan: moments of :math:`g`, of :math:`\Delta = g - g_{prev}` and of
    :math:`(g + \beta_2\Delta)^2`; proximal (or, ``no_prox``, decoupled) weight decay."""
    dt = param.dtype.type
    g = -grad if group["maximize"] else grad
    if not state:
        state["step"] = 0.0
        _zeros(state, param, "exp_avg", "exp_avg_diff", "exp_avg_sq", "pre_grad")
    state["step"] += 1
    t = state["step"]
    beta1, beta2, beta3 = group["betas"]
    lr, wd = group["lr"], group["weight_decay"]
    diff = np.zeros_like(g) if t == 1 else g - state["pre_grad"]
    state["pre_grad"][...] = g
    m, v, n = state["exp_avg"], state["exp_avg_diff"], state["exp_avg_sq"]
    m *= dt(beta1)
    m += dt(1 - beta1) * g
    v *= dt(beta2)
    v += dt(1 - beta2) * diff
    u = g + dt(beta2) * diff
    n *= dt(beta3)
    n += dt(1 - beta3) * u * u
    update = (m * dt(1 / (1 - beta1 ** t)) + v * dt(beta2 / (1 - beta2 ** t))) / (
        np.sqrt(n) * dt(1 / math.sqrt(1 - beta3 ** t)) + dt(group["eps"]))
    if group["no_prox"]:
        param *= dt(1 - lr * wd)
        param += dt(-lr) * update
    else:
        param += dt(-lr) * update
        param *= dt(1 / (1 + lr * wd))


def lamb(param, grad, state, group):
    r"""LAMB: :math:`r = \hat m / (\sqrt{\hat v} + \epsilon) + \lambda p`, then
    :math:`p \leftarrow p - \eta\,\|p\|/\|r\|\, r` (ratio 1 when a norm is 0)."""
    dt = param.dtype.type
    g = -grad if group["maximize"] else grad
    if not state:
        state["step"] = 0.0
        _zeros(state, param, "exp_avg", "exp_avg_sq")
    state["step"] += 1
    t = state["step"]
    beta1, beta2 = group["betas"]
    m, v = state["exp_avg"], state["exp_avg_sq"]
    m *= dt(beta1)
    m += dt(1 - beta1) * g
    v *= dt(beta2)
    v += dt(1 - beta2) * g * g
    r = m * dt(1 / (1 - beta1 ** t)) / (np.sqrt(v) * dt(1 / math.sqrt(1 - beta2 ** t))
                                        + dt(group["eps"]))
    r += dt(group["weight_decay"]) * param
    p_norm, r_norm = _norm(param), _norm(r)
    trust = p_norm / r_norm if p_norm > 0 and r_norm > 0 else 1.0
    param += dt(-group["lr"] * trust) * r


def lars(param, grad, state, group):
    r"""LARS: :math:`\gamma_t = \eta\,\tau\|p\|/(\|g\| + \lambda\|p\| + \epsilon)`,
    :math:`b \leftarrow \mu b + \gamma_t (g + \lambda p)`, :math:`p \leftarrow p - b`."""
    dt = param.dtype.type
    g = -grad if group["maximize"] else grad
    if not state:
        _zeros(state, param, "momentum_buffer")
    wd, mu = group["weight_decay"], group["momentum"]
    p_norm, g_norm = _norm(param), _norm(g)
    if p_norm > 0 and g_norm > 0:
        trust = group["trust_coefficient"] * p_norm / (g_norm + wd * p_norm + group["eps"])
    else:
        trust = 1.0
    scale = dt(group["lr"] * trust)
    d = g + dt(wd) * param
    buf = state["momentum_buffer"]
    buf *= dt(mu)
    buf += scale * d
    if group["nesterov"]:
        param -= scale * d + dt(mu) * buf
    else:
        param -= buf


def _schedule_free(param, grad, state, group, adam):
    # The package's per-group counters (k, weight_sum, lr_max) are kept per array
    # here: every array of a group steps together, so they agree.
    dt = param.dtype.type
    g = -grad if group["maximize"] else grad
    if not state:
        state.update(k=0, weight_sum=0.0, lr_max=-1.0, z=param.copy())
        if adam:
            _zeros(state, param, "exp_avg_sq")
    k = state["k"]
    warmup = group["warmup_steps"]
    lr = group["lr"] * ((k + 1) / warmup if k < warmup else 1.0)
    state["lr_max"] = lr_max = max(lr, state["lr_max"])
    weight = (k + 1) ** group["r"] * lr_max ** group["weight_lr_power"]
    state["weight_sum"] = weight_sum = state["weight_sum"] + weight
    ckp1 = weight / weight_sum if weight_sum else 0.0
    state["k"] = k + 1
    if adam:
        beta1, beta2 = group["betas"]
        v = state["exp_avg_sq"]
        v *= dt(beta2)
        v += dt(1 - beta2) * g * g
        g = g / (np.sqrt(v / dt(1 - beta2 ** (k + 1))) + dt(group["eps"]))
    else:
        beta1 = group["momentum"]
    if group["weight_decay"]:
        g = g + dt(group["weight_decay"]) * param
    z = state["z"]
    _lerp_(param, z, dt(ckp1))
    param += dt(lr * (beta1 * (1 - ckp1) - 1)) * g
    z += dt(-lr) * g


def schedule_free_sgd(param, grad, state, group):
    r"""Schedule-free SGD: :math:`y \leftarrow \mathrm{lerp}(y, z, c) + \gamma(\beta(1-c)-1) g`,
    :math:`z \leftarrow z - \gamma g` (the parameter holds :math:`y`)."""
    _schedule_free(param, grad, state, group, adam=False)


def schedule_free_adamw(param, grad, state, group):
    r"""Schedule-free AdamW: schedule-free SGD on :math:`g / (\sqrt{\hat v} + \epsilon)`."""
    _schedule_free(param, grad, state, group, adam=True)
def _torch_norm(x, axis=None):
    """torch.norm: the square root of the sum of squares (summed in float64), in the dtype."""
    total = np.sum(np.square(x, dtype=np.float64), axis=axis, keepdims=axis is not None)
    return np.sqrt(total).astype(x.dtype)


def adafactor(param, grad, state, group):
    """torch.optim.Adafactor (single tensor): factored for 2 or more dimensions, else a full variance."""
    dt = param.dtype.type
    if not state:
        state["step"] = 0.0
        if param.ndim >= 2:
            state["row_var"] = np.zeros(param.shape[:-1] + (1,), param.dtype)
            state["col_var"] = np.zeros(param.shape[:-2] + (1,) + param.shape[-1:], param.dtype)
        else:
            state["variance"] = np.zeros_like(param)
    state["step"] += 1
    if param.size == 0:
        return      # torch divides by the size and fails; nopt leaves it alone
    eps1, eps2 = group["eps"]
    if eps1 is None:
        eps1 = float(np.finfo(param.dtype).eps)
    g = -grad if group["maximize"] else grad
    t = state["step"]
    w = t ** group["beta2_decay"]
    rho = min(group["lr"], 1 / (t ** 0.5))
    alpha = max(eps2, float(_torch_norm(param)) / (param.size ** 0.5)) * rho
    if group["weight_decay"] != 0:
        param *= dt(1 - group["lr"] * group["weight_decay"])
    if g.ndim >= 2:
        _lerp_(state["row_var"], np.square(_torch_norm(g, axis=-1)) / dt(g.shape[-1]), w)
        _lerp_(state["col_var"], np.square(_torch_norm(g, axis=-2)) / dt(g.shape[-2]), w)
        row_mean = (np.sum(state["row_var"], axis=-2, keepdims=True, dtype=np.float64)
                    / g.shape[-2]).astype(param.dtype)
        estimate = state["row_var"] * state["col_var"]
        estimate /= np.maximum(row_mean, dt(eps1))
    else:
        _lerp_(state["variance"], g * g, w)
        estimate = state["variance"].copy()
    np.maximum(estimate, dt(eps1 * eps1), out=estimate)
    update = np.sqrt(estimate, out=estimate)
    np.divide(dt(1), update, out=update)          # torch's rsqrt: 1 / sqrt, two roundings
    update *= g
    denom = max(1.0, float(_torch_norm(update)) / ((update.size ** 0.5) * group["d"]))
    update *= dt(-alpha / denom)
    param += update


class Prodigy:
    """Prodigy (Mishchenko and Defazio 2023, as ``prodigyopt``) over every array at once.

    Not a per-array function like the others: ``d`` is one scalar fitted
    from sums over all arrays. ``Prodigy(params, grads, **hyper).step()``
    steps ``params`` in place, reading ``grads``.
    """

    def __init__(self, params, grads, **options):
        defaults = dict(lr=1.0, betas=(0.9, 0.999), beta3=None, eps=1e-8, weight_decay=0.0,
                        decouple=True, use_bias_correction=False, safeguard_warmup=False,
                        d0=1e-6, d_coef=1.0, growth_rate=math.inf)
        unknown = set(options) - set(defaults)
        if unknown:
            raise TypeError(f"Prodigy: unknown hyperparameters {sorted(unknown)}")
        self.h = {**defaults, **options}
        self.params, self.grads = list(params), list(grads)
        self.state = [{"s": np.zeros_like(p), "p0": p.copy(), "exp_avg": np.zeros_like(p),
                       "exp_avg_sq": np.zeros_like(p)} for p in self.params]
        self.d = self.d_max = self.h["d0"]
        self.numerator, self.k = 0.0, 0

    def step(self):
        h = self.h
        b1, b2 = h["betas"]
        b3 = h["beta3"] if h["beta3"] is not None else math.sqrt(b2)
        k, d, d0, lr, wd = self.k, self.d, h["d0"], h["lr"], h["weight_decay"]
        bias = math.sqrt(1 - b2 ** (k + 1)) / (1 - b1 ** (k + 1)) if h["use_bias_correction"] else 1.0
        dlr = d * lr * bias
        numerator, denominator = self.numerator * b3, 0.0
        grads = []
        for p, g, s in zip(self.params, self.grads, self.state):
            dt = p.dtype.type
            if wd and not h["decouple"]:
                g = g + dt(wd) * p
            grads.append(g)
            numerator += (d / d0) * dlr * float(np.dot(g.ravel().astype(np.float64),
                                                       (s["p0"] - p).ravel().astype(np.float64)))
            s["exp_avg"] *= dt(b1)
            s["exp_avg"] += dt(d * (1 - b1)) * g
            s["exp_avg_sq"] *= dt(b2)
            s["exp_avg_sq"] += dt(d * d * (1 - b2)) * g * g
            s["s"] *= dt(b3)
            s["s"] += dt((d / d0) * (d if h["safeguard_warmup"] else dlr)) * g
            denominator += float(np.abs(s["s"]).sum(dtype=np.float64))
        if denominator == 0:
            return
        d_hat = h["d_coef"] * numerator / denominator
        if d == d0:
            d = max(d, d_hat)
        self.d_max = max(self.d_max, d_hat)
        self.d = d = min(self.d_max, d * h["growth_rate"])
        self.numerator = numerator
        for p, g, s in zip(self.params, grads, self.state):
            dt = p.dtype.type
            denom = np.sqrt(s["exp_avg_sq"]) + dt(d * h["eps"])
            if wd and h["decouple"]:
                p -= dt(wd * dlr) * p
            if b1 > 0:
                p -= dt(dlr) * s["exp_avg"] / denom
            else:
                p -= dt(dlr * d) * g / denom
        self.k += 1


class NumpyOptimizer:
    """A list of arrays stepped by one NumPy reference: the bench's NumPy peer.

    ``group`` is the group nopt's optimizer of that name builds from
    ``hyper``; ``state`` one dict per array.
    """

    def __init__(self, name, params, grads, **hyper):
        import nopt

        from ._registry import RULES

        try:
            self.rule = RULES[name].reference
        except KeyError:
            raise ValueError(f"no NumPy rule for {name!r}; have {sorted(RULES)}") from None

        cls = getattr(nopt, name)
        unknown = set(hyper) - set(inspect.signature(cls).parameters)
        if unknown:
            raise TypeError(f"{name}: unknown hyperparameters {sorted(unknown)}")
        # The group nopt would build (defaults filled in; AdamW's says its decay is decoupled).
        self.group = dict(cls([nopt.Parameter(np.zeros(1))], **hyper).defaults)
        self.params = list(params)
        self.grads = list(grads)
        self.state = [{} for _ in self.params]

    def step(self):
        for p, g, s in zip(self.params, self.grads, self.state):
            self.rule(p, g, s, self.group)


def make(name, params, grads, **hyper):
    """The NumPy optimizer ``name`` over ``params`` (arrays, updated in place) and ``grads``."""
    from ._registry import RULES

    rule = RULES.get(name)
    if rule is not None and not rule.per_array:
        return rule.reference(params, grads, **hyper)
    return NumpyOptimizer(name, params, grads, **hyper)
