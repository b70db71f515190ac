"""Export-time rewrite that keeps a channels-first flatten from becoming a TRANSPOSE in TFLite.

onnx2tf runs the graph in NHWC; a PyTorch `flatten` of an [N, C, H, W] tensor into a Linear needs the
channels-first element order, so onnx2tf inserts a TRANSPOSE before the RESHAPE. The same arithmetic as a Conv2d
whose kernel covers the whole H x W map (the Linear's weight reshaped to [out, C, H, W]) followed by a flatten of an
[N, out, 1, 1] tensor has no order to preserve, so no TRANSPOSE is needed. Exact, for any model torch.fx traces;
models it cannot trace are exported unchanged.
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
