"""speech-encoder: a MelHuBERT-style transformer encoder over log-mel frames, PyTorch only, for the tasks "phones"
(per-frame logits, CTC) and "keywords" (clip logits).

Input: log-mel [N, 40, T] (NCW, axes "FT"). Output: "phones" logits [N, T // 2, 40] ("TK": blank + 39 phones per
20 ms frame); "keywords" logits [N, 12] ("K"). Logits, no softmax (as every PyTorch twin).

    front_end        Conv1d(40, d, kernel 2, stride 2): two consecutive 10 ms frames stacked into one 80-d frame
                     every 20 ms and projected to d
    encoder.pos_conv Conv1d(d, d, pos_kernel, groups pos_groups, 'same' padding): convolutional positional
                     embedding; x = x + gelu_tanh(pos_conv(x))
    encoder.layer_norm, dropout
    encoder.layers.{i} (i = 0 .. layers-1), POST-LN:
        x = layer_norm(x + dropout(attention(x)))
        x = final_layer_norm(x + dropout(feed_forward(x)))
      attention: q_proj, k_proj, v_proj (d -> heads * head_dim), out_proj (heads * head_dim -> d); softmax(q k^T /
        sqrt(head_dim)) v written as matmul + softmax; `num_heads` and `head_dim` are attributes read at forward
        time, so heads are removed by slicing the projections' rows (q/k/v) and out_proj's columns and updating
        `num_heads`
      feed_forward: fc1 (d -> ffn), gelu_tanh, dropout, fc2 (ffn -> d)
    head             Linear(d, n_classes) per frame ("phones"), or on the mean over time ("keywords")

`model.hidden_states(x)` -> the layers + 1 hidden states [N, T // 2, d]: index 0 is the encoder input (front end
+ positional embedding + encoder.layer_norm), index i the output of encoder.layers.{i-1}.

No nn.MultiheadAttention / nn.TransformerEncoderLayer (no fused SDPA), GELU is the tanh approximation (exact GELU
becomes a Flex Erf op in TFLite): exports to ONNX at opset 17 and on through onnx2tf. The attention itself has no
padding mask: every frame of the fixed-length input is attended.

Size with the defaults (12 layers, d 192, 4 heads, FFN 768, pos_kernel 31, pos_groups 16), see `param_count`:
"phones" 5,433,640 parameters, "keywords" 5,428,236. Linear/conv MACs: 5.40 M per 20 ms output frame (12 layers x
442,368 + front end 15,360 + pos_conv 71,424 + head 7,680), i.e. 810.4 M per 3 s phones utterance (150 frames) and
269.8 M per 1 s keyword clip (50 frames); attention matmuls (2 T d per frame and layer) come on top, not counted.
Measured (torch.set_num_threads(2), train mode, forward + backward + Adam step, median of 10 on an otherwise idle
2-core machine): batch of 8 phones utterances [8, 40, 300] 0.41-0.48 s with the defaults (6 layers: 0.22 s), batch
of 8 keyword clips [8, 40, 100] 0.13-0.14 s (6 layers: 0.07 s); with other jobs on the cores, 3-10x that.
"""

from __future__ import annotations

from edgeprune.errors import EdgepruneError
from edgeprune.models.registry import ModelEntry, builder, register_model

NAME = "speech-encoder"
DEFAULTS = dict(layers=12, dim=192, heads=4, ffn=768, dropout=0.1, pos_kernel=31, pos_groups=16)
HEADS = ("frames", "clip")


def _task_args(task) -> dict:
    feature = task.inputs[0]
    return {"n_mels": feature.shape[feature.axes.index("F")], "n_classes": task.n_classes,
            "head": "frames" if task.output.axes == "TK" else "clip"}


# output_axes is left to the task's ("TK" for phones, "K" for keywords): one model, two heads.
register_model(ModelEntry(
    NAME, "MelHuBERT-style post-LN transformer encoder on log-mel (20 ms frames, conv positional embedding; "
          "12 x 192, 4 heads, FFN 768: 5.4 M params), per-frame phone logits or keyword logits", DEFAULTS,
    tasks=("phones", "keywords"), task_args=_task_args,
    layouts={"torch": (("NCW", "FT"),)},
    # Twelve post-LN layers trained from scratch collapse to blank-only CTC output at Adam's usual 1e-3 (and at
    # 5e-4 with a short warm-up); 2e-4 after a 1,000-step linear warm-up, clipped at norm 5, trains (measured on
    # the quick phones set: PER 0.63 after 5 epochs and falling).
    training={name: {"lr": 2e-4, "warmup_steps": 1000, "clip_norm": 5.0, **extra}
              for name, extra in (("tiny", {}), ("quick", {"epochs": 10}), ("full", {}))}))


