# cython: language_level=3, boundscheck=False, wraparound=False
"""The common case of `pipeline.messages.decode` in one compiled call (issue 17: the transport's hot path).

Why: measured in the hop (`benchmarks/transport.py`), decoding a 64 B message in Python cost more than all the rest a
node's input adds to a raw ZeroMQ read: a dozen library calls (a cache lookup, msgspec, `asdict`, numpy's array
constructor, a BLAS dot for the value check, the object), each run cold after the idle gap between messages. Here
they are C: the header is still parsed and range-checked by the same msgspec decoder, each buffer is viewed as an
array through numpy's C API, and a float buffer's values are checked by a loop instead of numpy calls.

It takes exactly what the Python decoder takes, and nothing else: anything unusual (a type without a plan, an
unknown or repeated buffer, a dtype or rank not declared, a size that does not add up, a value that fails its check)
returns None, and the Python decoders decide and say what is wrong. A float buffer larger than `SMALL_ELEMENTS`, or of a
float type other than float32 and complex64, is checked by the Python checker (one BLAS call beats this loop on a
large one); it raises as it does in Python.
"""

cimport numpy as cnp
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.math cimport fabs, hypot, isfinite
from libc.stdint cimport int64_t

import msgspec

cnp.import_array()

cdef enum:
    #: float buffers up to this many elements are checked here; larger ones by the Python checker (BLAS)
    SMALL_ELEMENTS = 65536
    MAX_DIMS = 8

#: a buffer's value check (the plan's code for its dtype): none (integers), here (the float32 types the messages
#: carry), or by the Python checker (the other float types, which no message type declares today)
cdef enum ValueCheck:
    NONE = 0
    FLOAT32 = 1
    COMPLEX64 = 2
    IN_PYTHON = 3

VALUE_CHECKS = {"float32": FLOAT32, "complex64": COMPLEX64, "float16": IN_PYTHON, "float64": IN_PYTHON,
                "complex128": IN_PYTHON}

cdef object _check_in_python = None
cdef object _make_plan = None
cdef object _zeros = None
cdef Py_ssize_t _max_header_bytes = 0
_MsgspecError = msgspec.MsgspecError


def configure(check_values, make_plan, zeros, Py_ssize_t max_header_bytes):
    """Set once by `pipeline.messages`: its value checker (large and float16 buffers), the function that builds a
    type's plan from its topic (False: a type without one, which the Python decoders take; None: no such type),
    numpy's zeros (empty buffers) and the header's byte limit."""
    global _check_in_python, _make_plan, _zeros, _max_header_bytes
    _check_in_python, _make_plan, _zeros, _max_header_bytes = check_values, make_plan, zeros, max_header_bytes


cdef bint _values_ok(const float *f, Py_ssize_t count, bint complex_, double max_abs) nogil:
    """Every element finite and at most ``max_abs`` in magnitude (a complex one's modulus), as the Python checker:
    first the sum of squares in double (it bounds every square: finite and ≤ max_abs² settles it), and only when
    that does not settle it, element by element."""
    cdef Py_ssize_t n = count * (2 if complex_ else 1)
    cdef Py_ssize_t i = 0
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, x, y
    while i + 4 <= n:  # four sums: the additions do not wait on each other
        s0 += <double> f[i] * f[i]
        s1 += <double> f[i + 1] * f[i + 1]
        s2 += <double> f[i + 2] * f[i + 2]
        s3 += <double> f[i + 3] * f[i + 3]
        i += 4
    while i < n:
        s0 += <double> f[i] * f[i]
        i += 1
    s0 = s0 + s1 + s2 + s3
    if isfinite(s0) and s0 <= max_abs * max_abs:
        return True
    for i in range(count):  # not settled: a non-finite element, or one too large
        if complex_:
            x, y = f[2 * i], f[2 * i + 1]
            if not (isfinite(x) and isfinite(y)) or hypot(x, y) > max_abs:
                return False
        elif not isfinite(f[i]) or fabs(f[i]) > max_abs:
            return False
    return True


