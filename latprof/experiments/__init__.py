"""Guideline experiments: declarative kernel specs, the interleaved sweep engine, and verdicts."""

from latprof.experiments.spec import ExperimentSpec, Variant, list_specs, load_spec, resolve_spec

__all__ = ["ExperimentSpec", "Variant", "list_specs", "load_spec", "resolve_spec"]
