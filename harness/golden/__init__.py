"""Golden sets: schema (the file) <- assertions (one output checked) <- scoring (a model run on a
set) <- gate (candidate vs baseline verdict) <- outputs (console, Markdown, JUnit, MLflow)."""
