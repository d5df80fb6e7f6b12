"""Plain NumPy implementations of nopt's update rules: the benchmark's NumPy peer.

Each class steps a list of arrays in place with the rule of its torch.optim
namesake (the single-tensor, ``foreach=False`` order of operations), written
the way a careful NumPy user would: whole-array expressions with in-place
``out=`` where it is natural, one temporary or two per array, and Python
loops only over the arrays. They are the baseline "why not just NumPy?"
answer, checked against torch in tests/test_bench_smoke.py.

Usage: ``opt = make("Adam", params, grads, lr=1e-3); opt.step()``; ``grads``
is a list of arrays (read at every step, so refill them in place).
"""
import math

import numpy as np

__all__ = ["make", "RULES"]


class _Rule:
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

    def init(self, p):
        return {}

    def step(self):
        self.t += 1
        for p, g, s in zip(self.params, self.grads, self.state):
            if self.h.get("maximize"):
                g = -g
            self.update(p, g, s, p.dtype.type)


class SGD(_Rule):
    defaults = dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False)

    def update(self, p, g, s, dt):
        h = self.h
        if h["weight_decay"]:
            g = g + dt(h["weight_decay"]) * p
        if h["momentum"]:
            buf = s.get("momentum_buffer")
            if buf is None:
                buf = s["momentum_buffer"] = g.copy()
            else:
                buf *= dt(h["momentum"])
                buf += dt(1 - h["dampening"]) * g
            g = g + dt(h["momentum"]) * buf if h["nesterov"] else buf
        p -= dt(h["lr"]) * g


class Adam(_Rule):
    defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                    maximize=False)
    decoupled = False

    def init(self, p):
        s = {"exp_avg": np.zeros_like(p), "exp_avg_sq": np.zeros_like(p)}
        if self.h["amsgrad"]:
            s["max_exp_avg_sq"] = np.zeros_like(p)
        return s

    def update(self, p, g, s, dt):
        h, t = self.h, self.t
        b1, b2 = h["betas"]
        if h["weight_decay"]:
            if self.decoupled:
                p *= dt(1 - h["lr"] * h["weight_decay"])
            else:
                g = g + dt(h["weight_decay"]) * p
        m, v = s["exp_avg"], s["exp_avg_sq"]
        m += (g - m) * dt(1 - b1)                      # lerp
        v *= dt(b2)
        v += dt(1 - b2) * g * g
        step_size = h["lr"] / (1 - b1 ** t)
        bc2_sqrt = math.sqrt(1 - b2 ** t)
        if h["amsgrad"]:
            np.maximum(s["max_exp_avg_sq"], v, out=s["max_exp_avg_sq"])
            v = s["max_exp_avg_sq"]
        denom = np.sqrt(v)
        denom /= dt(bc2_sqrt)
        denom += dt(h["eps"])
        p -= dt(step_size) * m / denom


class AdamW(Adam):
    defaults = dict(Adam.defaults, weight_decay=1e-2)
    decoupled = True


class Adamax(_Rule):
    defaults = dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False)

    def init(self, p):
        return {"exp_avg": np.zeros_like(p), "exp_inf": np.zeros_like(p)}

    def update(self, p, g, s, dt):
        h, t = self.h, self.t
        b1, b2 = h["betas"]
        if h["weight_decay"]:
            g = g + dt(h["weight_decay"]) * p
        m, u = s["exp_avg"], s["exp_inf"]
        m += (g - m) * dt(1 - b1)
        u *= dt(b2)
        np.maximum(u, np.abs(g) + dt(h["eps"]), out=u)
        clr = h["lr"] / (1 - b1 ** t)
        p -= dt(clr) * m / u


class NAdam(_Rule):
    defaults = dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                    decoupled_weight_decay=False, maximize=False)

    def init(self, p):
        return {"exp_avg": np.zeros_like(p), "exp_avg_sq": np.zeros_like(p), "mu_product": 1.0}

    def update(self, p, g, s, dt):
        h, t = self.h, self.t
        b1, b2 = h["betas"]
        if h["weight_decay"]:
            if h["decoupled_weight_decay"]:
                p *= dt(1 - h["lr"] * h["weight_decay"])
            else:
                g = g + dt(h["weight_decay"]) * p
        mu = b1 * (1.0 - 0.5 * 0.96 ** (t * h["momentum_decay"]))
        mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * h["momentum_decay"]))
        # torch keeps mu_product as a float32 scalar tensor whatever the dtype.
        s["mu_product"] = float(np.float32(s["mu_product"]) * np.float32(mu))
        mu_product = s["mu_product"]
        m, v = s["exp_avg"], s["exp_avg_sq"]
        m += (g - m) * dt(1 - b1)
        v *= dt(b2)
        v += dt(1 - b2) * g * g
        denom = v / dt(1 - b2 ** t)
        np.sqrt(denom, out=denom)
        denom += dt(h["eps"])
        p -= dt(h["lr"] * (1 - mu) / (1 - mu_product)) * g / denom
        p -= dt(h["lr"] * mu_next / (1 - mu_product * mu_next)) * m / denom


