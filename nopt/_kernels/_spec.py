"""The spec of an elementwise update rule, and what the kernel template needs from it.

An optimizer module declares its rule once, as ``RULE = Rule(...)``. The
same object serves twice:

- at build time, ``setup.py`` reads the literal fields of every
  ``RULE = Rule(...)`` in ``nopt/*.py`` (with ``ast``, so building imports
  nothing from nopt) and renders ``rules.pyx.tp`` with them: one compiled
  kernel per rule, named after it, in the module ``nopt._kernels.rules``;
- at run time, ``Optimizer`` plans every step from it: which state to
  create and gather, whether to count the step, the per-step scalars
  (``scalars``, a Python function) and the flags of the kernel call.

This module is plain Python with no imports from nopt, so ``setup.py`` can
load it by path.
"""
import itertools

__all__ = ["Rule", "LITERAL_FIELDS", "drive", "render_context"]

# Fields setup.py reads from the source (they must be literals there).
LITERAL_FIELDS = ("name", "state", "scalar_state", "step", "args", "derived", "flags", "valid",
                  "ftz", "isa", "pieces", "body", "doc")

# Shared lines of element bodies: optax's split of a rule into shared pieces
# and its own math, so each body holds only its rule. A rule names the pieces
# its body uses (``pieces=``): each opens the body, or stands where the body
# has the line ``# piece <name>``. A piece needs the streams, args, derived
# values, flags and locals it lists, and defines the locals it says.
PIECES = {
    # The Adam family (Adam, RAdam, NAdam): maximize, decoupled then coupled
    # weight decay, both moments (the first by torch's two-sided lerp, the
    # weight's side chosen once a call), stored. Defines g, p, m and v.
    "adam_moments": (
        ("grad", "param", "exp_avg", "exp_avg_sq", "sign", "decay", "wd", "w", "w_minus_1",
         "beta2", "one_minus_beta2", "coupled", "small"),
        """
cdef floating g = sign * grad[j]
cdef floating p = param[j] * decay
cdef floating m = exp_avg[j]
cdef floating v = exp_avg_sq[j]
if coupled:
    g = g + wd * p
if small:
    m = m + w * (g - m)
else:
    m = g + w_minus_1 * (g - m)
v = v * beta2 + one_minus_beta2 * g * g
exp_avg[j] = m
exp_avg_sq[j] = v
"""),
    # The schedule-free rules' step from the (preconditioned) gradient g: weight
    # decay at y, y to lerp(y, z, ckp1) (two-sided), then the y and z steps.
    # Reads the locals g, y (param[j]) and zj (z[j]).
    "schedule_free_step": (
        ("param", "z", "wd", "ckp1", "y_coef", "neg_lr", "decay", "small"),
        """
if decay:
    g = g + wd * y
if small:
    y = y + ckp1 * (zj - y)
else:
    y = zj + (ckp1 - 1) * (zj - y)
param[j] = y + y_coef * g
z[j] = zj + neg_lr * g
"""),
}


