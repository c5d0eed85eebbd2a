"""Transformers: one expression language and a registry of small steps, compiled once per route.

pipeline = compile_steps(route.transform, named=config.transformers, storages=engine)
entities = pipeline.apply(entity)   # raises RecordFiltered / RecordRejected
"""

from crossdock.transform import steps as _steps  # noqa: F401 - fills STEPS
from crossdock.transform.config_tests import TestFailure, run_transform_tests
from crossdock.transform.expressions import (
    FUNCTIONS,
    EvaluationError,
    Expression,
    compile_condition,
    compile_expression,
    compile_identifier,
    compile_template,
)
from crossdock.transform.pipeline import (
    STEPS,
    CompileContext,
    Pipeline,
    Step,
    StepFailed,
    StepOptions,
    StorageAccess,
    compile_steps,
    register_step,
)

__all__ = [
    "FUNCTIONS",
    "STEPS",
    "CompileContext",
    "EvaluationError",
    "Expression",
    "Pipeline",
    "Step",
    "StepFailed",
    "StepOptions",
    "StorageAccess",
    "TestFailure",
    "compile_condition",
    "compile_expression",
    "compile_identifier",
    "compile_steps",
    "compile_template",
    "register_step",
    "run_transform_tests",
]