class RAdam(_Rule):
    defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                    decoupled_weight_decay=False, maximize=False)

    def init(self, p):
        return {"exp_avg": np.zeros_like(p), "exp_avg_sq": np.zeros_like(p)}

    def update(self, p, g, s, dt):
        h, t = self.h, self.t
        b1, b2 = h["betas"]
        if h["weight_decay"]:
            if h["decoupled_weight_decay"]:
                p *= dt(1 - h["lr"] * h["weight_decay"])
            else:
                g = g + dt(h["weight_decay"]) * p
        m, v = s["exp_avg"], s["exp_avg_sq"]
        m += (g - m) * dt(1 - b1)
        v *= dt(b2)
        v += dt(1 - b2) * g * g
        bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
        m_hat = m / dt(bc1)
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * b2 ** t / bc2
        if rho_t > 5.0:
            rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            adaptive = np.sqrt(v)
            adaptive += dt(h["eps"])
            np.divide(dt(math.sqrt(bc2)), adaptive, out=adaptive)
            p -= m_hat * dt(h["lr"]) * adaptive * dt(rect)
        else:
            p -= m_hat * dt(h["lr"])


class Adagrad(_Rule):
    defaults = dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
                    maximize=False)

    def init(self, p):
        return {"sum": np.full_like(p, self.h["initial_accumulator_value"])}

    def update(self, p, g, s, dt):
        h, t = self.h, self.t
        if h["weight_decay"]:
            g = g + dt(h["weight_decay"]) * p
        clr = h["lr"] / (1 + (t - 1) * h["lr_decay"])
        acc = s["sum"]
        acc += g * g
        std = np.sqrt(acc)
        std += dt(h["eps"])
        p -= dt(clr) * g / std


class Adadelta(_Rule):
    defaults = dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False)

    def init(self, p):
        return {"square_avg": np.zeros_like(p), "acc_delta": np.zeros_like(p)}

    def update(self, p, g, s, dt):
        h = self.h
        rho, eps = dt(h["rho"]), dt(h["eps"])
        if h["weight_decay"]:
            g = g + dt(h["weight_decay"]) * p
        sq, acc = s["square_avg"], s["acc_delta"]
        sq *= rho
        sq += dt(1 - h["rho"]) * g * g
        std = np.sqrt(sq + eps)
        delta = np.sqrt(acc + eps)
        delta /= std
        delta *= g
        acc *= rho
        acc += dt(1 - h["rho"]) * delta * delta
        p -= dt(h["lr"]) * delta


class RMSprop(_Rule):
    defaults = dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                    maximize=False)

    def init(self, p):
        s = {"square_avg": np.zeros_like(p)}
        if self.h["momentum"] > 0:
            s["momentum_buffer"] = np.zeros_like(p)
        if self.h["centered"]:
            s["grad_avg"] = np.zeros_like(p)
        return s

    def update(self, p, g, s, dt):
        h = self.h
        alpha = dt(h["alpha"])
        if h["weight_decay"]:
            g = g + dt(h["weight_decay"]) * p
        sq = s["square_avg"]
        sq *= alpha
        sq += dt(1 - h["alpha"]) * g * g
        if h["centered"]:
            ga = s["grad_avg"]
            ga += (g - ga) * dt(1 - h["alpha"])
            avg = sq - ga * ga
            np.sqrt(avg, out=avg)
        else:
            avg = np.sqrt(sq)
        avg += dt(h["eps"])
        if h["momentum"] > 0:
            buf = s["momentum_buffer"]
            buf *= dt(h["momentum"])
            buf += g / avg
            p -= dt(h["lr"]) * buf
        else:
            p -= dt(h["lr"]) * g / avg


class Rprop(_Rule):
    defaults = dict(lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0), maximize=False)

    def init(self, p):
        return {"prev": np.zeros_like(p), "step_size": np.full_like(p, self.h["lr"])}

    def update(self, p, g, s, dt):
        etaminus, etaplus = self.h["etas"]
        lo, hi = self.h["step_sizes"]
        prev, step_size = s["prev"], s["step_size"]
        sign = np.sign(g * prev)
        factor = np.where(sign > 0, dt(etaplus), np.where(sign < 0, dt(etaminus), dt(1)))
        step_size *= factor
        np.clip(step_size, dt(lo), dt(hi), out=step_size)
        g = np.where(sign < 0, dt(0), g)
        p -= np.sign(g) * step_size
        prev[...] = g


class ASGD(_Rule):
    defaults = dict(lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0, maximize=False)

    def init(self, p):
        return {"eta": float(np.float32(self.h["lr"])), "mu": 1.0, "ax": np.zeros_like(p)}

    def update(self, p, g, s, dt):
        h, t = self.h, self.t
        if h["weight_decay"]:
            g = g + dt(h["weight_decay"]) * p
        eta = s["eta"]
        p *= dt(1 - h["lambd"] * eta)
        p -= dt(eta) * g
        if s["mu"] != 1:
            s["ax"] += (p - s["ax"]) * dt(s["mu"])
        else:
            s["ax"][...] = p
        # torch keeps eta and mu as float32 scalar tensors whatever the dtype.
        s["eta"] = float(np.float32(h["lr"] / ((1 + h["lambd"] * h["lr"] * t) ** h["alpha"])))
        s["mu"] = float(np.float32(1 / max(1, t - h["t0"])))


RULES = {cls.__name__: cls for cls in (SGD, Adam, AdamW, Adamax, NAdam, RAdam, Adagrad, Adadelta,
                                       RMSprop, Rprop, ASGD)}


def make(name, params, grads, **hyper):
    """The NumPy optimizer ``name`` over ``params`` (arrays, updated in place) and ``grads``."""
    try:
        cls = RULES[name]
    except KeyError:
        raise ValueError(f"no NumPy rule for {name!r}; have {sorted(RULES)}") from None
    return cls(params, grads, **hyper)

# The rules beyond torch.optim, written from their papers (also the tests' second oracle).
from ._reference_beyond import RULES as _BEYOND  # noqa: E402

RULES.update(_BEYOND)
