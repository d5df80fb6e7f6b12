# RMSprop, with momentum, the centered variant, weight decay and maximize.
#
# One call updates every array of a batch: ptrs[a] = (param, grad, square_avg
# [, momentum_buffer] [, grad_avg]); buf_stream / avg_stream say where the
# optional streams are (0, the param, when absent: never touched then). No
# scalar depends on the step count, so a batch is never split.
#
# The order of operations is torch's single-tensor one, and so are its fused
# multiply-adds (torch's CPU kernels use FMA for add(alpha=), addcmul and lerp):
#   g          = fma(weight_decay, param, g)
#   square_avg = fma((1 - alpha) * g, g, square_avg * alpha)
#   grad_avg   = lerp(grad_avg, g, 1 - alpha)          (centered; two-sided, fused)
#   avg        = sqrt(fma(-grad_avg, grad_avg, square_avg)) + eps   (or sqrt(square_avg) + eps)
#   buf        = buf * momentum + g / avg;  param = fma(-lr, buf, param)   (momentum > 0)
#   param      = param + (-lr * g) / avg                                   (otherwise)
# The centered variance is a difference of nearly equal terms, so one extra
# rounding there changes float32 results visibly after a few dozen steps;
# rounding once, as torch does, keeps float32 runs on torch's numbers.
# fma32 is exact in double (a float product fits in 53 bits); float64 rounds
# twice (an exact double FMA would need -mfma or a slow libm call).

from cython.parallel cimport parallel, prange
from libc.stdint cimport intptr_t

from ._common cimport fabs_, floating, fsqrt, nopt_ftz_enter, nopt_ftz_exit


cdef inline floating _fma(floating a, floating b, floating c) noexcept nogil:
    if floating is float:
        return <float> (<double> a * <double> b + <double> c)
    else:
        return a * b + c


cdef inline void _rmsprop_range(
    floating* param,              # IN/OUT
    const floating* grad,         # IN
    floating* square_avg,         # IN/OUT
    floating* buf,                # IN/OUT (only with momentum)
    floating* grad_avg,           # IN/OUT (only when centered)
    Py_ssize_t n,
    floating neg_lr, floating alpha, floating one_minus_alpha, floating lerp_coef,
    bint lerp_from_start, floating eps, floating momentum, floating sign,
    floating weight_decay, bint decay, bint use_momentum, bint centered,
) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating g, v, m, base, avg, b
    for j in range(n):
        g = sign * grad[j]
        if decay:
            g = _fma(weight_decay, param[j], g)
        v = _fma(one_minus_alpha * g, g, square_avg[j] * alpha)
        square_avg[j] = v
        if centered:
            # torch.lerp(m, g, w): fma(w, g - m, m) for |w| < 0.5, else
            # fma(-(1 - w), g - m, g); lerp_coef holds w or -(1 - w).
            m = grad_avg[j]
            base = m if lerp_from_start else g
            m = _fma(lerp_coef, g - m, base)
            grad_avg[j] = m
            avg = fsqrt(_fma(-m, m, v)) + eps
        else:
            avg = fsqrt(v) + eps
        if use_momentum:
            b = buf[j] * momentum + g / avg
            buf[j] = b
            param[j] = _fma(neg_lr, b, param[j])
        else:
            param[j] = param[j] + (neg_lr * g) / avg


cdef inline void _rmsprop_chunk(
    floating* param, const floating* grad, floating* square_avg, floating* buf,
    floating* grad_avg, Py_ssize_t n,
    floating neg_lr, floating alpha, floating one_minus_alpha, floating lerp_coef,
    bint lerp_from_start, floating eps, floating momentum, floating sign,
    floating weight_decay, bint decay, bint use_momentum, bint centered,
) noexcept nogil:
    # Literal flags give gcc one branch-free loop per variant to vectorize.
    if centered:
        if use_momentum:
            _rmsprop_range(param, grad, square_avg, buf, grad_avg, n, neg_lr, alpha,
                           one_minus_alpha, lerp_coef, lerp_from_start, eps, momentum, sign,
                           weight_decay, decay, True, True)
        else:
            _rmsprop_range(param, grad, square_avg, buf, grad_avg, n, neg_lr, alpha,
                           one_minus_alpha, lerp_coef, lerp_from_start, eps, momentum, sign,
                           weight_decay, decay, False, True)
    else:
        if use_momentum:
            _rmsprop_range(param, grad, square_avg, buf, grad_avg, n, neg_lr, alpha,
                           one_minus_alpha, lerp_coef, lerp_from_start, eps, momentum, sign,
                           weight_decay, decay, True, False)
        else:
            _rmsprop_range(param, grad, square_avg, buf, grad_avg, n, neg_lr, alpha,
                           one_minus_alpha, lerp_coef, lerp_from_start, eps, momentum, sign,
                           weight_decay, decay, False, False)


cdef void _rmsprop(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, int n_threads,
    int buf_stream, int avg_stream, double lr, double alpha, double eps,
    double weight_decay, double momentum, bint centered, bint maximize,
) noexcept nogil:
    cdef Py_ssize_t c, a, start, n_chunks = chunks.shape[0]
    cdef unsigned long long fp = 0   # set per thread; initialised for -Wuninitialized
    cdef floating neg_lr_t = <floating> (-lr), alpha_t = <floating> alpha
    cdef floating oma_t = <floating> (1.0 - alpha), eps_t = <floating> eps
    # torch converts the lerp weight w = 1 - alpha to the tensor's type first.
    cdef floating w_t = <floating> (1.0 - alpha)
    cdef bint from_start = fabs_(w_t) < 0.5
    cdef floating coef_t = w_t if from_start else -(1 - w_t)
    cdef floating momentum_t = <floating> momentum, wd_t = <floating> weight_decay
    cdef floating sign_t = -1 if maximize else 1
    cdef bint decay = weight_decay != 0
    cdef bint use_momentum = momentum > 0
    with parallel(num_threads=n_threads):
        fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            a = chunks[c, 0]
            start = chunks[c, 1]
            _rmsprop_chunk(
                <floating*> ptrs[a, 0] + start,
                <const floating*> ptrs[a, 1] + start,
                <floating*> ptrs[a, 2] + start,
                <floating*> ptrs[a, buf_stream] + start,
                <floating*> ptrs[a, avg_stream] + start,
                chunks[c, 2] - start,
                neg_lr_t, alpha_t, oma_t, coef_t, from_start, eps_t, momentum_t, sign_t, wd_t,
                decay, use_momentum, centered,
            )
        nopt_ftz_exit(fp)


def rmsprop(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, bint is_double,
            int n_threads, int buf_stream, int avg_stream, double lr, double alpha,
            double eps, double weight_decay, double momentum, bint centered, bint maximize):
    """Apply one RMSprop step to every array in the table (releases the GIL).

    ``buf_stream`` / ``avg_stream`` index the momentum buffer and grad_avg
    streams of ``ptrs``; they are used only when ``momentum > 0`` / ``centered``.
    """
    if not (0 <= buf_stream < ptrs.shape[1] and 0 <= avg_stream < ptrs.shape[1]):
        raise ValueError(f"stream indices ({buf_stream}, {avg_stream}) out of range")
    with nogil:
        if is_double:
            _rmsprop(<double*> NULL, ptrs, chunks, n_threads, buf_stream, avg_stream, lr, alpha,
                     eps, weight_decay, momentum, centered, maximize)
        else:
            _rmsprop(<float*> NULL, ptrs, chunks, n_threads, buf_stream, avg_stream, lr, alpha,
                     eps, weight_decay, momentum, centered, maximize)
