"""
Lazily loaded package exports: a package lists its public names and the
modules they live in, and each module is imported when one of its names
is first used (so importing the package, and the twistd plugin that
imports it, stays cheap).
"""

import importlib


def lazyExports(package, names):
    """
    Module-level C{__getattr__} and C{__dir__} for C{package} (its
    C{__name__}) exporting C{names}: public name -> module name.

    @return: C{(__getattr__, __dir__)}.
    """
    public = sorted(names)

    def __getattr__(name):
        module = names.get(name)
        if module is None:
            raise AttributeError("module %r has no attribute %r"
                                 % (package, name))
        return getattr(importlib.import_module(module), name)

    def __dir__():
        return public

    return __getattr__, __dir__
