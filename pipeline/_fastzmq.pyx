# cython: language_level=3, boundscheck=False, wraparound=False
"""A message's parts read from a ZeroMQ socket in one compiled call (issue 17: the transport's hot path).

Why: in Python a read is a dozen calls into pyzmq (ask EVENTS, then recv and a Frame per part), each run cold after
the idle gap between messages; done here, reading a 64 B message behind a poll costs less than pyzmq's own blocking
`recv_multipart` (`benchmarks/transport.py`). libzmq is not linked: its functions are looked up at import in the copy
pyzmq already loaded (`dlsym` through pyzmq's extension), so both work on the same sockets. Without a compiler the
transport reads in Python as before (`pipeline.transport`); what it reads is the same.
"""

from libc.errno cimport EAGAIN
from cpython.buffer cimport PyBUF_WRITABLE
from cpython.bytes cimport PyBytes_FromStringAndSize

cdef extern from "<dlfcn.h>" nogil:
    void *dlopen(const char *filename, int flags)
    void *dlsym(void *handle, const char *symbol)
    char *dlerror()
    int RTLD_NOW
    int RTLD_NOLOAD

cdef extern from *:
    """
    /* libzmq's message type, as zmq.h declares it (64 bytes, pointer-aligned: stable since libzmq 4.1) */
    typedef struct { unsigned char _[64] __attribute__ ((aligned (sizeof (void *)))); } earshot_zmq_msg_t;
    typedef int (*earshot_msg_fn_t) (earshot_zmq_msg_t *);
    typedef int (*earshot_msg_recv_t) (earshot_zmq_msg_t *, void *, int);
    typedef void *(*earshot_msg_data_t) (earshot_zmq_msg_t *);
    typedef size_t (*earshot_msg_size_t) (const earshot_zmq_msg_t *);
    typedef int (*earshot_msg_more_t) (const earshot_zmq_msg_t *);
    typedef int (*earshot_errno_t) (void);
    typedef int (*earshot_msg_move_t) (earshot_zmq_msg_t *, earshot_zmq_msg_t *);
    /* zmq_pollitem_t as zmq.h declares it on POSIX */
    typedef struct { void *socket; int fd; short events; short revents; } earshot_pollitem_t;
    typedef int (*earshot_poll_t) (earshot_pollitem_t *, int, long);
    """
    ctypedef struct earshot_zmq_msg_t:
        pass
    ctypedef int (*earshot_msg_fn_t)(earshot_zmq_msg_t *) nogil
    ctypedef int (*earshot_msg_recv_t)(earshot_zmq_msg_t *, void *, int) nogil
    ctypedef void *(*earshot_msg_data_t)(earshot_zmq_msg_t *) nogil
    ctypedef size_t (*earshot_msg_size_t)(const earshot_zmq_msg_t *) nogil
    ctypedef int (*earshot_msg_more_t)(const earshot_zmq_msg_t *) nogil
    ctypedef int (*earshot_errno_t)() nogil
    ctypedef int (*earshot_msg_move_t)(earshot_zmq_msg_t *, earshot_zmq_msg_t *) nogil
    ctypedef struct earshot_pollitem_t:
        void *socket
        int fd
        short events
        short revents
    ctypedef int (*earshot_poll_t)(earshot_pollitem_t *, int, long) nogil

cdef enum:
    ZMQ_DONTWAIT = 1
    ZMQ_POLLIN = 1
    MAX_WAIT_SOCKETS = 64

#: the most sockets `wait` takes at once (a node with more inputs waits through a zmq.Poller)
WAIT_LIMIT = MAX_WAIT_SOCKETS

cdef earshot_msg_fn_t msg_init = NULL
cdef earshot_msg_fn_t msg_close = NULL
cdef earshot_msg_recv_t msg_recv = NULL
cdef earshot_msg_data_t msg_data = NULL
cdef earshot_msg_size_t msg_size = NULL
cdef earshot_msg_more_t msg_more = NULL
cdef earshot_errno_t zmq_errno = NULL
cdef earshot_msg_move_t msg_move = NULL
cdef earshot_poll_t zmq_poll = NULL


cdef void *_symbol(void *lib, const char *name) except NULL:
    cdef void *f = dlsym(lib, name)
    if f == NULL:
        raise ImportError(f"libzmq has no {name.decode()} (pyzmq's copy)")
    return f


