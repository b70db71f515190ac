"""hf-wav2vec2 and hf-hubert: Hugging Face's Wav2Vec2 / HuBERT transformer encoders, built from a config (nothing
downloaded) over log-mel frames, PyTorch only, for the tasks "phones" (per-frame logits, CTC) and "keywords" (clip
logits). Same input, output and head as speech-encoder, with the encoder stack written by transformers.

Input: log-mel [N, 40, T] (NCW, axes "FT"). Output: "phones" logits [N, T // 2, 40] ("TK"); "keywords" logits
[N, 12] ("K"). Logits, no softmax.

    front_end   Conv1d(n_mels, d, kernel 2, stride 2): one d-dim frame every 20 ms
    encoder     transformers' Wav2Vec2Encoder / HubertEncoder (post-LN, as HuBERT base), fed [N, T // 2, d]:
                pos_conv_embed (grouped conv positional embedding), layer_norm, dropout, then encoder.layers.{i}
    head        Linear(d, n_classes) per frame ("phones"), or on the mean over time ("keywords")

`model.hidden_states(x)` -> the layers + 1 hidden states [N, T // 2, d]: index 0 the state entering layer 1 (front
end + positional embedding + encoder.layer_norm), index i the output of encoder.layers.{i-1}. It is what
transformers' own `output_hidden_states=True` gives on Wav2Vec2Model / HubertModel: in transformers 5 the encoder
module alone ignores that flag (hidden states are captured by hooks on the encoder layers, index 0 being the first
layer's input), so it is collected here the same way.

Config choices that make the encoder export to ONNX and on through onnx2tf to LiteRT:
- hidden_act and feat_extract_activation (the positional conv's activation) "gelu_pytorch_tanh", the tanh
  approximation (torch's gelu(approximate="tanh")): exact GELU becomes a Flex Erf op LiteRT cannot run.
- attention implementation "eager" (matmul + softmax): SDPA adds IsNaN / Where to the graph.
- the positional conv's weight-norm parametrisation removed right after building, so its weight is one plain tensor.
- do_stable_layer_norm False (post-LN); layerdrop always 0.0, so the layers that run are the layers in the list.
The encoder is built as a module, not a PreTrainedModel, so transformers' _init_weights does not run: every layer
starts from PyTorch's default initialisation.

Parameters: the same count as a speech-encoder of the same sizes (pos_kernel = conv_pos, pos_groups =
conv_pos_groups), see `param_count`; with the defaults (12 x 192, 4 heads, FFN 768, conv_pos 16 in 16 groups)
"phones" 5,399,080 and "keywords" 5,393,676.
"""

from __future__ import annotations

from typing import Any

from edgeprune.errors import EdgepruneError
from edgeprune.models.registry import ModelEntry, builder, register_model

KINDS = {"hf-wav2vec2": "wav2vec2", "hf-hubert": "hubert"}
DEFAULTS = {"layers": 12, "dim": 192, "heads": 4, "ffn": 768, "dropout": 0.1, "attention_dropout": 0.1,
            "conv_pos": 16, "conv_pos_groups": 16}
HEADS = ("frames", "clip")
GELU_TANH = "gelu_pytorch_tanh"


def _task_args(task) -> dict:
    feature = task.inputs[0]
    return {"n_mels": feature.shape[feature.axes.index("F")], "n_classes": task.n_classes,
            "head": "frames" if task.output.axes == "TK" else "clip"}


for _name, _kind in KINDS.items():
    # output_axes is left to the task's ("TK" for phones, "K" for keywords): one model, two heads.
    register_model(ModelEntry(
        _name, f"Hugging Face {'Wav2Vec2' if _kind == 'wav2vec2' else 'HuBERT'} post-LN transformer encoder (built "
               "from a config, eager attention, tanh GELU) on log-mel (20 ms frames; 12 x 192, 4 heads, FFN 768: "
               "5.4 M params), per-frame phone logits or keyword logits", DEFAULTS,
        tasks=("phones", "keywords"), task_args=_task_args,
        layouts={"torch": (("NCW", "FT"),)},
        # speech-encoder's settings: the same post-LN stack, which collapses to blank-only CTC output at Adam's
        # usual 1e-3 when trained from scratch (not measured separately on these builders).
        training={name: {"lr": 2e-4, "warmup_steps": 1000, "clip_norm": 5.0, **extra}
                  for name, extra in (("tiny", {}), ("quick", {"epochs": 10}), ("full", {}))}))