cdef object _view(object frame, cnp.dtype descr, int ndim, cnp.npy_intp *dims, Py_ssize_t nbytes):
    """``frame``'s bytes as a read-only array (no copy) whose base is a memoryview of the frame, as
    ``np.ndarray(shape, dtype, memoryview(frame))`` makes it; None when the frame does not hold ``nbytes`` (or holds
    no bytes at all)."""
    cdef object view
    cdef Py_buffer buf
    try:
        view = memoryview(frame)
    except (TypeError, BufferError):
        return None
    PyObject_GetBuffer(view, &buf, PyBUF_SIMPLE)
    cdef void *data = buf.buf
    cdef Py_ssize_t length = buf.len
    PyBuffer_Release(&buf)  # the memoryview keeps the frame's export for as long as the array holds it
    if length != nbytes:
        return None
    if nbytes == 0:
        return _zeros([dims[i] for i in range(ndim)], descr)
    arr = cnp.PyArray_New(cnp.ndarray, ndim, dims, descr.type_num, NULL, data, 0, 0, None)  # flags 0: read-only
    cnp.set_array_base(arr, view)
    return arr


def decode(object frames, dict plans):
    """The message ``frames`` hold, built and checked as `pipeline.messages` would, or None for anything unusual
    (the Python decoders then decide). ``plans``: topic → the type's plan (see `messages._compiled_plan`), filled on
    first sight of a topic."""
    if type(frames) is not list:
        return None
    cdef Py_ssize_t nframes = len(<list> frames)
    if nframes < 2:
        return None
    topic, raw = frames[0], frames[1]
    if type(topic) is not bytes or type(raw) is not bytes or len(<bytes> raw) > _max_header_bytes:
        return None
    plan = plans.get(topic)
    if plan is None:
        plan = _make_plan(topic)
        if plan is None:  # not a message type: not remembered (a sender of random topics would grow the dict)
            return None
        plans[topic] = plan
    if plan is False:
        return None
    cls, decoder, field_names, arrays, max_bytes, check = <tuple> plan
    try:
        header = decoder.decode(raw)
    except _MsgspecError:
        return None
    specs = header.buffers
    cdef Py_ssize_t nbuffers = len(specs)
    if nbuffers != len(<dict> arrays) or nframes != 2 + nbuffers:
        return None
    values = header.fields
    kwargs = {}
    for name in field_names:
        kwargs[name] = getattr(values, name)
    cdef cnp.npy_intp dims[MAX_DIMS]
    cdef int64_t limit = max_bytes, declared = 0, nbytes, ceiling, dim
    cdef Py_ssize_t i, ndim, count
    cdef int kind
    cdef double max_abs
    for i in range(nbuffers):
        spec = specs[i]
        name, dtype, shape = spec.name, spec.dtype, spec.shape
        rule = (<dict> arrays).get(name)
        if rule is None or name in kwargs:  # not an array of this type, or one named twice
            return None
        dtypes, ndims, max_abs = <tuple> rule
        entry = (<dict> dtypes).get(dtype)
        ndim = len(<list> shape)
        if entry is None or ndim not in <tuple> ndims or ndim > MAX_DIMS:
            return None
        descr, itemsize, kind = <tuple> entry
        nbytes = ceiling = itemsize
        for j in range(ndim):
            size = (<list> shape)[j]  # msgspec held it to ≥ 0; a uint64 would not fit an int64
            if size > limit:
                return None
            dim = dims[j] = size
            nbytes *= dim
            ceiling *= dim if dim else 1  # as the Python decoder counts a zero dimension
            if ceiling > limit:
                return None
        declared += nbytes
        if declared > limit:
            return None
        arr = _view(frames[2 + i], descr, <int> ndim, dims, <Py_ssize_t> nbytes)
        if arr is None:
            return None
        if kind != NONE and nbytes:
            count = nbytes // itemsize
            if kind == IN_PYTHON or count > SMALL_ELEMENTS:
                _check_in_python(cls.type_name, name, arr, max_abs)  # raises saying what is wrong
            elif not _values_ok(<const float *> cnp.PyArray_DATA(arr), count, kind == COMPLEX64, max_abs):
                return None
        kwargs[name] = arr
    kwargs["seq"] = header.seq
    kwargs["capture_ns"] = header.capture_ns
    kwargs["source"] = header.source
    msg = cls.__new__(cls)
    msg.__dict__ = kwargs  # every field, checked above: the dataclass __init__ would only copy them
    if check is not None:
        check(msg)
    return msg
