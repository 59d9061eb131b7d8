"""Modules that tests run in real child processes (``PYTHONPATH`` includes ``tests/``)."""