def param_count(layers: int = 12, dim: int = 192, heads: int = 4, ffn: int = 768, conv_pos: int = 16,
                conv_pos_groups: int = 16, n_mels: int = 40, n_classes: int = 40, **_) -> int:
    """Parameters of an hf-wav2vec2 / hf-hubert model: those of a speech-encoder of the same sizes."""
    from edgeprune.models.speech_encoder import param_count as speech_encoder_count

    return speech_encoder_count(layers, dim, heads, ffn, conv_pos, conv_pos_groups, n_mels, n_classes)


def _check(name, layers, dim, heads, ffn, dropout, attention_dropout, conv_pos, conv_pos_groups, head) -> None:
    if head not in HEADS:
        raise EdgepruneError(f"{name}: head '{head}'; expected one of {', '.join(HEADS)}")
    if min(dim, heads, ffn, conv_pos, conv_pos_groups) < 1 or layers < 0:
        raise EdgepruneError(f"{name}: dim, heads, ffn, conv_pos and conv_pos_groups must be positive, layers >= 0")
    if dim % heads or dim % conv_pos_groups:
        raise EdgepruneError(f"{name}: dim {dim} must be divisible by heads {heads} and conv_pos_groups "
                             f"{conv_pos_groups}")
    for what, p in (("dropout", dropout), ("attention_dropout", attention_dropout)):
        if not 0 <= p < 1:
            raise EdgepruneError(f"{name}: {what} {p} must be in [0, 1)")


def hf_config(kind: str, layers: int, dim: int, heads: int, ffn: int, dropout: float, attention_dropout: float,
              conv_pos: int, conv_pos_groups: int) -> Any:
    """The transformers config of the encoder ('wav2vec2' or 'hubert'), with the exportable choices set."""
    from transformers import HubertConfig, Wav2Vec2Config

    config_cls = Wav2Vec2Config if kind == "wav2vec2" else HubertConfig
    return config_cls(
        hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ffn,
        hidden_act=GELU_TANH, feat_extract_activation=GELU_TANH, hidden_dropout=dropout,
        activation_dropout=dropout, attention_dropout=attention_dropout, layerdrop=0.0,
        num_conv_pos_embeddings=conv_pos, num_conv_pos_embedding_groups=conv_pos_groups,
        do_stable_layer_norm=False, attn_implementation="eager")


def _build(name: str, layers, dim, heads, ffn, dropout, attention_dropout, conv_pos, conv_pos_groups, n_mels,
           n_classes, head):
    from torch import nn
    from torch.nn.utils import parametrize
    from transformers.models.hubert import modeling_hubert
    from transformers.models.wav2vec2 import modeling_wav2vec2

    _check(name, layers, dim, heads, ffn, dropout, attention_dropout, conv_pos, conv_pos_groups, head)
    kind = KINDS[name]
    config = hf_config(kind, layers, dim, heads, ffn, dropout, attention_dropout, conv_pos, conv_pos_groups)
    encoder_cls = modeling_wav2vec2.Wav2Vec2Encoder if kind == "wav2vec2" else modeling_hubert.HubertEncoder

    class HFSpeechEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head_kind = head
            self.front_end = nn.Conv1d(n_mels, dim, 2, stride=2)
            self.encoder = encoder_cls(config)
            # weight_g * weight_v / |weight_v| folded into one plain weight for export; checkpoints then name it
            # pos_conv_embed.conv.weight
            parametrize.remove_parametrizations(self.encoder.pos_conv_embed.conv, "weight")
            self.head = nn.Linear(dim, n_classes)

        def hidden_states(self, x):
            """The layers + 1 hidden states [N, T // 2, d] for log-mel x [N, n_mels, T]: index 0 the state entering
            layer 1, index i the output of layer i - 1 (as transformers captures them: hooks on the layers)."""
            states = []

            def record(module, args, output):
                if not states:
                    states.append(args[0])
                states.append(output)

            hooks = [layer.register_forward_hook(record) for layer in self.encoder.layers]
            try:
                last = self.encoder(self.front_end(x).transpose(1, 2)).last_hidden_state
            finally:
                for hook in hooks:
                    hook.remove()
            return states or [last]

        def forward(self, x):
            x = self.encoder(self.front_end(x).transpose(1, 2)).last_hidden_state
            if self.head_kind == "clip":
                x = x.mean(dim=1)
            return self.head(x)

    return HFSpeechEncoder()


@builder("hf-wav2vec2", "torch")
def build_wav2vec2(**args):
    return _build("hf-wav2vec2", **args)


@builder("hf-hubert", "torch")
def build_hubert(**args):
    return _build("hf-hubert", **args)
