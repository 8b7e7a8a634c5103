# cython: language_level=3, boundscheck=False, wraparound=False
"""The common case of `pipeline.messages.decode` in one compiled call (issue 17: the transport's hot path).

Why: measured in the hop (`benchmarks/transport.py`), decoding a 64 B message in Python cost more than all the rest a
node's input adds to a raw ZeroMQ read: a dozen library calls (a cache lookup, msgspec, `asdict`, numpy's array
constructor, a BLAS dot for the value check, the object), each run cold after the idle gap between messages. Here
they are C. A header written by the type's own encoder template (every header Earshot writes) is read by matching
that template: its literals byte for byte, its values in their canonical spelling, each held to the bounds msgspec's
typed decoder holds it to; any other spelling of a valid header is read by that msgspec decoder. Each buffer is
viewed as an array through numpy's C API, and a float32 or complex64 buffer's values are settled by one sum where
they are clearly within their limit.

It takes exactly what the Python decoders take, and nothing else: anything unusual (a type without a plan, an
unknown or repeated buffer, a dtype or rank not declared, a size that does not add up, a value that fails its check)
returns None, and the Python decoders decide and say what is wrong (`tests/test_fuzz_decode.py` holds each path to
the careful one). Every float buffer that sum does not settle (a value at or over
the limit, a non-finite one), every one larger than `SMALL_ELEMENTS` (one BLAS call beats the loop there), and every
one of another float type goes to the Python checker, which raises as it does in Python.
"""

cimport numpy as cnp
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.math cimport isfinite
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcmp, memcpy

import msgspec

cdef extern from "Python.h":
    # the C locale's decimal point does not matter to it (strtod's would: a GUI toolkit may set LC_NUMERIC)
    double PyOS_string_to_double(const char *s, char **endptr, void *overflow_exception) except? -1.0

cnp.import_array()

cdef enum:
    #: float buffers up to this many elements are checked here; larger ones by the Python checker (BLAS)
    SMALL_ELEMENTS = 65536
    MAX_DIMS = 8

#: a buffer's value check (the plan's code for its dtype): none (integers), here (float32 and complex64), or by the
#: Python checker (float16, which feature maps may carry; float64 and complex128, which no message type declares)
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
try:  # a received large part (`pipeline/_fastzmq.pyx`): its memory is libzmq's, released when the part is
    from pipeline._fastzmq import Part as _Part
except ImportError:
    _Part = None


def configure(check_values, make_plan, zeros, Py_ssize_t max_header_bytes):
    """Set once by `pipeline.messages`: its value checker (large and float16 buffers), the function that builds a
    type's plan from its topic (False: a type without one, which the Python decoders take; None: no such type),
    numpy's zeros (empty buffers) and the header's byte limit."""
    global _check_in_python, _make_plan, _zeros, _max_header_bytes
    _check_in_python, _make_plan, _zeros, _max_header_bytes = check_values, make_plan, zeros, max_header_bytes


cdef bint _clearly_within(const float *f, Py_ssize_t n, double max_abs) noexcept nogil:
    """The sum of the squares of ``n`` floats, in double, clearly within max_abs²: then every element is finite and
    within max_abs in magnitude (a complex one's modulus too, its two parts being two of the floats). Clearly: with a
    margin of 2⁻²⁰, far above this sum's rounding and above the float32 arithmetic of the Python checker, which
    decides every case this does not settle (a value at the limit, a non-finite one) exactly as it does in Python."""
    cdef Py_ssize_t i = 0
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, limit = max_abs * (1.0 - 1.0 / 1048576.0)
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
    return isfinite(s0) and s0 <= limit * limit


