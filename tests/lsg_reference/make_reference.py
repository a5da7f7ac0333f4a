"""Reference outputs of lsg-converter's own LSG models, for bucketrt's port to match.

Runs in the separate transformers-4.x environment (see environment.py), never in bucketrt's:

    python make_reference.py OUT_DIR

For every case it builds a small LSG model from a config with a fixed seed, saves it with
`save_pretrained` to OUT_DIR/<case>/model (the folder bucketrt loads), and writes the inputs and
the original's outputs to OUT_DIR/<case>/reference.pt. The `lsh` sparsity draws its random
projections with torch.randn on every forward: each forward runs right after
torch.manual_seed(LSH_SEED), and the port draws the same projections from a generator seeded alike.
Deterministic: the same script and pins give the same files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

LSH_SEED = 1234
TINY = dict(
    vocab_size=97,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=48,
    max_position_embeddings=80,
    type_vocab_size=2,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    block_size=8,
    sparse_block_size=8,
    sparsity_factor=2,
    num_global_tokens=1,
    pad_token_id=1,
)
# (family, head, config overrides). Heads: "base" | "mlm" | "cls".
CASES = {
    **{
        f"bert-mlm-{s}": ("bert", "mlm", {"sparsity_type": s})
        for s in ("none", "norm", "pooling", "lsh", "stride", "block_stride")
    },
    "bert-mlm-bos_pooling": ("bert", "mlm", {"sparsity_type": "bos_pooling", "sparsity_factor": 4}),
    "bert-mlm-lsh-rounds": ("bert", "mlm", {"sparsity_type": "lsh", "lsh_num_pre_rounds": 2, "sparsity_factor": 4}),
    "bert-mlm-lsh-small-sparse": ("bert", "mlm", {"sparsity_type": "lsh", "sparse_block_size": 4}),
    "bert-mlm-norm-globals": (
        "bert",
        "mlm",
        {"sparsity_type": "norm", "num_global_tokens": 3, "mask_first_token": True, "sparse_block_size": 4},
    ),
    "bert-mlm-pooling-nopool": (
        "bert",
        "mlm",
        {"sparsity_type": "pooling", "pool_with_global": False, "sparsity_factor": 4},
    ),
    "bert-mlm-stride-sf1": ("bert", "mlm", {"sparsity_type": "stride", "sparsity_factor": 1}),
    "bert-mlm-norm-bs-eq-sf": ("bert", "mlm", {"sparsity_type": "norm", "sparsity_factor": 8}),
    "bert-base-norm": ("bert", "base", {"sparsity_type": "norm"}),
    "bert-cls-block_stride": ("bert", "cls", {"sparsity_type": "block_stride", "num_labels": 3}),
    "roberta-base-lsh": ("roberta", "base", {"sparsity_type": "lsh"}),
    "roberta-mlm-pooling": ("roberta", "mlm", {"sparsity_type": "pooling"}),
    "roberta-cls-norm": ("roberta", "cls", {"sparsity_type": "norm", "num_labels": 2}),
}
# Sequence lengths: short (< 2*block_size: full attention), the boundary, just above it, and long
# lengths that are not multiples of block_size. Row 1 of each batch is padded.
LENGTHS = (5, 16, 17, 45, 64)


def model_class(family: str, head: str):
    if family == "bert":
        from lsg_converter.bert import modeling_lsg_bert as m

        return m.LSGBertConfig, {
            "base": m.LSGBertModel,
            "mlm": m.LSGBertForMaskedLM,
            "cls": m.LSGBertForSequenceClassification,
        }[head]
    from lsg_converter.roberta import modeling_lsg_roberta as m

    return m.LSGRobertaConfig, {
        "base": m.LSGRobertaModel,
        "mlm": m.LSGRobertaForMaskedLM,
        "cls": m.LSGRobertaForSequenceClassification,
    }[head]


def inputs(length: int, vocab: int, generator: torch.Generator) -> dict:
    ids = torch.randint(3, vocab, (2, length), generator=generator)
    mask = torch.ones(2, length, dtype=torch.long)
    valid = max(1, (2 * length) // 3)
    mask[1, valid:] = 0
    ids[1, valid:] = TINY["pad_token_id"]
    types = torch.zeros(2, length, dtype=torch.long)
    types[:, length // 2 :] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def main(out_dir: Path) -> None:
    torch.use_deterministic_algorithms(True)
    for index, (name, (family, head, overrides)) in enumerate(CASES.items()):
        config_cls, cls = model_class(family, head)
        settings = {**TINY, **overrides}
        if family == "roberta":
            settings["type_vocab_size"] = 1
        config = config_cls(**settings)
        torch.manual_seed(index)
        model = cls(config).eval()
        # Random init leaves the global embeddings and LayerNorms near their defaults: perturb every
        # parameter so that the comparison exercises all of them.
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn_like(param) * 0.05)
        case_dir = out_dir / name
        model.save_pretrained(case_dir / "model", safe_serialization=True)
        generator = torch.Generator().manual_seed(100 + index)
        records = []
        for length in LENGTHS:
            feed = inputs(length, config.vocab_size, generator)
            if family == "roberta":
                feed.pop("token_type_ids")
            torch.manual_seed(LSH_SEED)
            with torch.no_grad():
                out = model(**feed)
            outputs = {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}
            records.append({"inputs": feed, "outputs": outputs})
        torch.save(
            {"family": family, "head": head, "lsh_seed": LSH_SEED, "records": records}, case_dir / "reference.pt"
        )
        print(name, json.dumps({k: list(v.shape) for k, v in records[-1]["outputs"].items()}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
