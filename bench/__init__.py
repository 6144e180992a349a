"""feedwatch benchmarks: ``python -m bench`` (or ``make bench``).

Runs the scenarios of issue 6 against SQLite, MariaDB and PostgreSQL with real
``feedwatch watch`` processes, prints a table, and writes
``bench/results/report.md`` with a plot. See ``docs/benchmarks.md`` for the
findings and how to read the figures.
"""
