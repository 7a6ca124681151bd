"""Step 1 of the flow: the experiment file -> a validated, frozen Experiment.

schema (pydantic models) <- yamlfile (YAML with line numbers, --set, one-sentence errors)
<- checks (against the world: registries, model sources, data files) <- load (load_experiment).
"""