cdef object _view(object frame, cnp.dtype descr, int ndim, cnp.npy_intp *dims, Py_ssize_t nbytes):
    """``frame``'s bytes as a read-only array (no copy), as ``np.ndarray(shape, dtype, memoryview(frame))`` makes it;
    None when the frame does not hold ``nbytes`` (or holds no bytes at all). A bytes frame or a received `Part` is
    the array's base itself (neither can change or move while referenced); any other through a memoryview, which
    holds its export for as long as the array lives."""
    cdef object base
    cdef Py_buffer buf
    if type(frame) is bytes or type(frame) is _Part:
        base = frame
    else:
        try:
            base = memoryview(frame)
        except (TypeError, BufferError, ValueError):  # no buffer, or a released one
            return None
    try:
        PyObject_GetBuffer(base, &buf, PyBUF_SIMPLE)
    except (BufferError, ValueError):  # not contiguous, or released: the Python decoders say which
        return None
    cdef void *data = buf.buf
    cdef Py_ssize_t length = buf.len
    PyBuffer_Release(&buf)  # the base keeps the bytes where they are (see above)
    if length != nbytes:
        return None
    if nbytes == 0:
        return _zeros([dims[i] for i in range(ndim)], descr)
    arr = cnp.PyArray_New(cnp.ndarray, ndim, dims, descr.type_num, NULL, data, 0, 0, None)  # flags 0: read-only
    cnp.set_array_base(arr, base)
    return arr


cdef enum Slot:
    INT_SLOT = 0  # an integer field, its bounds in the plan
    FLOAT_SLOT = 1  # a float field, likewise
    STR_SLOT = 2  # a JSON string field of plain ASCII (quotes included), its length limit and choices in the plan
    DTYPE_SLOT = 3  # a buffer's dtype name (quotes in the literals)
    SHAPE_SLOT = 4  # a buffer's dimensions, comma-separated (brackets in the literals)

#: the slots by name, for the plan (`messages._header_layout`)
SLOTS = {"int": INT_SLOT, "float": FLOAT_SLOT, "str": STR_SLOT, "dtype": DTYPE_SLOT, "shape": SHAPE_SLOT}

cdef enum:
    MAX_BUFFERS = 8
    MAX_DIGITS = 19  # int64's; a longer run is left to msgspec
    MAX_NUMBER_CHARS = 40


cdef Py_ssize_t _digits(const unsigned char *p, Py_ssize_t at, Py_ssize_t end) noexcept nogil:
    while at < end and 48 <= p[at] <= 57:
        at += 1
    return at


cdef Py_ssize_t _number_end(const unsigned char *p, Py_ssize_t at, Py_ssize_t end, bint integer) noexcept nogil:
    """Where a JSON number starting at ``at`` ends, or -1 if none does there: -?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?,
    without the fraction and exponent for an ``integer``."""
    cdef Py_ssize_t i = at
    if i < end and p[i] == 45:  # -
        i += 1
    if i >= end or not 48 <= p[i] <= 57:
        return -1
    i = i + 1 if p[i] == 48 else _digits(p, i, end)
    if integer:
        return i
    if i < end and p[i] == 46:  # .
        if i + 1 >= end or not 48 <= p[i + 1] <= 57:
            return -1
        i = _digits(p, i + 1, end)
    if i < end and (p[i] == 101 or p[i] == 69):  # e E
        i += 1
        if i < end and (p[i] == 43 or p[i] == 45):
            i += 1
        if i >= end or not 48 <= p[i] <= 57:
            return -1
        i = _digits(p, i, end)
    return i


cdef bint _int_at(const unsigned char *p, Py_ssize_t at, Py_ssize_t stop, int64_t *out) noexcept nogil:
    """The canonical integer p[at:stop] (what an encoder's %d writes), if it fits an int64."""
    cdef bint negative = p[at] == 45
    cdef Py_ssize_t first = at + negative
    cdef uint64_t value = 0
    if stop - first > MAX_DIGITS:
        return False
    for i in range(first, stop):
        value = value * 10 + (p[i] - 48)
    if negative:
        if value > <uint64_t> 9223372036854775807 + 1 or value == 0:  # "-0": valid JSON, never written
            return False
        out[0] = <int64_t> (0 - value)
    else:
        if value > <uint64_t> 9223372036854775807:
            return False
        out[0] = <int64_t> value
    return True


