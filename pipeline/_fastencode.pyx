# cython: language_level=3, boundscheck=False, wraparound=False
"""The common case of `pipeline.messages.encode` in one compiled call (issue 17: the sending side of the hop).

Why: writing a header by the type's template (`messages._encode_template`) is a dozen attribute reads and checks in
Python — an array's flags, dtype, rank and shape each a call into numpy — and after the idle gap between frames each
runs several times slower than back to back (`benchmarks/transport.py --breakdown`: the sender's share). Here the
array's layout is read from its C struct, the shape written by a loop, and the same template filled by the same
``bytes %``: the frames are those `_encode_template` writes, byte for byte. Anything it does not take as is (a value
of another kind, an array not C-contiguous, in the machine's byte order and of a declared dtype and rank, a string
that needs escaping) returns None, and the Python encoders write it or say what is wrong.
"""

cimport numpy as cnp
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.math cimport isfinite
from libc.stdio cimport snprintf

cnp.import_array()

cdef enum:
    MAX_DIMS = 8
    SHAPE_CHARS = MAX_DIMS * 21  # each dimension's digits and a comma


cdef object _json_text = None


def configure(json_text):
    """Set once by `pipeline.messages`: its JSON-text writer for strings (cached there)."""
    global _json_text
    _json_text = json_text


cdef object _shape_text(cnp.ndarray a):
    """The shape as a header writes it: ``480,640,3``."""
    cdef char text[SHAPE_CHARS]
    cdef int at = 0
    cdef int i
    cdef int ndim = cnp.PyArray_NDIM(a)
    cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(a)
    for i in range(ndim):
        at += snprintf(text + at, SHAPE_CHARS - at, "%lld," if i + 1 < ndim else "%lld", <long long> dims[i])
    return PyBytes_FromStringAndSize(text, at)


def encode(object msg, tuple plan):
    """``msg``'s frames by its type's template ``plan`` (`messages._header_template`, whose last item gives per array
    field its dtypes' wire names by numpy type number), exactly as `messages._encode_template` writes them, or None
    for anything it would not take as is."""
    topic, template, fields, specs, wire_names = plan
    seq, capture_ns = msg.seq, msg.capture_ns
    if type(seq) is not int or type(capture_ns) is not int:
        return None
    source = _json_text(msg.source)
    if source is None:
        return None
    values = [seq, source, capture_ns]
    cdef double x
    for name, kind in <tuple> fields:
        value = getattr(msg, name)
        if kind is int:
            if type(value) is not int:
                return None
        elif kind is float:
            if type(value) is float:
                x = value
                if not isfinite(x):
                    return None
            elif type(value) is not int:
                return None
        elif kind is str:
            value = _json_text(value)
            if value is None:
                return None
        else:  # bool: the Struct writer spells it
            return None
        values.append(value)
    frames = [topic, None]
    cdef cnp.ndarray a
    cdef int i = 0
    for spec in <tuple> specs:
        array = getattr(msg, (<tuple> spec)[0])
        if type(array) is not cnp.ndarray:
            return None
        a = <cnp.ndarray> array
        wire = (<dict> wire_names[i]).get(cnp.PyArray_TYPE(a))
        if (wire is None or not cnp.PyArray_ISNOTSWAPPED(a) or cnp.PyArray_NDIM(a) not in <tuple> (<tuple> spec)[2]
                or cnp.PyArray_NDIM(a) > MAX_DIMS or not cnp.PyArray_IS_C_CONTIGUOUS(a)):
            return None  # the Python writer converts it, or says what is wrong
        values.append(wire)
        values.append(_shape_text(a))
        frames.append(a)
        i += 1
    msg.check()
    frames[1] = template % tuple(values)
    return frames
