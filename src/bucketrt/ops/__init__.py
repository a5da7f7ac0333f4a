"""bucketrt's custom ops, in one ONNX domain.

    schema      what an op is: OpSpec, Tensor, Attribute, the checks every backend shares
    catalogue   every op, defined once (OPS, BY_NAME, SIGN_HASH, ...)
    codegen     the C++ header and docs/ops.md, generated from the catalogue
    reference   each op's PyTorch reference: the semantics every kernel is tested against
    lowering    each op's standard-op lowering: the reference's semantics in standard ONNX ops
    lowering_costs  what each lowering costs against the custom kernel (docs/ops.md, by codegen)
    dispatch    `call` (the reference when eager, a node or a lowering when exporting) and `intercept`
    graph       single-node ONNX models of an op, for kernel tests and benchmarks
    node_check  every bucketrt node of an ONNX model checked against the catalogue

This package and its schema, catalogue, codegen and lowering_costs import only the standard library (CMake runs
codegen where there is no torch); the other modules need torch or onnx.
"""

from .catalogue import BY_NAME, OPS
from .schema import DOMAIN, VERSION, OpSpec

__all__ = ["BY_NAME", "DOMAIN", "OPS", "VERSION", "OpSpec"]