class Rule:
    """One elementwise update rule.

    Parameters
    ----------
    name : str
        The kernel's name (``nopt._kernels.rules.<name>``), a C identifier.
    state : tuple
        The state arrays (streams), in kernel order after ``param`` and
        ``grad``: each ``(key, init)`` or ``(key, init, when)``. ``init`` is
        the value a new array is filled with: a number, or the name of a
        group option (Adagrad's ``"initial_accumulator_value"``). ``when``
        names a flag from ``switches``: the array exists only while it is
        on (AMSGrad's ``max_exp_avg_sq``).
    scalar_state : tuple of str
        Per-parameter numbers kept in the state besides ``step`` (NAdam's
        ``mu_product``). ``start(group)`` gives their first values and
        ``scalars`` their next ones; the step stores them after its kernel
        ran, through the state's change tracking.
    step : bool
        Whether the rule keeps a ``step`` count (torch's state key).
    args : tuple of str
        The per-step scalars, in the order ``scalars`` returns them. The
        kernel receives them as doubles and the element body as the
        parameter's float type.
    derived : tuple
        ``(name, expr)`` or ``(name, expr, ctype)``: values computed once per
        call in the kernel, in the parameter's float type (or ``ctype``),
        from ``x`` (an arg as a double) and ``x_t`` (as the float type).
    flags : tuple
        ``(name, source)``: the literal flags. Each combination gets its own
        copy of the loop, with the flag a literal ``True``/``False`` (so gcc
        vectorises every copy). ``source`` is a Cython expression over the
        args (as ``derived``), ``None`` for a flag from ``switches(group)``,
        or ``"fresh"``: True for parameters whose state this step created.
    valid : str, optional
        A Python expression over the flags: combinations for which it is
        false are not compiled, and a flag that is then fixed is not tested.
    pieces : tuple of str
        Shared lines of the body, from :data:`PIECES`: each where the body
        has the line ``# piece <name>``, else at its start (in this order).
    ftz : bool
        Flush subnormals to zero while the kernel runs (False: IEEE mode, as
        Rprop, which only uses signs).
    isa : str
        ``"default"``: AVX-512 / AVX2 / baseline clones; ``"fma"``: AVX-512 /
        AVX2+FMA / baseline, for a body that uses ``fma_`` (RMSprop).
    body : str
        The per-element Cython: reads and writes element ``j`` of the
        streams (``param``, ``grad`` and the state keys), using the args,
        the derived values and the flags. The only rule-specific Cython.
    doc : str
        The compiled kernel's docstring.
    scalars : callable
        ``scalars(group, step, *scalar_state) -> args`` (``step`` is None
        without a count); with ``scalar_state`` it returns ``(args,
        next_scalar_state)``.
    switches : callable, optional
        ``switches(group) -> tuple of bool``: the flags whose source is None,
        in their order in ``flags`` (a tuple, not a dict: it runs every step).
    start : callable, optional
        ``start(group) -> tuple``: the first values of ``scalar_state``.
    add_missing : bool
        Start an optional array a non-empty state lacks at its ``init``
        (RMSprop, when momentum is switched on later) instead of raising.
    """

    def __init__(self, name, *, body, args=(), state=(), scalar_state=(), step=True, derived=(),
                 flags=(), valid=None, ftz=True, isa="default", pieces=(), doc="", scalars=None,
                 switches=None, start=None, add_missing=False):
        self.name = name
        self.pieces = tuple(pieces)
        self.body = _with_pieces(name, body, self.pieces, state, args, derived, flags)
        self.args = tuple(args)
        self.state = tuple(_stream(s) for s in state)
        self.scalar_state = tuple(scalar_state)
        self.step = bool(step)
        self.derived = tuple(derived)
        self.flags = tuple(flags)
        self.valid = valid
        self.ftz = ftz
        self.isa = isa
        self.doc = doc
        self.scalars = scalars
        self.switches = switches
        self.start = start
        self.add_missing = add_missing
        # What the planner reads on every step, computed once.
        self.switch_names = tuple(n for n, src in self.flags if src is None)
        self.fresh_flag = next((n for n, src in self.flags if src == "fresh"), None)
        self.python_flags = tuple(n for n, src in self.flags if src is None or src == "fresh")
        self.stream_keys = tuple(key for key, _, _ in self.state)
        self._resolved = {}
        for key, _, when in self.state:
            if when is not None and when not in self.switch_names:
                raise ValueError(f"rule {name}: state {key!r} depends on {when!r}, which is not "
                                 "a flag from switches")

    def keys_for(self, switches):
        """The state arrays present for these switch values, in kernel order."""
        return tuple(key for key, _, when in self.state if when is None or switches[when])

    def resolve(self, group):
        """``(keys, flags)`` for a group: its state arrays and its kernel flags, in kernel order.

        With a ``"fresh"`` flag, ``flags`` is a pair: the flags for old state,
        and those for state the step creates.

        Cached by the switches' values: this runs on every step.
        """
        flags = self.switches(group) if self.switches is not None else ()
        found = self._resolved.get(flags)
        if found is None:
            switches = dict(zip(self.switch_names, flags))
            kernel_flags = flags
            if self.fresh_flag is not None:
                # The kernel's flags for old and for new state.
                kernel_flags = tuple(tuple(fresh if n == self.fresh_flag else switches[n]
                                           for n in self.python_flags) for fresh in (False, True))
            found = self._resolved[flags] = (self.keys_for(switches), kernel_flags)
        return found

    def __repr__(self):
        return f"Rule({self.name!r})"


