"""Bundle a GPU sweep's results for the trip back from the device machine (64 MiB at most).

Keeps every cell's config, metrics and summary; the adapters of the first `--adapter-seeds`
seeds (the subspace and amplification analyses need two seeds); for full fine-tuning only the
attention matrices of the first seed (spectra, intruders, Eckart–Young), with `--mlp` its MLP
matrices too (they double the size: mind the 64 MiB a device call brings back). Writes a .tar.gz split into 15 MiB parts.

Usage: python benchmarks/transport.py SWEEP_DIR OUT_PREFIX [--adapter-seeds 2] [--mlp]
"""

import argparse
import io
import json
import subprocess
import tarfile
from pathlib import Path

from safetensors.torch import load_file, save

from lowrank_lab.model.base import classify_module


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sweep", type=Path)
    ap.add_argument("out")
    ap.add_argument("--adapter-seeds", type=int, default=2)
    ap.add_argument("--mlp", action="store_true", help="keep full fine-tuning's MLP matrices too")
    args = ap.parse_args()
    root = args.sweep.parent
    tar_path = Path(f"{args.out}.tar.gz")
    with tarfile.open(tar_path, "w:gz") as tar:
        for path in sorted(args.sweep.rglob("*")):
            if not path.is_file() or "packs" in path.parts or path.name == ".lock":
                continue
            rel = path.relative_to(root)
            cell = path.parent if path.parent.parent.name == "cells" else path.parent.parent
            seed = json.loads((cell / "config.json").read_text())["train"]["seed"] if (cell / "config.json").exists() else 0
            if "adapter" in path.parts and seed >= args.adapter_seeds:
                continue
            if path.name == "weights.safetensors":
                if seed != 0:
                    continue
                kept = {k: v for k, v in load_file(path).items()
                        if k.endswith(".weight") and classify_module(k.removesuffix(".weight"), mlp=args.mlp)}
                data = save(kept)
                info = tarfile.TarInfo(str(rel))
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            tar.add(path, arcname=str(rel))
    subprocess.run(["split", "-b", "15M", "-d", str(tar_path), f"{tar_path}.part"], check=True)
    tar_path.unlink()


if __name__ == "__main__":
    main()
