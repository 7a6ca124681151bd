"""Step 2: Experiment -> [Arm] (plan: one arm per method x model x task, hashed for resume) and the
per-arm estimates `harness plan` prints before anything is spent (estimate)."""