cdef Py_ssize_t _match(const unsigned char *p, Py_ssize_t n, tuple steps, bytes tail, dict kwargs, list dtypes,
                       int64_t *dims, int *ranks) except -2:
    """Read a header written by the type's own encoder template without a JSON parser: the template's literals
    byte for byte, its values in their canonical spelling, each checked as msgspec's typed decoder checks it.
    ``steps``: (literal, slot, name, lo, hi, extra) each; ``tail`` the literal after the last value; ``dims``
    MAX_DIMS per buffer. Returns the bytes matched (``n``), or -1 at the first difference, when msgspec decides
    instead (a header written otherwise is not wrong, only not this encoder's)."""
    cdef Py_ssize_t at = 0, stop, lit, k, d
    cdef const unsigned char *q
    cdef int64_t ivalue
    cdef double fvalue
    cdef char number[MAX_NUMBER_CHARS + 1]
    cdef int slot
    for step in steps:
        literal, slot, name, lo, hi, extra = <tuple> step
        lit = len(<bytes> literal)
        q = <const unsigned char *> (<bytes> literal)
        if at + lit > n or memcmp(p + at, q, lit) != 0:
            return -1
        at += lit
        if slot == INT_SLOT:
            stop = _number_end(p, at, n, True)
            if stop < 0 or not _int_at(p, at, stop, &ivalue) or not (<int64_t> lo <= ivalue <= <int64_t> hi):
                return -1
            kwargs[name] = ivalue
        elif slot == FLOAT_SLOT:
            stop = _number_end(p, at, n, False)
            if stop < 0 or stop - at > MAX_NUMBER_CHARS:
                return -1
            if _number_end(p, at, n, True) == stop:  # an integer: msgspec reads it as one, then converts ("-0" → 0.0)
                if not _int_at(p, at, stop, &ivalue):
                    return -1
                fvalue = <double> ivalue  # rounded to nearest, as Python's float(int)
            else:
                memcpy(number, p + at, stop - at)
                number[stop - at] = 0
                fvalue = PyOS_string_to_double(number, NULL, NULL)  # correctly rounded, whatever the C locale
            if not (isfinite(fvalue) and <double> lo <= fvalue <= <double> hi):
                return -1
            kwargs[name] = fvalue
        elif slot == STR_SLOT:
            if at >= n or p[at] != 34:  # "
                return -1
            stop = at + 1
            while stop < n and p[stop] != 34:
                if p[stop] < 32 or p[stop] > 126 or p[stop] == 92:  # control, non-ASCII, an escape: msgspec reads it
                    return -1
                stop += 1
            if stop >= n or stop - at - 1 > <Py_ssize_t> hi:
                return -1
            text = PyUnicode_DecodeASCII(<const char *> p + at + 1, stop - at - 1, NULL)
            if extra is not None and text not in <tuple> extra:
                return -1
            kwargs[name] = text
            stop += 1
        elif slot == DTYPE_SLOT:
            stop = at
            while stop < n and p[stop] != 34:
                stop += 1
            dtype = (<dict> extra).get(p[at:stop])  # bytes name → str name, only the dtypes the array allows
            if dtype is None:
                return -1
            dtypes.append(dtype)
        else:  # SHAPE_SLOT: k is the buffer
            k = <Py_ssize_t> lo
            if k >= MAX_BUFFERS:  # a layout of more buffers than the dims hold (decode() never passes one)
                return -1
            d = 0
            stop = at
            while True:
                lit = _number_end(p, stop, n, True)
                if lit < 0 or p[stop] == 45 or d >= MAX_DIMS or not _int_at(p, stop, lit, &ivalue):
                    return -1
                dims[k * MAX_DIMS + d] = ivalue
                d += 1
                stop = lit
                if stop < n and p[stop] == 44:  # ,
                    stop += 1
                    continue
                break
            ranks[k] = <int> d
        at = stop
    lit = len(tail)
    if n - at != lit or memcmp(p + at, <const unsigned char *> tail, lit) != 0:
        return -1
    return n