def _bind(str pyzmq_extension):
    """Look libzmq's functions up through pyzmq's loaded extension (and so in the libzmq it loaded)."""
    global msg_init, msg_close, msg_recv, msg_data, msg_size, msg_more, zmq_errno, msg_move, zmq_poll
    cdef void *lib = dlopen(pyzmq_extension.encode(), RTLD_NOW | RTLD_NOLOAD)
    if lib == NULL:
        raise ImportError(f"pyzmq's extension is not loaded: {pyzmq_extension}")
    msg_init = <earshot_msg_fn_t> _symbol(lib, b"zmq_msg_init")
    msg_close = <earshot_msg_fn_t> _symbol(lib, b"zmq_msg_close")
    msg_recv = <earshot_msg_recv_t> _symbol(lib, b"zmq_msg_recv")
    msg_data = <earshot_msg_data_t> _symbol(lib, b"zmq_msg_data")
    msg_size = <earshot_msg_size_t> _symbol(lib, b"zmq_msg_size")
    msg_more = <earshot_msg_more_t> _symbol(lib, b"zmq_msg_more")
    zmq_errno = <earshot_errno_t> _symbol(lib, b"zmq_errno")
    msg_move = <earshot_msg_move_t> _symbol(lib, b"zmq_msg_move")
    zmq_poll = <earshot_poll_t> _symbol(lib, b"zmq_poll")


cdef class Part:
    """One received part, kept without a copy: a read-only buffer over libzmq's message, released with it."""

    cdef earshot_zmq_msg_t msg
    cdef Py_ssize_t shape[1]
    cdef bint live

    def __init__(self):  # `read` makes them (Part.__new__); one made here would hold no message at all
        raise TypeError("a Part is made by pipeline._fastzmq.read, not directly")

    def __dealloc__(self):
        if self.live:
            msg_close(&self.msg)

    def __len__(self):
        return <Py_ssize_t> msg_size(&self.msg)

    @property
    def nbytes(self):
        """Its size, as a memoryview or an array says it (what the transport's byte budgets count)."""
        return <Py_ssize_t> msg_size(&self.msg)

    def __getbuffer__(self, Py_buffer *view, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError("a received part is read-only")
        self.shape[0] = <Py_ssize_t> msg_size(&self.msg)
        view.buf = msg_data(&self.msg)
        view.obj = self
        view.len = self.shape[0]
        view.readonly = 1
        view.itemsize = 1
        view.format = "B"
        view.ndim = 1
        view.shape = self.shape
        view.strides = NULL
        view.suboffsets = NULL
        view.internal = NULL

    def __releasebuffer__(self, Py_buffer *view):
        pass

    @property
    def buffer(self):
        """As pyzmq's Frame.buffer: a memoryview of the part (what the decoder views arrays through)."""
        return memoryview(self)


def read(size_t socket, Py_ssize_t copy_below=65536):
    """The next whole message on the socket at address ``socket`` (``zmq.Socket.underlying``), without blocking:
    its parts, each under ``copy_below`` bytes as bytes, larger ones as a `Part` (no copy); None when none is
    waiting. A multipart message arrives whole, so only its first part can find the socket empty."""
    cdef earshot_zmq_msg_t msg
    cdef int more = 1
    cdef int rc
    cdef int err
    cdef size_t size
    cdef Part part
    parts = []
    while more:
        msg_init(&msg)
        rc = msg_recv(&msg, <void *> socket, ZMQ_DONTWAIT)  # never blocks: the GIL stays
        if rc < 0:
            err = zmq_errno()
            msg_close(&msg)
            if err == EAGAIN and not parts:
                return None
            import zmq
            raise zmq.ZMQError(err)
        more = msg_more(&msg)
        size = msg_size(&msg)
        if <Py_ssize_t> size < copy_below:
            parts.append(PyBytes_FromStringAndSize(<char *> msg_data(&msg), size))
            msg_close(&msg)
        else:
            part = Part.__new__(Part)
            msg_init(&part.msg)
            msg_move(&part.msg, &msg)  # the content moves into the part, no copy
            part.live = True
            msg_close(&msg)
            parts.append(part)
    return parts


def wait(list sockets, long timeout_ms):
    """Wait up to ``timeout_ms`` until one of ``sockets`` (zmq.Socket, at most 64) has a message; returns how many
    have. Each socket's address is read at every call, so a closed one raises (ENOTSOCK) rather than being waited
    on. The GIL is released while waiting."""
    cdef earshot_pollitem_t items[MAX_WAIT_SOCKETS]
    cdef int n = len(sockets)
    cdef int i
    cdef int rc
    if n > MAX_WAIT_SOCKETS:
        raise ValueError(f"wait: {n} sockets, at most {MAX_WAIT_SOCKETS}")
    cdef size_t address
    for i in range(n):
        address = sockets[i].underlying
        if address == 0:  # closed: zmq_poll would wait on file descriptor 0 instead
            import zmq
            raise zmq.ZMQError(zmq.ENOTSOCK)
        items[i].socket = <void *> address
        items[i].fd = 0
        items[i].events = ZMQ_POLLIN
        items[i].revents = 0
    with nogil:
        rc = zmq_poll(items, n, timeout_ms)
    if rc < 0:
        import zmq
        raise zmq.ZMQError(zmq_errno())
    return rc
