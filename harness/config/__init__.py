"""The files a user writes, as typed specs: the lowest layer above the foundation, asking nothing
of the world. schema (the experiment's pydantic models), yamlfile (YAML with line numbers, --set,
one-sentence errors), golden_set (the golden-set file and load_golden). Checking an experiment
against the world (registries, model sources, data files) is harness.planning.validation.
"""
