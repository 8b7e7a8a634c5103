"""The compiled parts of Earshot, the transport's hot path (issue 17): `pipeline/_fastzmq.pyx` reads a message's
parts, `pipeline/_fastdecode.pyx` decodes the common case.

Optional on purpose: where no C compiler is at hand the build goes on without it and the transport reads in Python
(slower per message, the same messages). The project's metadata is in pyproject.toml."""
from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # a build without Cython (pyproject asks for it): no extension, the Python reader is used
    extensions = []
else:
    sources = [Extension("pipeline._fastzmq", ["pipeline/_fastzmq.pyx"])]
    try:
        import numpy
    except ImportError:  # a build without numpy's headers (pyproject asks for them): decoding stays in Python
        pass
    else:
        sources.append(Extension("pipeline._fastdecode", ["pipeline/_fastdecode.pyx"],
                                 include_dirs=[numpy.get_include()],
                                 define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]))
    extensions = cythonize(sources, language_level=3, quiet=True)
    for ext in extensions:  # set here: cythonize returns new Extension objects, without `optional`
        ext.optional = True

setup(ext_modules=extensions)
