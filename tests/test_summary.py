"""Behaviour tests for gluonft.summary: exact counts, shapes, trainability, side effects, errors."""
import json

import mxnet as mx
import numpy as np
import pytest
from gluoncv.model_zoo import get_model
from mxnet import autograd, gluon
from mxnet.gluon import nn

from gluonft.summary import LayerRow, Summary, summary


def _zoo(name, classes=10):
    net = get_model(name, classes=classes)
    net.initialize()
    return net


def _true_total(net):
    # Independent count: every distinct Parameter object once (shared ones share the object).
    unique = {id(p): p for p in net.collect_params().values()}
    return sum(p.data().size for p in unique.values())


def _all_blocks(net):
    out = [net]
    for child in net._children.values():
        out += _all_blocks(child)
    return out


def _snapshot(net):
    return {name: p.data().asnumpy().copy() for name, p in net.collect_params().items()}


def _tiny_cnn(kernel=3, in_channels=0):
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, kernel, in_channels=in_channels), nn.BatchNorm(), nn.Activation("relu"),
            nn.GlobalAvgPool2D(), nn.Dense(5))
    net.initialize()
    return net


# ---------------------------------------------------------------- counts


def test_totals_match_collect_params_for_cifar_resnet20():
    net = _zoo("cifar_resnet20_v1")
    s = summary(net, image_size=32)

    expected = _true_total(net)
    assert s.total_params == expected
    # GluonCV 0.10.5 cifar_resnet20_v1 with 10 classes, BatchNorm running stats included.
    assert expected == 274_042
    assert sum(r.params for r in s.rows) == s.total_params
    trainable = sum(p.data().size for p in net.collect_params().values() if p.grad_req != "null")
    assert s.trainable_params == trainable == sum(r.trainable for r in s.rows)
    assert s.non_trainable_params == s.total_params - s.trainable_params > 0
    table_lines = s.to_table().splitlines()
    assert f"Total params: {expected:,}" in table_lines
    assert f"Trainable params: {trainable:,}" in table_lines
    assert f"Non-trainable params: {expected - trainable:,}" in table_lines


def test_rows_are_leaves_named_by_structural_path_in_execution_order():
    net = _zoo("cifar_resnet20_v1")
    s = summary(net, image_size=32)

    leaves = [b for b in _all_blocks(net) if not b._children]
    assert len(s.rows) == len(leaves)
    assert all(isinstance(r, LayerRow) for r in s.rows)
    assert (s.rows[0].name, s.rows[0].type) == ("features.0", "Conv2D")
    assert (s.rows[-1].name, s.rows[-1].type) == ("output", "Dense")
    # Names are the save_parameters() paths, not the auto prefixes like cifarresnetv10_conv0.
    structural = net._collect_params_with_prefix()
    with_params = {r.name for r in s.rows if r.params}
    assert with_params == {k.rsplit(".", 1)[0] for k in structural}
    for r in s.rows:
        own = [v for k, v in structural.items() if k.rsplit(".", 1)[0] == r.name]
        assert r.params == sum(p.data().size for p in own)


def test_rows_follow_execution_not_registration_order():
    class Reversed(nn.HybridBlock):
        def __init__(self):
            super().__init__()
            self.first = nn.Dense(3)
            self.second = nn.Dense(4)

        def hybrid_forward(self, F, x):
            return self.first(self.second(x))

    net = Reversed()
    net.initialize()
    s = summary(net, image_size=2)
    assert [r.name for r in s.rows] == ["second", "first"]
    assert [r.output_shape for r in s.rows] == [(1, 4), (1, 3)]


def test_plain_block_wrapper_with_features_and_output():
    class Wrapper(gluon.Block):  # not hybridizable itself, like a user's fine-tuning wrapper
        def __init__(self, features):
            super().__init__()
            self.features = features
            self.output = nn.Dense(3)

        def forward(self, x):
            return self.output(self.features(x))

    net = Wrapper(_zoo("cifar_resnet20_v1").features)
    net.output.initialize()
    net.hybridize()  # hybridizes the HybridBlock children only
    s = summary(net, image_size=32)
    assert (s.rows[0].name, s.rows[-1].name) == ("features.0", "output")
    assert s.output_shape == (1, 3)
    assert s.total_params == _true_total(net) == sum(r.params for r in s.rows)
    assert net.features._active and net.output._active


