"""Utilities: checkpoint I/O (:mod:`lkdn.utils.checkpoint`)."""
