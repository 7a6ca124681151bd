"""Step 2: the Experiment checked against the world (validation: registries, model sources, data
files; experiment_loader: load_experiment = read, override, validate, check), then Experiment ->
[Arm] (plan: one arm per method x model x task, hashed for resume) and the per-arm estimates
`harness plan` prints before anything is spent (estimate)."""
