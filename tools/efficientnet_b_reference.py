"""Reference logits of efficientnet-pytorch's EfficientNet-B0..B3, for tests/test_efficientnet_b.py.

torch is not a dependency of gluonft or of its tests: this script runs once, by hand, and
writes the small fixture ``tests/fixtures/efficientnet_b_reference.npz``: for each of b0..b3
the logits of ``EfficientNet.from_name`` (efficientnet-pytorch 0.7.1, nothing downloaded) on
the 8 real photos of ``../shared/data/dogcat``, with random weights, and what produced them.

The weights are not stored (B3 alone would be 48 MB): `random_state` draws every array of the
reference's state dict from one seeded numpy generator, in the reference's own parameter order
and shapes, and the test draws the same arrays again for gluonft's net. BatchNorm statistics
are drawn too (not left at 0 / 1), so the test also sees the BatchNorm layers.

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.13.0 numpy efficientnet-pytorch==0.7.1
    .venv/bin/python tools/efficientnet_b_reference.py --torch-python /tmp/torchenv/bin/python
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from efficientnet_reference import decoded, input_sha1, photos  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "efficientnet_b_reference.npz"
VARIANTS = ("efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3")
SEED = 20261204
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # the reference's README transform


def random_state(names_and_shapes, seed: int = SEED) -> dict:
    """{name: float32 array} for the (name, shape) pairs, in their order, from one generator:
    conv and dense weights N(0, 1/fan_in), biases N(0, 0.1), BatchNorm gamma U(0.5, 1.5),
    beta N(0, 0.1), running mean N(0, 0.1), running variance U(0.5, 1.5)."""
    rng = np.random.RandomState(seed)
    out = {}
    for name, shape in names_and_shapes:
        shape = tuple(int(s) for s in shape)
        if name.endswith("running_var") or (name.endswith(".weight") and len(shape) == 1):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith("running_mean") or name.endswith(".bias"):
            value = rng.normal(0, 0.1, shape)
        else:
            value = rng.normal(0, 1 / np.sqrt(np.prod(shape[1:])), shape)
        out[name] = value.astype(np.float32)
    return out


TORCH_PART = r'''
import json, sys
import numpy as np, torch
sys.path.insert(0, sys.argv[3])
from efficientnet_b_reference import random_state, SEED, MEAN, STD
from efficientnet_pytorch import EfficientNet
job = json.load(open(sys.argv[1]))
out, params = {}, {}
for name, entry in job.items():
    net = EfficientNet.from_name(name.replace("_", "-"))
    shapes = [(k, v.shape) for k, v in net.state_dict().items()
              if not k.endswith("num_batches_tracked")]
    state = random_state(shapes, SEED)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    net.eval()
    x = np.load(entry["images"]).astype(np.float32) / 255.0
    x = (x - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        out[name] = net(x).numpy().tolist()
    params[name] = int(sum(p.numel() for p in net.parameters()))
    out[name + "_order"] = [k for k, _ in shapes]
import efficientnet_pytorch
json.dump({"logits": out, "params": params, "torch": torch.__version__,
           "numpy": np.__version__, "efficientnet_pytorch": efficientnet_pytorch.__version__},
          open(sys.argv[2], "w"))
'''


def write_fixture(torch_python: str) -> None:
    sys.path.insert(0, str(ROOT))
    from gluonft.efficientnet_b import B_VARIANTS
    folder, files = photos()
    meta = {"photos": [p.relative_to(folder).as_posix() for p in files], "seed": SEED,
            "normalisation": "ImageNet mean/std on RGB / 255, NCHW",
            "decoding": "gluonft.datasets.load_images(fit='crop', size=native)"}
    arrays = {}
    with tempfile.TemporaryDirectory() as tmp:
        job = {}
        for name in VARIANTS:
            images = decoded(B_VARIANTS[name][2])
            path = os.path.join(tmp, f"{name}.npy")
            np.save(path, images)
            job[name] = {"images": path}
            meta[f"{name}_input_sha1"] = input_sha1(images)
            meta[f"{name}_side"] = B_VARIANTS[name][2]
        json.dump(job, open(os.path.join(tmp, "job.json"), "w"))
        script = os.path.join(tmp, "torch_part.py")
        Path(script).write_text(TORCH_PART)
        subprocess.run([torch_python, script, os.path.join(tmp, "job.json"),
                        os.path.join(tmp, "out.json"), str(ROOT / "tools")], check=True)
        result = json.load(open(os.path.join(tmp, "out.json")))
    for name in VARIANTS:
        arrays[name] = np.asarray(result["logits"][name], np.float32)
        meta[f"{name}_order"] = result["logits"][name + "_order"]
        meta[f"{name}_params"] = result["params"][name]
    meta.update(torch=result["torch"], efficientnet_pytorch=result["efficientnet_pytorch"])
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(FIXTURE, meta=json.dumps(meta), **arrays)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes); parameters: "
          + ", ".join(f"{n} {meta[n + '_params']:,}" for n in VARIANTS))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--torch-python", required=True,
                   help="a Python with torch and efficientnet-pytorch 0.7.1")
    write_fixture(p.parse_args().torch_python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