def decode(object frames, dict plans):
    """The message ``frames`` hold, built and checked as `pipeline.messages` would, or None for anything unusual
    (the Python decoders then decide). ``plans``: topic → the type's plan (see `messages._compiled_plan`), filled on
    first sight of a topic."""
    if type(frames) is not list:
        return None
    frames = tuple(<list> frames)  # its own: Python code runs in the loop below, another thread could shrink a list
    cdef Py_ssize_t nframes = len(<tuple> frames)
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
    cls, decoder, field_names, arrays, max_bytes, check, layout = <tuple> plan
    cdef Py_ssize_t nbuffers = len(<dict> arrays)
    if nframes != 2 + nbuffers or nbuffers > MAX_BUFFERS:
        return None
    cdef int64_t dims[MAX_BUFFERS * MAX_DIMS]
    cdef int ranks[MAX_BUFFERS]
    cdef Py_ssize_t i, j, ndim, count
    kwargs = {}
    dtypes = []
    if layout is not None and _match(<const unsigned char *> (<bytes> raw), len(<bytes> raw), <tuple> layout[0],
                                     <bytes> layout[1], kwargs, dtypes, dims, ranks) >= 0:
        names = list(<dict> arrays)  # the template's order
    else:  # written otherwise: msgspec's typed decoder reads and checks it
        kwargs.clear()
        del dtypes[:]
        try:
            header = decoder.decode(raw)
        except _MsgspecError:
            return None
        specs = header.buffers
        if len(specs) != nbuffers:
            return None
        values = header.fields
        for name in field_names:
            kwargs[name] = getattr(values, name)
        kwargs["seq"] = header.seq
        kwargs["capture_ns"] = header.capture_ns
        kwargs["source"] = header.source
        names = []
        for i in range(nbuffers):
            spec = specs[i]
            shape = spec.shape
            if len(<list> shape) > MAX_DIMS:
                return None
            for j in range(len(<list> shape)):
                size = (<list> shape)[j]  # msgspec held it to ≥ 0; a uint64 would not fit an int64
                if size > max_bytes:
                    return None
                dims[i * MAX_DIMS + j] = size
            ranks[i] = <int> len(<list> shape)
            names.append(spec.name)
            dtypes.append(spec.dtype)
    cdef cnp.npy_intp shape_[MAX_DIMS]
    cdef int64_t limit = max_bytes, declared = 0, nbytes, ceiling, dim
    cdef int kind
    cdef double max_abs
    for i in range(nbuffers):
        name = names[i]
        rule = (<dict> arrays).get(name)
        if rule is None or name in kwargs:  # not an array of this type, or one named twice
            return None
        allowed, ndims, max_abs = <tuple> rule
        entry = (<dict> allowed).get(dtypes[i])
        ndim = ranks[i]
        if entry is None or ndim not in <tuple> ndims:
            return None
        descr, itemsize, kind = <tuple> entry
        nbytes = ceiling = itemsize
        for j in range(ndim):
            dim = dims[i * MAX_DIMS + j]
            if dim > limit:
                return None
            shape_[j] = dim
            nbytes *= dim
            ceiling *= dim if dim else 1  # as the Python decoder counts a zero dimension
            if ceiling > limit:
                return None
        declared += nbytes
        if declared > limit:
            return None
        arr = _view(frames[2 + i], descr, <int> ndim, shape_, <Py_ssize_t> nbytes)
        if arr is None:
            return None
        if kind != NONE and nbytes:
            count = nbytes // itemsize
            if (kind == IN_PYTHON or count > SMALL_ELEMENTS or not _clearly_within(
                    <const float *> cnp.PyArray_DATA(arr), count * (2 if kind == COMPLEX64 else 1), max_abs)):
                _check_in_python(cls.type_name, name, arr, max_abs)  # raises saying what is wrong
        kwargs[name] = arr
    msg = cls.__new__(cls)
    msg.__dict__ = kwargs  # every field, checked above: the dataclass __init__ would only copy them
    if check is not None:
        check(msg)
    return msg


def read_header(bytes raw, tuple layout):
    """What the template reading takes from ``raw`` (a plan's ``layout``): (values by field, dtypes, shapes), or None
    where msgspec would read it instead. For the tests, which hold it to msgspec's reading."""
    cdef int64_t dims[MAX_BUFFERS * MAX_DIMS]
    cdef int ranks[MAX_BUFFERS]
    kwargs, dtypes = {}, []
    if _match(<const unsigned char *> raw, len(raw), <tuple> layout[0], <bytes> layout[1], kwargs, dtypes, dims,
              ranks) < 0:
        return None
    return kwargs, dtypes, [[dims[k * MAX_DIMS + d] for d in range(ranks[k])] for k in range(len(dtypes))]
