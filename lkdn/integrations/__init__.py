"""Integrations with other tools, each imported explicitly (never by ``import lkdn``).

* :mod:`lkdn.integrations.spandrel`: ``install()`` registers every architecture of ours that
  declares a state-dict detection as a spandrel architecture, and ``load_model(path)`` loads a
  checkpoint through lkdn's safe loader (optional dependency: ``pip install -e ".[spandrel]"``
  in the clone).
"""
