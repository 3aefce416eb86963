"""Orchestration, one library call per CLI command: read through ``store``, compute through
``analysis``, draw through ``present``, write through ``store``."""