def test_mobilenet_totals_and_output_shape():
    net = _zoo("mobilenet0.25")
    s = summary(net, image_size=64)
    assert s.total_params == _true_total(net) == sum(r.params for r in s.rows)
    assert s.rows[-1].output_shape == s.output_shape == (1, 10)
    assert s.input_shape == (1, 3, 64, 64)


def test_shared_parameters_are_counted_once():
    net = nn.HybridSequential()
    shared = nn.Dense(6, in_units=6)
    net.add(nn.Dense(6, in_units=3), shared, nn.Dense(6, in_units=6, params=shared.params))
    net.initialize()
    s = summary(net, image_size=1)  # a 1x1 RGB image flattens to 3 features

    assert s.total_params == _true_total(net) == (3 * 6 + 6) + (6 * 6 + 6)
    assert [r.params for r in s.rows] == [24, 42, 0]


def test_non_leaf_block_owning_parameters_gets_a_row():
    class Scaled(nn.HybridBlock):
        def __init__(self):
            super().__init__()
            self.scale = self.params.get("scale", shape=(1,), init=mx.init.One())
            self.body = nn.Dense(2)

        def hybrid_forward(self, F, x, scale):
            return F.broadcast_mul(self.body(x), scale)

    net = Scaled()
    net.initialize()
    s = summary(net, image_size=2)
    assert [(r.name, r.type, r.params) for r in s.rows] == [("body", "Dense", 12 * 2 + 2),
                                                           ("", "Scaled", 1)]
    assert s.total_params == _true_total(net) == 27
    assert "<root> (Scaled)" in s.to_table()


def test_block_that_never_runs_is_listed_and_counted():
    class WithUnusedHead(nn.HybridBlock):
        def __init__(self):
            super().__init__()
            self.body = nn.Dense(2)
            self.aux = nn.Dense(3, in_units=7)  # never called in forward

        def hybrid_forward(self, F, x):
            return self.body(x)

    net = WithUnusedHead()
    net.initialize()
    s = summary(net, image_size=2)
    assert [r.name for r in s.rows] == ["body", "aux"]
    assert s.rows[1].output_shape is None and s.rows[1].params == 7 * 3 + 3
    assert s.total_params == _true_total(net)
    assert "(not run)" in s.to_table()


def test_block_that_never_runs_with_unknown_shape_fails_clearly():
    class WithDeferredUnused(nn.HybridBlock):
        def __init__(self):
            super().__init__()
            self.body = nn.Dense(2)
            self.aux = nn.Dense(3)  # in_units unknown and never inferred

        def hybrid_forward(self, F, x):
            return self.body(x)

    net = WithDeferredUnused()
    net.initialize()
    with pytest.raises(ValueError, match=r"unknown shape.*aux\.weight"):
        summary(net, image_size=2)


def test_deferred_initialisation_is_resolved_by_the_forward():
    net = _tiny_cnn()  # in_channels and in_units unknown until the first forward
    assert any(0 in p.shape for p in net.collect_params().values())
    s = summary(net, image_size=8)
    assert s.total_params == _true_total(net) == (3 * 9 * 4 + 4) + 4 * 4 + (4 * 5 + 5)


# ---------------------------------------------------------------- shapes


def test_resnet18_conv_and_output_shapes_follow_stride_arithmetic():
    net = _zoo("resnet18_v1")
    s = summary(net, image_size=64)
    by_name = {r.name: r for r in s.rows}
    # 7x7 stride-2 conv: 64 -> 32; 3x3 stride-2 max pool: 32 -> 16; stages halve 16 -> 2.
    assert by_name["features.0"].output_shape == (1, 64, 32, 32)
    assert by_name["features.3"].output_shape == (1, 64, 16, 16)
    assert by_name["features.7.1.body.3"].output_shape == (1, 512, 2, 2)
    assert s.rows[-1].output_shape == s.output_shape == (1, 10)
    assert s.total_params == _true_total(net)


