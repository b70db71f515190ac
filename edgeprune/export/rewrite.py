"""Export-time rewrites of a PyTorch model for the TFLite path; both exact, both refused if the outputs change.

fold_flatten_linear keeps a channels-first flatten from becoming a TRANSPOSE in TFLite: onnx2tf runs the graph
in NHWC; a PyTorch `flatten` of an [N, C, H, W] tensor into a Linear needs the channels-first element order, so
onnx2tf inserts a TRANSPOSE before the RESHAPE. The same arithmetic as a Conv2d whose kernel covers the whole H x W
map (the Linear's weight reshaped to [out, C, H, W]) followed by a flatten of an [N, out, 1, 1] tensor has no order
to preserve, so no TRANSPOSE is needed. Exact, for any model torch.fx traces; models it cannot trace are exported
unchanged.

fold_one_channel_convs stacks the kernel rows of a conv over one input channel as channels (why, and what it buys:
edgeprune/export/keras_rewrite.py, which does the same for Keras).
"""

from __future__ import annotations


import torch


def fold_flatten_linear(model: torch.nn.Module, input_shapes: list[tuple[int, ...]]) -> tuple[torch.nn.Module, list[str]]:
    """(rewritten copy, names of the Linear layers turned into full-map convolutions); one shape per input."""
    import copy

    import torch.fx as fx
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        gm = fx.symbolic_trace(copy.deepcopy(model).eval())
        ShapeProp(gm).propagate(*[torch.zeros((1, *s)) for s in input_shapes])
    except Exception:  # noqa: BLE001 - untraceable: export as is
        return model, []
    modules = dict(gm.named_modules())
    done: list[str] = []
    for node in list(gm.graph.nodes):
        is_flatten = (node.op == "call_method" and node.target == "flatten") or \
                     (node.op == "call_function" and node.target is torch.flatten)
        if not is_flatten or len(node.users) != 1:
            continue
        src = node.args[0]
        meta = src.meta.get("tensor_meta") if isinstance(src, fx.Node) else None
        if meta is None or len(meta.shape) != 4:
            continue
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        if start != 1:
            continue
        user = next(iter(node.users))
        lin = modules.get(user.target) if user.op == "call_module" else None
        if not isinstance(lin, torch.nn.Linear) or meta.shape[2] * meta.shape[3] == 1:
            continue
        _, c, h, w = meta.shape
        conv = torch.nn.Conv2d(c, lin.out_features, (h, w), bias=lin.bias is not None)
        with torch.no_grad():
            conv.weight.copy_(lin.weight.reshape(lin.out_features, c, h, w))
            if lin.bias is not None:
                conv.bias.copy_(lin.bias)
        cname = f"{user.target.replace('.', '_')}_as_conv"
        gm.add_submodule(cname, conv)
        with gm.graph.inserting_after(user):
            conv_node = gm.graph.call_module(cname, (src,))
        with gm.graph.inserting_after(conv_node):
            flat = gm.graph.call_function(torch.flatten, (conv_node, 1))
        user.replace_all_uses_with(flat)
        gm.graph.erase_node(user)
        gm.graph.erase_node(node)
        done.append(user.target)
    if not done:
        return model, []
    gm.graph.lint()
    gm.recompile()
    gm.eval()
    with torch.no_grad():  # refuse a rewrite that changes the outputs
        x = [torch.randn((2, *s)) for s in input_shapes]
        if not torch.allclose(model.eval()(*x), gm(*x), atol=1e-4, rtol=1e-4):
            return model, []
    return gm, done


def foldable_conv(module: torch.nn.Module) -> bool:
    """A plain Conv2d (zero padding given as numbers, stride 1, no dilation or groups) over one input channel
    with more than one kernel row."""
    return (type(module) is torch.nn.Conv2d and module.in_channels == 1 and module.groups == 1
            and module.kernel_size[0] > 1 and tuple(module.stride) == (1, 1) and tuple(module.dilation) == (1, 1)
            and module.padding_mode == "zeros" and not isinstance(module.padding, str))


class RowFoldedConv2d(torch.nn.Module):
    """conv (foldable) as its kh row shifts of the input stacked as channels, then a (1, kw) conv over them."""

    def __init__(self, conv: torch.nn.Conv2d) -> None:
        super().__init__()
        kh, kw = conv.kernel_size
        self.kh, self.pad_rows = kh, conv.padding[0]
        self.rows = torch.nn.Conv2d(kh, conv.out_channels, (1, kw), padding=(0, conv.padding[1]),
                                    bias=conv.bias is not None)
        with torch.no_grad():  # [F, 1, kh, kw] -> [F, kh, 1, kw]: tap (i, j) becomes tap j of channel i
            self.rows.weight.copy_(conv.weight.reshape(conv.out_channels, kh, 1, kw))
            if conv.bias is not None:
                self.rows.bias.copy_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, _, w = x.shape
        x = torch.nn.functional.pad(x, (0, 0, self.pad_rows, self.pad_rows))
        rows = x.shape[2] - self.kh + 1
        # concatenated along the rows (contiguous copies), then the reshape makes each shift a channel; onnx2tf
        # writes it as one TRANSPOSE in NHWC (a concatenation along channels would interleave single values)
        stacked = torch.cat([x[:, :, i:i + rows] for i in range(self.kh)], dim=2)
        return self.rows(stacked.reshape(n, self.kh, rows, w))


def fold_one_channel_convs(model: torch.nn.Module,
                           input_shapes: list[tuple[int, ...]]) -> tuple[torch.nn.Module, list[str]]:
    """(copy with every foldable conv replaced by its RowFoldedConv2d, their names); the model itself when none
    folds or the copy's outputs differ on random inputs."""
    import copy

    names = [n for n, m in model.named_modules() if n and foldable_conv(m)]
    if not names:
        return model, []
    folded = copy.deepcopy(model).eval()
    for name in names:
        parent, _, leaf = name.rpartition(".")
        owner = folded.get_submodule(parent) if parent else folded
        setattr(owner, leaf, RowFoldedConv2d(getattr(owner, leaf)))
    with torch.no_grad():
        x = [torch.randn((2, *s)) for s in input_shapes]
        try:
            want, got = model.eval()(*x), folded(*x)
        except Exception:  # noqa: BLE001 - a conv called on something else than its declared input: leave it
            return model, []
        if want.shape != got.shape or not torch.allclose(want, got, atol=1e-5, rtol=1e-4):
            return model, []
    return folded, names