def _with_pieces(rule, body, pieces, state, args, derived, flags):
    """``body`` with its pieces' code: at their ``# piece <name>`` lines, the others first."""
    placed, lines = set(), []
    for line in body.strip("\n").splitlines():
        words = line.split()
        if words[:2] == ["#", "piece"] and len(words) == 3:
            if words[2] not in pieces:
                raise ValueError(f"rule {rule}: the body places piece {words[2]!r}, which "
                                 "pieces= does not list")
            indent = line[:len(line) - len(line.lstrip())]
            code = _piece(rule, words[2], state, args, derived, flags)
            lines += [indent + code_line if code_line else "" for code_line in code.splitlines()]
            placed.add(words[2])
        else:
            lines.append(line)
    head = [_piece(rule, p, state, args, derived, flags) for p in pieces if p not in placed]
    return "\n".join(head + lines)


def _piece(rule, name, state, args, derived, flags):
    """The code of the piece ``name``, after checking the rule gives all it needs."""
    if name not in PIECES:
        raise ValueError(f"rule {rule}: unknown piece {name!r} (have {sorted(PIECES)})")
    needs, code = PIECES[name]
    have = {"param", "grad", *(_stream(s)[0] for s in state), *args, *(d[0] for d in derived),
            *(f[0] for f in flags)}
    missing = [n for n in needs if n not in have]
    if missing:
        raise ValueError(f"rule {rule}: piece {name!r} needs {missing}")
    return code.strip("\n")


def _stream(entry):
    entry = (entry,) if isinstance(entry, str) else tuple(entry)
    key = entry[0]
    init = entry[1] if len(entry) > 1 else 0
    when = entry[2] if len(entry) > 2 else None
    return key, init, when


# ---------------------------------------------------------------- rendering (setup.py)
_FP_MODES = {"ftz": ("nopt_ftz_enter", "nopt_ftz_exit"),
             "ieee": ("nopt_ieee_enter", "nopt_ieee_exit"), None: None}


def drive(call, fp="ftz", when=None, n_chunks="n_chunks", indent=4):
    """The chunk loop of every kernel (the templates' shared driver), as Cython lines.

    Runs ``call`` (one line, using the chunk index ``c``) for every chunk:
    in the calling thread when ``n_threads <= 1`` (no OpenMP team: a team
    costs about a microsecond, most of a small step), else over a ``prange``.
    ``fp`` is the floating-point mode each thread sets around its chunks and
    restores after (``"ftz"``: flush subnormals to zero; ``"ieee"``: no
    flushing; None: the caller's mode), only when the Cython condition
    ``when`` holds if given. The caller declares ``c``, ``fp = 0`` (an
    unsigned long long) and ``n_threads``.
    """
    modes = _FP_MODES[fp]
    enter = exit_ = []
    if modes is not None:
        enter = [f"fp = {modes[0]}()"]
        exit_ = [f"{modes[1]}(fp)"]
        if when is not None:
            enter = [f"if {when}:", "    " + enter[0]]
            exit_ = [f"if {when}:", "    " + exit_[0]]
    lines = (["if n_threads <= 1:"] + _indent(enter + [f"for c in range({n_chunks}):", "    " + call]
                                              + exit_)
             + ["else:", "    with parallel(num_threads=n_threads):"]
             + _indent(enter + [f"for c in prange({n_chunks}, schedule=\"static\"):", "    " + call]
                       + exit_, 8))
    return "\n".join(_indent(lines, indent))


def _indent(lines, n=4):
    return [" " * n + line if line else line for line in lines]


def _combos(rule):
    """The flag combinations to compile: a list of dicts, in a fixed order."""
    names = [n for n, _ in rule.flags]
    out = []
    for values in itertools.product((False, True), repeat=len(names)):
        combo = dict(zip(names, values))
        if rule.valid is None or eval(rule.valid, {}, dict(combo)):
            out.append(combo)
    return out


def _tree(names, combos, fixed, leaf):
    """Nested ifs over the flags reaching each compiled combination.

    A flag that only one compiled combination below this point allows is not
    tested (its value is implied), so a run-time value outside ``valid`` runs
    the nearest compiled loop (e.g. SGD without momentum ignores ``nesterov``).
    """
    here = [c for c in combos if all(c[k] == v for k, v in fixed.items())]
    if len(fixed) == len(names):
        return leaf(combos.index(here[0]))
    name = names[len(fixed)]
    values = sorted({c[name] for c in here}, reverse=True)
    if len(values) == 1:
        return _tree(names, combos, {**fixed, name: values[0]}, leaf)
    return ([f"if {name}:"] + _indent(_tree(names, combos, {**fixed, name: True}, leaf))
            + ["else:"] + _indent(_tree(names, combos, {**fixed, name: False}, leaf)))


