"""The `mmae-eval` tasks, one module (or package, for a task of several files) each: every
module here is imported by `mmae.evaluation.catalog`, and its `Evaluation` subclasses register
in `mmae.core.registry.EVALUATIONS`. A new task is one module here and its section in
`conf/evaluate.yaml`."""
