"""Integrations with other tools, each imported explicitly (never by ``import lkdn``).

* :mod:`lkdn.integrations.spandrel`: ``install()`` registers LKDN and RFDN as spandrel
  architectures (optional dependency: ``pip install lkdn[spandrel]``).
"""
