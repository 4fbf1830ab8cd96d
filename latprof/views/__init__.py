"""Terminal views: what each ``latprof`` command prints, given the outcome its API call returned.

The API (``run_profile``, ``run_sweep``, ``compare_files``, ...) measures and writes files and returns an outcome;
the functions here print that outcome (tables, notes, file paths, ``--json``) and return the command's exit code.
``latprof/cli.py`` only parses flags, calls the API and one view, so a Python user gets the CLI's output with the
same two calls. Views import from the API, never the other way round.
"""