def param_count(layers: int = 12, dim: int = 192, heads: int = 4, ffn: int = 768, pos_kernel: int = 31,
                pos_groups: int = 16, n_mels: int = 40, n_classes: int = 40, **_) -> int:
    """Parameters of a speech-encoder, computed from its definition."""
    d, a = dim, heads * (dim // heads)
    layer = 3 * (d * a + a) + a * d + d + 2 * d * ffn + ffn + d + 4 * d
    return (2 * n_mels * d + d) + (d * (d // pos_groups) * pos_kernel + d) + 2 * d + layers * layer \
        + d * n_classes + n_classes


def _check(layers, dim, heads, ffn, dropout, pos_kernel, pos_groups, head) -> None:
    if head not in HEADS:
        raise EdgepruneError(f"speech-encoder: head '{head}'; expected one of {', '.join(HEADS)}")
    if min(dim, heads, ffn, pos_kernel, pos_groups) < 1 or layers < 0:
        raise EdgepruneError("speech-encoder: dim, heads, ffn, pos_kernel and pos_groups must be positive, layers >= 0")
    if dim % heads or dim % pos_groups:
        raise EdgepruneError(f"speech-encoder: dim {dim} must be divisible by heads {heads} and pos_groups "
                             f"{pos_groups}")
    if not 0 <= dropout < 1:
        raise EdgepruneError(f"speech-encoder: dropout {dropout} must be in [0, 1)")


@builder(NAME, "torch")
def build_torch(layers, dim, heads, ffn, dropout, pos_kernel, pos_groups, n_mels, n_classes, head):
    import torch
    import torch.nn as nn

    _check(layers, dim, heads, ffn, dropout, pos_kernel, pos_groups, head)

    class Attention(nn.Module):
        """Multi-head self-attention as matmul + softmax; heads are read from the attributes at forward time."""

        def __init__(self) -> None:
            super().__init__()
            self.num_heads, self.head_dim = heads, dim // heads
            inner = self.num_heads * self.head_dim
            self.q_proj = nn.Linear(dim, inner)
            self.k_proj = nn.Linear(dim, inner)
            self.v_proj = nn.Linear(dim, inner)
            self.out_proj = nn.Linear(inner, dim)
            self.dropout = nn.Dropout(dropout)

        def forward(self, x):
            n, t, _ = x.shape
            h, hd = self.num_heads, self.head_dim

            def split(y):  # [N, T, h * hd] -> [N, h, T, hd]
                return y.reshape(n, t, h, hd).transpose(1, 2)

            q = split(self.q_proj(x) * hd ** -0.5)
            k, v = split(self.k_proj(x)), split(self.v_proj(x))
            probs = self.dropout(torch.softmax(torch.matmul(q, k.transpose(2, 3)), dim=-1))
            ctx = torch.matmul(probs, v).transpose(1, 2).reshape(n, t, h * hd)
            return self.out_proj(ctx)

    class FeedForward(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(dim, ffn)
            self.act = nn.GELU(approximate="tanh")
            self.dropout = nn.Dropout(dropout)
            self.fc2 = nn.Linear(ffn, dim)

        def forward(self, x):
            return self.fc2(self.dropout(self.act(self.fc1(x))))

    class EncoderLayer(nn.Module):
        """Post-LN transformer layer."""

        def __init__(self) -> None:
            super().__init__()
            self.attention = Attention()
            self.dropout = nn.Dropout(dropout)
            self.layer_norm = nn.LayerNorm(dim)
            self.feed_forward = FeedForward()
            self.final_layer_norm = nn.LayerNorm(dim)

        def forward(self, x):
            x = self.layer_norm(x + self.dropout(self.attention(x)))
            return self.final_layer_norm(x + self.dropout(self.feed_forward(x)))

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pos_conv = nn.Conv1d(dim, dim, pos_kernel, padding=pos_kernel // 2, groups=pos_groups)
            self.pos_act = nn.GELU(approximate="tanh")
            self.layer_norm = nn.LayerNorm(dim)
            self.dropout = nn.Dropout(dropout)
            self.layers = nn.ModuleList(EncoderLayer() for _ in range(layers))

        def forward(self, x, collect: bool = False):
            """[N, d, T'] -> [N, T', d] (the last layer's output), or every hidden state when `collect`."""
            pos = self.pos_conv(x)
            if pos_kernel % 2 == 0:  # an even kernel pads one frame too many (as HuBERT's SamePad): drop it
                pos = pos[:, :, :-1]
            x = self.dropout(self.layer_norm((x + self.pos_act(pos)).transpose(1, 2)))
            states = [x]
            for layer in self.layers:
                x = layer(x)
                states.append(x)
            return states if collect else x

    class SpeechEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head_kind = head
            self.front_end = nn.Conv1d(n_mels, dim, 2, stride=2)
            self.encoder = Encoder()
            self.head = nn.Linear(dim, n_classes)

        def hidden_states(self, x):
            """The layers + 1 hidden states [N, T // 2, d] for log-mel x [N, n_mels, T]: index 0 the encoder input
            (after front end, positional embedding and encoder.layer_norm), index i the output of layer i - 1."""
            return self.encoder(self.front_end(x), collect=True)

        def forward(self, x):
            x = self.encoder(self.front_end(x))
            if self.head_kind == "clip":
                x = x.mean(dim=1)
            return self.head(x)

    model = SpeechEncoder()
    for module in model.modules():  # BERT-style initialisation, as HuBERT's fairseq code (init_bert_params)
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.02)
            nn.init.zeros_(module.bias)
    return model