def render_context(rule):
    """The strings ``rules.pyx.tp`` fills in for one rule."""
    name = rule.name
    streams = [("param", "floating*", None), ("grad", "const floating*", None)]
    streams += [(key, "floating*", when) for key, _, when in rule.state]
    derived = [(d[0], d[1], d[2] if len(d) > 2 else "floating") for d in rule.derived]
    typed = [(a, "floating") for a in rule.args] + [(n, t) for n, _, t in derived]
    flag_names = [n for n, _ in rule.flags]
    combos = _combos(rule)

    stream_params = ", ".join(f"{t} {s}" for s, t, _ in streams)
    stream_names = ", ".join(s for s, _, _ in streams)
    typed_params = ", ".join(f"{t} {n}" for n, t in typed)
    typed_names = ", ".join(n for n, _ in typed)
    typed_t = ", ".join(f"{n}_t" for n, _ in typed)
    flag_params = ", ".join(f"bint {n}" for n in flag_names)

    # Kernel order: param, grad, then the present state arrays; an optional
    # array's column is 2 + the arrays present before it (0: absent).
    index_lines, count = [], ["2"]
    for key, _, when in rule.state:
        if when is None:
            count.append("1")
        else:
            index_lines.append(f"cdef Py_ssize_t s_{key} = ({' + '.join(count)}) if {when} else 0")
            count.append(f"<Py_ssize_t> {when}")
    n_streams = " + ".join(count)
    optional = [key for key, _, when in rule.state if when is not None]

    pointer_lines = ["cdef floating* param = <floating*> row[0] + start",
                     "cdef const floating* grad = <const floating*> row[1] + start"]
    column = 2
    for key, _, when in rule.state:
        if when is None:
            pointer_lines.append(f"cdef floating* {key} = <floating*> row[{column}] + start")
            column += 1
        else:
            pointer_lines.append(f"cdef floating* {key} = "
                                 f"(<floating*> row[s_{key}] + start) if s_{key} else NULL")

    def call(k):
        return [f"_{name}_{k}({stream_names}, n{', ' if typed_names else ''}{typed_names})"]

    casts = [f"cdef floating {a}_t = <floating> {a}" for a in rule.args]
    casts += [f"cdef {t} {n}_t = {expr}" for n, expr, t in derived]
    flag_lines = [f"cdef bint {n} = {src}" for n, src in rule.flags
                  if src is not None and src != "fresh"]

    loops = []
    for k, combo in enumerate(combos):
        literal = ", ".join("True" if combo[n] else "False" for n in flag_names)
        loops.append(dict(index=k, literal=literal))

    python_flags = [n for n, src in rule.flags if src is None or src == "fresh"]
    wrapper_params = ", ".join(
        [f"double {a}" for a in rule.args] + [f"bint {n}" for n in python_flags])
    wrapper_names = ", ".join(list(rule.args) + python_flags)
    driver_params = wrapper_params
    task_index_params = ", ".join(f"Py_ssize_t s_{k}" for k in optional)
    task_index_names = ", ".join(f"s_{k}" for k in optional)

    def join(*parts):
        return ", ".join(p for p in parts if p)

    return dict(
        name=name,
        body=_indent(rule.body.strip("\n").splitlines() if rule.body.strip() else ["pass"], 4),
        elem_params=join("Py_ssize_t j", stream_params, typed_params, flag_params),
        loop_params=join(stream_params, "Py_ssize_t n", typed_params),
        loops=loops,
        elem_call_args=join(stream_names, typed_names),
        task_params=join(task_index_params, typed_params, flag_params),
        pointer_lines=pointer_lines,
        tree=_indent(_tree(flag_names, combos, {}, call), 4),
        driver_params=driver_params,
        casts=casts,
        flag_lines=flag_lines,
        index_lines=index_lines,
        dispatched="nopt_fma_dispatched" if rule.isa == "fma" else "nopt_dispatched",
        driver=drive(f"_{name}_task(ptrs, n_streams, chunks, c, "
                     f"{join(task_index_names, typed_t, ', '.join(flag_names))})",
                     "ftz" if rule.ftz else "ieee"),
        wrapper_params=wrapper_params,
        wrapper_names=wrapper_names,
        n_streams=n_streams,
        doc=rule.doc.strip() or f"Apply one {name} step to every array in the table (releases the GIL).",
    )
