"""Plain NumPy implementations of the rules beyond torch.optim, written from the papers.

The second oracle of tests/test_beyond.py (next to optax and the authors'
packages) and the NumPy peer of ``python -m nopt.bench``, in the style of
``nopt._bench_numpy``: whole-array expressions, Python loops only over the
arrays. ``make(name, params, grads, **hyper)``; ``grads`` are read at every
step.
"""
import math

import numpy as np

__all__ = ["RULES", "make"]


class _Rule:
    """``nopt._bench_numpy``'s interface: ``step()`` updates ``params`` in place from ``grads``."""

    defaults = {}

    def __init__(self, params, grads, **hyper):
        unknown = set(hyper) - set(self.defaults)
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown hyperparameters {sorted(unknown)}")
        self.params = list(params)
        self.grads = list(grads)
        self.h = {**self.defaults, **hyper}
        self.t = 0
        self.state = [self.init(p) for p in self.params]

    def step(self):
        self.t += 1
        for p, g, s in zip(self.params, self.grads, self.state):
            if self.h.get("maximize"):
                g = -g
            self.update(p, g, s, p.dtype.type)


def _norm(x):
    return float(np.sqrt(np.dot(x.ravel().astype(np.float64), x.ravel().astype(np.float64))))


class Lion(_Rule):
    defaults = dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False)

    def init(self, p):
        return {"exp_avg": np.zeros_like(p)}

    def update(self, p, g, s, dt):
        h = self.h
        b1, b2 = h["betas"]
        m = s["exp_avg"]
        c = dt(b1) * m + dt(1 - b1) * g
        p *= dt(1 - h["lr"] * h["weight_decay"])
        p -= dt(h["lr"]) * np.sign(c)
        m *= dt(b2)
        m += dt(1 - b2) * g


class AdaBelief(_Rule):
    defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=0.0,
                    decoupled_weight_decay=True, maximize=False)

    def init(self, p):
        return {"exp_avg": np.zeros_like(p), "exp_avg_var": np.zeros_like(p)}

    def update(self, p, g, s, dt):
        h = self.h
        b1, b2 = h["betas"]
        wd, eps, t = h["weight_decay"], h["eps"], self.t
        if wd and h["decoupled_weight_decay"]:
            p *= dt(1 - h["lr"] * wd)
        elif wd:
            g = g + dt(wd) * p
        m, v = s["exp_avg"], s["exp_avg_var"]
        m *= dt(b1)
        m += dt(1 - b1) * g
        r = g - m
        v *= dt(b2)
        v += dt(1 - b2) * r * r
        v += dt(eps)
        denom = np.sqrt(v) / dt(math.sqrt(1 - b2 ** t)) + dt(eps)
        p -= dt(h["lr"] / (1 - b1 ** t)) * m / denom


class Adan(_Rule):
    defaults = dict(lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, no_prox=False,
                    maximize=False)

    def init(self, p):
        return {k: np.zeros_like(p) for k in ("exp_avg", "exp_avg_diff", "exp_avg_sq", "pre_grad")}

    def update(self, p, g, s, dt):
        h = self.h
        b1, b2, b3 = h["betas"]
        lr, wd, t = h["lr"], h["weight_decay"], self.t
        diff = np.zeros_like(g) if t == 1 else g - s["pre_grad"]
        s["pre_grad"][...] = g
        m, v, n = s["exp_avg"], s["exp_avg_diff"], s["exp_avg_sq"]
        m *= dt(b1)
        m += dt(1 - b1) * g
        v *= dt(b2)
        v += dt(1 - b2) * diff
        u = g + dt(b2) * diff
        n *= dt(b3)
        n += dt(1 - b3) * u * u
        denom = np.sqrt(n) / dt(math.sqrt(1 - b3 ** t)) + dt(h["eps"])
        update = (m / dt(1 - b1 ** t) + dt(b2) * v / dt(1 - b2 ** t)) / denom
        if h["no_prox"]:
            p *= dt(1 - lr * wd)
            p -= dt(lr) * update
        else:
            p -= dt(lr) * update
            p /= dt(1 + lr * wd)


class LAMB(_Rule):
    defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, maximize=False)

    def init(self, p):
        return {"exp_avg": np.zeros_like(p), "exp_avg_sq": np.zeros_like(p)}

    def update(self, p, g, s, dt):
        h = self.h
        b1, b2 = h["betas"]
        t = self.t
        m, v = s["exp_avg"], s["exp_avg_sq"]
        m *= dt(b1)
        m += dt(1 - b1) * g
        v *= dt(b2)
        v += dt(1 - b2) * g * g
        r = (m / dt(1 - b1 ** t)) / (np.sqrt(v / dt(1 - b2 ** t)) + dt(h["eps"]))
        r += dt(h["weight_decay"]) * p
        pn, rn = _norm(p), _norm(r)
        trust = pn / rn if pn > 0 and rn > 0 else 1.0
        p -= dt(h["lr"] * trust) * r