def test_batch_size_appears_in_every_shape():
    s = summary(_zoo("cifar_resnet20_v1"), image_size=16, batch_size=3)
    assert s.input_shape == (3, 3, 16, 16)
    assert all(r.output_shape[0] == 3 for r in s.rows)
    assert s.output_shape == (3, 10)


# ---------------------------------------------------------------- trainability


def test_trainable_counts_respect_grad_req():
    net = _zoo("cifar_resnet20_v1")
    summary(net, image_size=32)  # finish deferred init so that shapes are known below
    net.features.collect_params().setattr("grad_req", "null")
    s = summary(net, image_size=32)

    head = sum(p.data().size for p in net.output.collect_params().values())
    assert head == 64 * 10 + 10
    assert s.trainable_params == head
    assert s.non_trainable_params == s.total_params - head
    assert [r.name for r in s.rows if r.trainable] == ["output"]


# ---------------------------------------------------------------- side effects


@pytest.mark.parametrize("hybridize", [False, True])
def test_parameters_and_running_stats_are_unchanged(hybridize):
    net = _zoo("cifar_resnet20_v1")
    if hybridize:
        net.hybridize()
    net(mx.nd.zeros((1, 3, 32, 32)))  # finish deferred init
    before = _snapshot(net)
    # Even inside record()+train_mode: summary() must neither use batch statistics nor
    # record a graph whose backward would update the running statistics.
    with autograd.record(train_mode=True):
        summary(net, image_size=32)
    after = _snapshot(net)
    assert before.keys() == after.keys()
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)

    # The check can fail: in MXNet 1.x the backward of a recorded training-mode forward moves
    # the running variance (zero input: batch variance 0, so 1 -> 0.9).
    with autograd.record(train_mode=True):
        out = net(mx.nd.zeros((1, 3, 32, 32)))
    out.backward()
    moved = _snapshot(net)
    assert any(not np.array_equal(before[k], moved[k]) for k in before if "running_var" in k)


def test_hooks_are_removed():
    net = _zoo("cifar_resnet20_v1")
    summary(net, image_size=32)
    assert all(not b._forward_hooks for b in _all_blocks(net))


def test_hybridized_net_stays_hybridized_with_its_flags_and_cached_graph():
    net = _zoo("cifar_resnet20_v1")
    net.hybridize(static_alloc=True, static_shape=True)
    x = mx.nd.zeros((1, 3, 32, 32))
    net(x)
    cached_op, flags = net._cached_op, list(net._flags)
    assert cached_op is not None

    s = summary(net, image_size=32)

    assert len(s.rows) == len([b for b in _all_blocks(net) if not b._children])
    assert all(b._active for b in _all_blocks(net))
    assert net._flags == flags
    assert net._cached_op is cached_op  # not cleared, so no recompilation
    net(x)
    assert net._cached_op is cached_op


def test_hybridized_before_first_forward_builds_its_graph_afterwards():
    net = _zoo("cifar_resnet20_v1")
    net.hybridize()
    summary(net, image_size=32)
    assert net._active and net._cached_op is None
    net(mx.nd.zeros((1, 3, 32, 32)))
    assert net._cached_op is not None


def test_partially_hybridized_net_is_restored_block_by_block():
    net = _zoo("cifar_resnet20_v1")
    net.features.hybridize()
    summary(net, image_size=32)
    assert not net._active and not net.output._active
    assert all(b._active for b in _all_blocks(net.features))


# ---------------------------------------------------------------- errors


def test_too_small_image_on_zoo_net_raises_value_error_naming_size_and_net():
    net = _zoo("alexnet")  # 11x11 stride-4 conv and 3x3 pools: 16 px dies at the second pool
    with pytest.raises(ValueError, match=r"AlexNet.*image_size=16.*too small") as info:
        summary(net, image_size=16)
    assert info.value.__cause__ is not None


