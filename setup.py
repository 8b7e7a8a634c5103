"""The one compiled part of Earshot: `pipeline/_fastzmq.pyx`, the transport's read (issue 17).

Optional on purpose: where no C compiler is at hand the build goes on without it and the transport reads in Python
(slower per message, the same messages). The project's metadata is in pyproject.toml."""
from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # a build without Cython (pyproject asks for it): no extension, the Python reader is used
    extensions = []
else:
    extensions = cythonize([Extension("pipeline._fastzmq", ["pipeline/_fastzmq.pyx"])], language_level=3, quiet=True)
    for ext in extensions:  # set here: cythonize returns new Extension objects, without `optional`
        ext.optional = True

setup(ext_modules=extensions)
