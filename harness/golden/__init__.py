"""The release gate on golden sets: gate (candidate vs baseline verdict) <- outputs (console,
Markdown, JUnit, MLflow), summary (golden rows of a finished run), promote (`gate --register`).
The golden-set file is harness.config.golden_set; scoring a model on a set is
harness.eval.golden_scoring (with golden_assertions)."""
