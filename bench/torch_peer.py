"""The PyTorch side of `python -m bench.speed --peer torch`: the same nets, timed on request.

Runs in a process of its own (by default the same Python as gluonft: ``make torch`` installs
torch beside it), so that each framework's threads have the cores while it is timed. It imports
neither gluonft nor MXNet. It reads one JSON request per line on stdin and answers
one JSON line on stdout, so that the benchmark can interleave the two frameworks' measurements
figure by figure on a machine whose load changes:

    {"net": "resnet18_v1", "size": 64, "batch": 32, "mode": "train", "seconds": 3}
    -> {"images_per_s": 95.6, "params": 11181642, "threads": 2}

The architectures are written out here as GluonCV / gluonft build them (same layers, widths,
strides, paddings; the parameter counts are checked against MXNet's by the benchmark):
``resnet18_v1`` (ResNet-18 v1, 7x7 stem, max pool, BasicBlocks 64-512), ``mobilenet0.75``
(MobileNet v1 at width 0.75), ``efficientnet_lite0`` (as `gluonft.efficientnet`: symmetric
padding, ReLU6, BatchNorm eps 1e-3, no squeeze-excitation), ``efficientnet_b0``..``b3`` (the
reference, efficientnet-pytorch, when installed beside torch). Training mode is SGD with
momentum on cross-entropy, eager; forward is ``eval()`` under ``torch.inference_mode()``.
"""
import json
import os
import sys
import time

import torch
from torch import nn

CLASSES = 10


def _conv_bn(cin, cout, k, stride=1, groups=1, act=nn.ReLU, eps=1e-5):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout, eps=eps)]
    return layers + [act()] if act else layers


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(cin, cout, 3, stride),
                                  *_conv_bn(cout, cout, 3, act=None))
        self.down = (nn.Sequential(*_conv_bn(cin, cout, 1, stride, act=None))
                     if stride != 1 or cin != cout else None)

    def forward(self, x):
        return torch.relu(self.body(x) + (x if self.down is None else self.down(x)))


def resnet18_v1():
    layers = [*_conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for i, cout in enumerate((64, 128, 256, 512)):
        for j in range(2):
            layers.append(BasicBlock(cin, cout, 2 if i and not j else 1))
            cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, CLASSES))


def mobilenet_v1(width=0.75):
    # (pointwise output channels at width 1, depthwise stride) per depthwise-separable pair
    pairs = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 \
        + [(1024, 2), (1024, 1)]
    cin = int(32 * width)
    layers = _conv_bn(3, cin, 3, 2)
    for cout, stride in pairs:
        cout = int(cout * width)
        layers += _conv_bn(cin, cin, 3, stride, groups=cin) + _conv_bn(cin, cout, 1)
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, CLASSES))


class MBConv(nn.Module):
    def __init__(self, cin, cout, k, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = _conv_bn(cin, hidden, 1, act=nn.ReLU6, eps=1e-3) if expand != 1 else []
        layers += _conv_bn(hidden, hidden, k, stride, groups=hidden, act=nn.ReLU6, eps=1e-3)
        layers += _conv_bn(hidden, cout, 1, act=None, eps=1e-3)
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


def efficientnet_lite0():
    # lite0's stages: (repeats, kernel, stride, expand, input channels, output channels)
    stages = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
              (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
              (1, 3, 1, 6, 192, 320))
    layers = _conv_bn(3, 32, 3, 2, act=nn.ReLU6, eps=1e-3)
    for repeats, k, stride, expand, cin, cout in stages:
        for r in range(repeats):
            layers.append(MBConv(cin if r == 0 else cout, cout, k, stride if r == 0 else 1,
                                 expand))
    layers += _conv_bn(320, 1280, 1, act=nn.ReLU6, eps=1e-3)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(1280, CLASSES))


def efficientnet_b(variant):
    """EfficientNet-B as its reference builds it (efficientnet-pytorch, `pip install
    efficientnet-pytorch==0.7.1` beside torch), with its memory-efficient swish as in
    training there; the architecture gluonft.efficientnet_b matches to 1e-4 of the logits."""
    def build():
        try:
            from efficientnet_pytorch import EfficientNet
        except ImportError:
            raise ImportError("efficientnet_b* needs the reference beside torch: pip install "
                              "efficientnet-pytorch==0.7.1") from None
        return EfficientNet.from_name(f"efficientnet-b{variant}", num_classes=CLASSES)
    return build


NETS = {"resnet18_v1": resnet18_v1, "mobilenet0.75": mobilenet_v1,
        "efficientnet_lite0": efficientnet_lite0,
        **{f"efficientnet_b{v}": efficientnet_b(v) for v in range(4)}}


def images_per_s(net_name, size, batch, mode, seconds):
    torch.manual_seed(0)
    net = NETS[net_name]()
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, CLASSES, (batch,))
    if mode == "train":
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        loss_fn = nn.CrossEntropyLoss()

        def step():
            opt.zero_grad(set_to_none=True)
            loss_fn(net(x), y).backward()
            opt.step()
    else:
        net.eval()

        def step():
            with torch.inference_mode():
                net(x)
    for _ in range(2):  # warm up: oneDNN primitives, allocator
        step()
    count, begin = 0, time.perf_counter()
    while time.perf_counter() - begin < seconds:
        step()
        count += 1
    rate = count * batch / (time.perf_counter() - begin)
    params = sum(p.numel() for p in net.parameters())
    return {"images_per_s": rate, "params": params, "threads": torch.get_num_threads()}


def main():
    torch.set_num_threads(int(os.environ.get("PEER_THREADS") or os.cpu_count()))
    print(json.dumps({"ready": True, "torch": torch.__version__,
                      "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = images_per_s(request["net"], request["size"], request["batch"],
                                  request["mode"], request["seconds"])
        except Exception as error:  # reported to the benchmark, which names it
            answer = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