class LARS(_Rule):
    defaults = dict(lr=1.0, momentum=0.9, weight_decay=0.0, trust_coefficient=1e-3, eps=0.0,
                    nesterov=False, maximize=False)

    def init(self, p):
        return {"momentum_buffer": np.zeros_like(p)}

    def update(self, p, g, s, dt):
        h = self.h
        wd, mu = h["weight_decay"], h["momentum"]
        pn, gn = _norm(p), _norm(g)
        if pn > 0 and gn > 0:
            local = h["trust_coefficient"] * pn / (gn + wd * pn + h["eps"])
        else:
            local = 1.0
        d = g + dt(wd) * p
        buf = s["momentum_buffer"]
        buf *= dt(mu)
        buf += dt(h["lr"] * local) * d
        if h["nesterov"]:
            p -= dt(h["lr"] * local) * d + dt(mu) * buf
        else:
            p -= buf


class _ScheduleFree(_Rule):
    adam = False

    def init(self, p):
        s = {"z": p.copy()}
        if self.adam:
            s["exp_avg_sq"] = np.zeros_like(p)
        return s

    def __init__(self, params, grads, **hyper):
        super().__init__(params, grads, **hyper)
        self.weight_sum, self.lr_max, self.train_mode = 0.0, -1.0, True

    def _beta(self):
        return self.h["betas"][0] if self.adam else self.h["momentum"]

    def train(self):
        if not self.train_mode:
            for p, s in zip(self.params, self.state):
                p += (s["z"] - p) * p.dtype.type(1 - self._beta())
            self.train_mode = True

    def eval(self):
        if self.train_mode:
            for p, s in zip(self.params, self.state):
                p += (s["z"] - p) * p.dtype.type(1 - 1 / self._beta())
            self.train_mode = False

    def step(self):
        h, k = self.h, self.t
        lr = h["lr"] * ((k + 1) / h["warmup_steps"] if k < h["warmup_steps"] else 1.0)
        self.lr_max = max(lr, self.lr_max)
        weight = (k + 1) ** h["r"] * self.lr_max ** h["weight_lr_power"]
        self.weight_sum += weight
        self.ckp1 = weight / self.weight_sum if self.weight_sum else 0.0
        self.scheduled_lr = lr
        super().step()

    def update(self, y, g, s, dt):
        h, k, c = self.h, self.t, self.ckp1
        lr = self.scheduled_lr
        if self.adam:
            b2 = h["betas"][1]
            v = s["exp_avg_sq"]
            v *= dt(b2)
            v += dt(1 - b2) * g * g
            g = g / (np.sqrt(v / dt(1 - b2 ** k)) + dt(h["eps"]))
        if h["weight_decay"]:
            g = g + dt(h["weight_decay"]) * y
        z = s["z"]
        y += (z - y) * dt(c)
        y += dt(lr * (self._beta() * (1 - c) - 1)) * g
        z -= dt(lr) * g


class ScheduleFreeSGD(_ScheduleFree):
    defaults = dict(lr=1.0, momentum=0.9, weight_decay=0.0, warmup_steps=0, r=0.0,
                    weight_lr_power=2.0, maximize=False)


class ScheduleFreeAdamW(_ScheduleFree):
    adam = True
    defaults = dict(lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, warmup_steps=0,
                    r=0.0, weight_lr_power=2.0, maximize=False)


class Prodigy(_Rule):
    defaults = dict(lr=1.0, betas=(0.9, 0.999), beta3=None, eps=1e-8, weight_decay=0.0,
                    decouple=True, use_bias_correction=False, safeguard_warmup=False, d0=1e-6,
                    d_coef=1.0, growth_rate=math.inf)

    def init(self, p):
        return {"s": np.zeros_like(p), "p0": p.copy(), "exp_avg": np.zeros_like(p),
                "exp_avg_sq": np.zeros_like(p)}

    def __init__(self, params, grads, **hyper):
        super().__init__(params, grads, **hyper)
        self.d = self.d_max = self.h["d0"]
        self.numerator = 0.0

    def step(self):
        h = self.h
        b1, b2 = h["betas"]
        b3 = h["beta3"] if h["beta3"] is not None else math.sqrt(b2)
        k, d, d0, lr, wd = self.t, self.d, h["d0"], h["lr"], h["weight_decay"]
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
        self.t += 1


RULES = {cls.__name__: cls for cls in (Lion, AdaBelief, Adan, LAMB, LARS, ScheduleFreeSGD,
                                       ScheduleFreeAdamW, Prodigy)}


def make(name, params, grads, **hyper):
    """The NumPy rule ``name`` over ``params`` (arrays, updated in place) and ``grads``."""
    return RULES[name](params, grads, **hyper)