def test_too_small_image_restores_hooks_and_hybridization():
    net = _tiny_cnn(kernel=5, in_channels=3)
    net.hybridize()
    with pytest.raises(ValueError, match=r"HybridSequential.*image_size=2.*too small") as info:
        summary(net, image_size=2)
    assert isinstance(info.value.__cause__, mx.base.MXNetError)
    assert all(b._active and not b._forward_hooks for b in _all_blocks(net))
    assert summary(net, image_size=5).output_shape == (1, 5)


def test_uninitialised_net_raises_clear_error():
    net = get_model("cifar_resnet20_v1", classes=10)
    with pytest.raises(RuntimeError, match=r"not initialised.*features\.0\.weight.*initialize"):
        summary(net, image_size=32)


def test_uninitialised_new_head_is_named():
    net = _zoo("cifar_resnet20_v1")
    with net.name_scope():
        net.output = nn.Dense(3)
    with pytest.raises(RuntimeError, match=r"2 of .* not initialised: output\.weight, output\.b"):
        summary(net, image_size=32)


@pytest.mark.parametrize("bad", [0, -1, 3.5, "32", True, None])
def test_image_size_is_validated(bad):
    with pytest.raises(ValueError, match=f"image_size must be an int >= 1, got {bad!r}"):
        summary(_tiny_cnn(), image_size=bad)


@pytest.mark.parametrize("bad", [0, 2.0])
def test_batch_size_is_validated(bad):
    with pytest.raises(ValueError, match=f"batch_size must be an int >= 1, got {bad!r}"):
        summary(_tiny_cnn(), image_size=8, batch_size=bad)


def test_net_and_ctx_are_validated():
    with pytest.raises(TypeError, match="gluon.Block, got str"):
        summary("resnet18_v1", image_size=8)
    with pytest.raises(ValueError, match="single mxnet.Context"):
        summary(_tiny_cnn(), image_size=8, ctx="cpu")
    with pytest.raises(ValueError, match=r"ctx=cpu\(1\) but parameters .* live on cpu\(0\)"):
        summary(_tiny_cnn(), image_size=8, ctx=mx.cpu(1))
    assert summary(_tiny_cnn(), image_size=8, ctx=mx.cpu(0)).output_shape == (1, 5)


# ---------------------------------------------------------------- rendering


def test_to_dict_is_json_round_trippable():
    s = summary(_zoo("cifar_resnet20_v1"), image_size=32)
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["total_params"] == s.total_params
    assert d["input_shape"] == [1, 3, 32, 32] and d["output_shape"] == [1, 10]
    assert d["rows"][0] == {"name": "features.0", "type": "Conv2D",
                            "output_shape": [1, 16, 32, 32], "params": 432, "trainable": 432}


def test_to_table_truncates_to_first_and_last_rows():
    s = summary(_zoo("cifar_resnet20_v1"), image_size=32)
    assert isinstance(s, Summary) and str(s) == s.to_table()
    full = s.to_table().splitlines()
    assert sum(line.startswith("features.") for line in full) == len(s.rows) - 1

    short = s.to_table(max_rows=5).splitlines()
    assert len(short) == len(full) - len(s.rows) + 5 + 1
    assert f"... {len(s.rows) - 5} more rows ..." in short
    shown = [line.split(" ")[0] for line in short if line.startswith(("features.", "output"))]
    assert shown == [r.name for r in s.rows[:3]] + [r.name for r in s.rows[-2:]]
    # Same column layout as the full table.
    assert short[2] == full[2] and short[-4] == full[-4]

    assert s.to_table(max_rows=len(s.rows)) == s.to_table()
    none_shown = s.to_table(max_rows=0)
    assert f"... {len(s.rows)} more rows ..." in none_shown and "features.0 " not in none_shown
    with pytest.raises(ValueError, match=r"max_rows must be None or an int >= 0, got -1"):
        s.to_table(max_rows=-1)


def test_summary_is_frozen():
    s = summary(_tiny_cnn(), image_size=8)
    with pytest.raises(Exception):
        s.total_params = 0
    with pytest.raises(Exception):
        s.rows[0].params = 0
