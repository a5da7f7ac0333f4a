"""An fp32 export folder to an int8 one, with onnxruntime.quantization and bucketrt's int8 ops (`bucketrt quantize`)."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import logging
import re
import shutil
import time
from importlib import metadata
from pathlib import Path

from bucketrt.errors import BucketrtError
from bucketrt.export_format.manifest import MANIFEST_NAME, custom_ops, read_manifest, write_manifest
from bucketrt.ops.catalogue import LINEAR_INT8, OPS
from bucketrt.ops.schema import DOMAIN

from .linear import decodes_with_cache, int8_linear_nodes, quantize_linear_layers

# What quantize_dynamic rewrites: the linear layers (a MatMul or Gemm with a constant weight).
OP_TYPES = ("MatMul", "Gemm")
WEIGHT_TYPES = ("int8", "uint8")
# Weights with 7 bits of range (int8 in [-64, 63], uint8 in [0, 127]): ONNX Runtime's CPU
# MatMulInteger with uint8 activations and int8 weights uses VPMADDUBSW on x86 CPUs without VNNI
# (AVX2, AVX-512 without VNNI), which adds two u8 x s8 products into a saturating int16
# (255 x 127 x 2 > 32767), so full-range weights overflow. Measured on this AVX2 machine
# (docs/switch_transformers.md, int8 section): one switch-tiny projection, standard-normal inputs,
# relative L2 error 0.096 per channel (0.034 per tensor) against 0.0096 for the exact integer
# product; with 7-bit weights 0.014 (0.018). The saturation made switch-tiny miss the check's
# criteria. ORT's own advice for non-VNNI CPUs; it costs one bit of weight precision on VNNI ones,
# whose vpdpbusd sums exactly: `reduce_range=False` (`bucketrt quantize --full-range`) takes the
# full 8 bits for models that run only on such CPUs.
REDUCE_RANGE = True
# Routers stay float: a linear node that computes a bucketrt op's routing input (catalogue: the
# inputs marked `routing`; Switch: MatMul, Softmax, Top1Dispatch; the top-k MoE exports: Gemm,
# Softmax or Sigmoid, a grouped or biased TopK, TopKExperts' expert_index and expert_weight). Its
# argmax or top-k picks each token's experts, and a flipped pick replaces a whole expert's output,
# so it stays float (it is d_model x experts: no time to save). Quantized, mixtral-tiny's routers
# flipped enough picks for 3 of 16 greedy tokens to differ. These nodes read only the shape of
# their input, not its values: a path back from a routing input ends there.
_SHAPE_ONLY = ("Shape", "Size")

# The criteria `bucketrt check` applies to a quantized export (recorded in its manifest; the
# check's options override them). Per float output: cosine similarity with the fp32 reference and
# relative L2 error ||q - r|| / ||r||; per logits output, the share of answers (argmax over the last
# axis: the class, each token's label or top-1 word, the QA start/end position) that agree; for
# generation, the share of greedy tokens that agree over `generate_tokens` steps; for models that
# hash, the share of hash codes quantization may flip (the outputs are compared on the backend's
# codes, so a flip shows only there).
CHECK_CRITERIA = {
    "min_cosine": 0.99,
    "max_rel_l2": 0.1,
    "min_agreement": 0.9,
    "generate_tokens": 8,
    "max_code_flips": 0.25,
}


def is_quantized(manifest: dict) -> bool:
    return "quantization" in manifest


def _versions() -> dict:
    out = {}
    for dist in ("bucketrt", "onnxruntime", "onnx", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _matcher(pattern: str):
    """A node-name test: `re:REGEX` (re.fullmatch), otherwise a glob (fnmatch, case-sensitive)."""
    if pattern.startswith("re:"):
        try:
            regex = re.compile(pattern[3:])
        except re.error as e:
            raise BucketrtError(f"--exclude {pattern!r} is not a valid regular expression ({e})") from None
        return lambda name: regex.fullmatch(name) is not None
    return lambda name: fnmatch.fnmatchcase(name, pattern)


def linear_nodes(model) -> list[str]:
    """Names of the MatMul/Gemm nodes with a constant weight (what quantize_dynamic rewrites)."""
    constants = {init.name for init in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [
        node.name
        for node in model.graph.node
        if node.domain in ("", "ai.onnx") and node.op_type in OP_TYPES and any(i in constants for i in node.input[:2])
    ]


def router_nodes(model) -> list[str]:
    """The linear nodes that compute a bucketrt op's routing inputs, in graph order: walking back
    from each routing input through every node that computes it, the first linear node on each path
    (its own inputs are not walked: that is the hidden state the router reads)."""
    routing = {spec.name: [i for i, t in enumerate(spec.inputs) if t.routing] for spec in OPS}
    producer = {out: node for node in model.graph.node for out in node.output}
    pending = [
        node.input[i]
        for node in model.graph.node
        if node.domain == DOMAIN
        for i in routing.get(node.op_type, ())
        if i < len(node.input)
    ]
    seen, found = set(), set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        up = producer.get(name)
        if up is None or up.op_type in _SHAPE_ONLY:
            continue
        if up.op_type in OP_TYPES:
            found.add(up.name)
        else:
            pending.extend(up.input)
    return [node.name for node in model.graph.node if node.name in found]


def _custom_nodes(model) -> dict[str, bytes]:
    return {n.name: n.SerializeToString(deterministic=True) for n in model.graph.node if n.domain == DOMAIN}


@contextlib.contextmanager
def _quiet_root_logger():
    """quantize_dynamic logs advice (pre-processing) on the root logger for every model."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_model_file(
    source,
    target,
    *,
    per_channel: bool = True,
    weight_type: str = "int8",
    reduce_range: bool = REDUCE_RANGE,
    nodes_to_exclude=(),
    external=False,
) -> None:
    """One ONNX file through quantize_dynamic with bucketrt's settings (MatMul/Gemm, 7-bit weights
    unless `reduce_range` is False); `external`: write the weights to TARGET.data. Also what the
    benchmarks quantize BERT with."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_root_logger():
        quantize_dynamic(
            str(source),
            str(target),
            op_types_to_quantize=list(OP_TYPES),
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8 if weight_type == "int8" else QuantType.QUInt8,
            nodes_to_exclude=[*nodes_to_exclude, *(gemm_as_matmul(name) for name in nodes_to_exclude)],
            use_external_data_format=external,
        )


def gemm_as_matmul(name: str) -> str:
    """The name ONNX Runtime's dynamic quantizer gives a Gemm node once it has turned it into a MatMul
    (and an Add for the bias), which it does to every Gemm before it looks at nodes_to_exclude: an
    excluded Gemm (a top-k MoE export's router, an --exclude pattern's match) must be excluded by
    this name too, or it is quantized after all."""
    return f"{name}_MatMul"


def _expert_module():
    try:
        from . import expert_ffn
    except ImportError:  # a bucketrt without the int8 expert op
        return None
    return expert_ffn


def _expert_quantizer():
    module = _expert_module()
    return None if module is None else module.quantize_expert_ffn


def _check_output_dir(export_dir: Path, output_dir: Path) -> None:
    if output_dir.resolve() == export_dir.resolve():
        raise BucketrtError("the output folder is the export folder", "quantize into a new folder")
    if output_dir.exists() and not output_dir.is_dir():
        raise BucketrtError(f"output '{output_dir}' exists and is not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        previous = output_dir / MANIFEST_NAME
        try:
            ours = "quantization" in json.loads(previous.read_text())
        except (OSError, ValueError, TypeError):
            ours = False
        if not ours:
            raise BucketrtError(
                f"output '{output_dir}' is not empty and holds no quantized export",
                "choose a new folder (a folder `bucketrt quantize` wrote is replaced)",
            )


def quantize(
    export_dir,
    output_dir,
    *,
    per_channel: bool = True,
    weight_type: str = "int8",
    reduce_range: bool = REDUCE_RANGE,
    exclude=(),
    experts: bool | None = None,
    console=None,
) -> dict:
    """Writes an int8 copy of the fp32 export `export_dir` to `output_dir`; returns its manifest.

    `per_channel`: one weight scale per output channel (else per tensor). `weight_type`: "int8"
    or "uint8" weights (activations are always quantized per run, to uint8). `reduce_range`: the
    linear layers' weights in 7 bits (REDUCE_RANGE's comment: what CPUs without VNNI need), else 8
    (the int8 experts and LinearInt8 always take 8: their kernels sum exactly on every CPU). A
    decoder's linear layers (a component with a key/value cache that calls bucketrt ops) go to
    LinearInt8 with int8 weights (linear.py), the others to quantize_dynamic. `exclude`: node-name
    patterns (globs, or `re:REGEX`) of linear layers to keep float; each must match a node.
    `experts`: also quantize the experts' weights, ExpertFFN's (Switch) and TopKExperts' (the top-k
    MoE exports), into their int8 ops (None: where the int8 expert ops are available; True: required). Raises BucketrtError for anything the caller can fix.
    """
    import onnx

    export_dir, output_dir = Path(export_dir), Path(output_dir)
    if weight_type not in WEIGHT_TYPES:
        raise BucketrtError(
            f"weight type {weight_type!r} is not supported", f"choose one of: {', '.join(WEIGHT_TYPES)}"
        )
    manifest = read_manifest(export_dir)
    if is_quantized(manifest):
        raise BucketrtError(
            f"'{export_dir}' is already quantized (from {manifest['quantization']['source']['path']})",
            "quantize the fp32 export it was made from",
        )
    if manifest.get("dtype", "fp32") != "fp32":
        raise BucketrtError(
            f"'{export_dir}' is a {manifest['dtype']} export; int8 quantization starts from fp32 weights",
            "export with --dtype fp32 and quantize that",
        )
    _check_output_dir(export_dir, output_dir)
    expert_quantizer = _expert_quantizer()
    if experts and expert_quantizer is None:
        raise BucketrtError("this bucketrt has no int8 expert quantizer", "pass --no-experts")
    # The float expert ops the rewrite knows (ExpertFFN, TopKExperts).
    expert_ops = tuple(getattr(_expert_module(), "INT8_EXPERT_OPS", ("ExpertFFN",)))
    started = time.perf_counter()
    source_bytes = (export_dir / MANIFEST_NAME).read_bytes()

    # Which linear layers each component has and which stay float, before any work.
    patterns = list(exclude)
    matchers = {p: _matcher(p) for p in patterns}
    used = dict.fromkeys(patterns, False)
    plans = []
    expert_ops_found: set[str] = set()  # the float expert ops the export has
    for entry in manifest["components"]:
        proto = onnx.load(str(export_dir / entry["files"]["model"]), load_external_data=False)
        linear = linear_nodes(proto)
        excluded = []
        for name in linear:
            hits = [p for p, match in matchers.items() if match(name)]
            for p in hits:
                used[p] = True
            if hits:
                excluded.append(name)
        routers = [n for n in router_nodes(proto) if n in linear and n not in excluded]
        found = {n.op_type for n in proto.graph.node if n.domain == DOMAIN and n.op_type in expert_ops}
        expert_ops_found.update(found)
        has_experts = bool(found)
        # A decoding step's linear layers through LinearInt8 (linear.py), where the graph needs
        # bucketrt's library already (a standard-op export stays standard); the others through ORT.
        own = []
        if weight_type == "int8" and decodes_with_cache(proto) and _custom_nodes(proto):
            own = int8_linear_nodes(proto, [n for n in linear if n not in excluded and n not in routers])
        plans.append((entry, linear, excluded, routers, has_experts, own))
    unused = [p for p, hit in used.items() if not hit]
    if unused:
        raise BucketrtError(
            f"--exclude {', '.join(map(repr, unused))} matches no MatMul/Gemm node of '{export_dir}'",
            "patterns are globs (or re:REGEX) over node names, e.g. 'node_linear_1*'",
        )
    any_experts = any(plan[4] for plan in plans)
    # The int8 expert op takes int8 weights only: with uint8 ones the experts stay float unless asked for.
    expert_types = getattr(_expert_module(), "WEIGHT_TYPES", ("int8",))
    auto_skip = experts is None and weight_type not in expert_types
    quantize_experts = bool(any_experts and expert_quantizer is not None and experts is not False and not auto_skip)

    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / MANIFEST_NAME).unlink(missing_ok=True)  # no manifest beside half-written models
    written, entries, ops_used, record = set(), [], {}, {}
    for entry, linear, excluded, routers, has_experts, own in plans:
        name = entry["name"]
        source_path = export_dir / entry["files"]["model"]
        target = output_dir / entry["files"]["model"]
        external = entry["files"].get("external_data") is not None
        data_name = target.name + ".data"
        (output_dir / data_name).unlink(missing_ok=True)
        if console is not None:
            console.print(f"Quantizing {source_path.name}: {len(linear) - len(excluded) - len(routers)} linear layers")
        quantize_model_file(
            source_path,
            target,
            per_channel=per_channel,
            weight_type=weight_type,
            reduce_range=reduce_range,
            nodes_to_exclude=excluded + routers + own,
            external=external,
        )
        proto = onnx.load(str(target))
        before = _custom_nodes(onnx.load(str(source_path), load_external_data=False))
        expert_nodes = []
        if quantize_experts and has_experts:
            expert_nodes = list(expert_quantizer(proto, per_channel=per_channel, weight_type=weight_type))
        after = _custom_nodes(proto)
        changed = [n for n in before if n not in expert_nodes and before[n] != after.get(n)]
        if changed:  # quantize_dynamic must leave bucketrt's nodes as they are
            raise RuntimeError(f"onnxruntime.quantization changed bucketrt nodes of {name}: {', '.join(changed)}")
        linear_int8 = quantize_linear_layers(proto, own, per_channel=per_channel) if own else []
        if expert_nodes or linear_int8 or external:
            onnx.save(
                proto,
                str(target),
                save_as_external_data=external,
                all_tensors_to_one_file=True,
                location=data_name,
            )
        remaining = {n.name for n in proto.graph.node if n.op_type in OP_TYPES}
        kept = set(excluded) | set(routers)
        remaining |= {n for n in linear if gemm_as_matmul(n) in remaining}
        quantized = [n for n in linear if n not in kept and n not in remaining]
        not_quantized = [n for n in linear if n not in kept and n in remaining]
        written.add(entry["files"]["model"])
        if entry["files"].get("external_data"):
            written.add(entry["files"]["external_data"])
        for op in custom_ops(proto, DOMAIN):
            known = ops_used.setdefault(op["name"], {**op, "nodes": 0})
            known["nodes"] += op["nodes"]
        entries.append(
            {**entry, "files": {"model": entry["files"]["model"], "external_data": data_name if external else None}}
        )
        record[name] = {
            "quantized_nodes": len(quantized),
            "excluded_nodes": excluded,
            "router_nodes": routers,  # kept float: see router_nodes
            "left_float_by_onnxruntime": not_quantized,
            "expert_nodes": expert_nodes,
            "linear_int8_nodes": linear_int8,  # in `quantized_nodes` too: LinearInt8, not ORT's int8 MatMul
        }

    # Everything else the export folder holds (config and tokenizer files, say) comes along;
    # TensorRT engines were built from the fp32 graphs, so they do not.
    for item in export_dir.iterdir():
        if item.name == MANIFEST_NAME or item.name in written or item.suffix in (".engine", ".plan"):
            continue
        target = output_dir / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)

    if any_experts and quantize_experts:
        int8_ops = getattr(_expert_module(), "INT8_EXPERT_OPS", {})
        # Which float expert op became which int8 op (the nodes: each component's expert_nodes).
        experts_record = {
            "quantized": True,
            "ops": {op: int8_ops[op][1].name for op in sorted(expert_ops_found) if op in int8_ops},
        }
    elif any_experts:
        if experts is False:
            reason = "--no-experts"
        elif expert_quantizer is None:
            reason = "this bucketrt has no int8 expert quantizer"
        else:
            reason = f"the int8 expert op takes {', '.join(expert_types)} weights, not {weight_type}"
        experts_record = {"quantized": False, "reason": reason}
    else:
        experts_record = None
    out = {key: value for key, value in manifest.items() if key != "engines"}
    out["components"] = entries
    out["ops"] = [ops_used[name] for name in sorted(ops_used)]
    # Dynamic quantization takes each activation's scale over the whole batch, so a row's answer
    # depends on the rows run beside it: a server runs each request of an int8 export alone.
    out["batch_rows_independent"] = False
    out["quantization"] = {
        "method": "onnxruntime.quantization.quantize_dynamic",
        "op_types": list(OP_TYPES),
        "weight_type": weight_type,
        "activation_type": "uint8 (dynamic: scale and zero point computed per run)",
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "exclude": patterns,
        "experts": experts_record,
        # The components whose linear layers went to LinearInt8 (linear.py), not quantize_dynamic.
        "linear_int8": {
            "op": LINEAR_INT8.name,
            "weights": "int8, symmetric, 8 bits" + (", per output channel" if per_channel else ", per layer"),
            "components": [name for name, r in record.items() if r["linear_int8_nodes"]],
        },
        "components": record,
        "source": {
            "path": str(export_dir.resolve()),
            "manifest_sha256": hashlib.sha256(source_bytes).hexdigest(),
            "weights_sha256": manifest.get("weights_sha256"),
        },
        "check": dict(CHECK_CRITERIA),
        "versions": _versions(),
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_manifest(output_dir, out)
    return out
