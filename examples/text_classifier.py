"""A transformer-sized text classifier: token ids + attention mask -> class logits, the shape of a
small BERT (vocabulary 30,522, 4 encoder layers, hidden 256, 4 heads, feed-forward 1,024: 11.2 M
parameters, 45 MB in FP32), dynamic batch and sequence. Weights are seeded (a real project loads
its fine-tuned checkpoint here). Pure PyTorch, nothing downloaded.

    onnxtax export examples/text_classifier.py:build -o out/text.onnx \\
        --input 'input_ids:[batch,seq]:int64' --input 'attention_mask:[batch,seq]:int64' --dim seq=64
    onnxtax serve-bench examples/text_classifier.py:build out/text.onnx --dim seq=64 \\
        --range input_ids=0:30522 --range attention_mask=1:2
"""

import torch
from torch import nn

VOCAB = 30522


class TextClassifier(nn.Module):
    def __init__(self, vocab: int = VOCAB, dim: int = 256, layers: int = 4, heads: int = 4, ff: int = 1024,
                 classes: int = 3, max_len: int = 512):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.position = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim)
        layer = nn.TransformerEncoderLayer(dim, heads, ff, dropout=0.0, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        hidden = self.norm(self.embed(input_ids) + self.position(positions))
        hidden = self.encoder(hidden, src_key_padding_mask=attention_mask == 0)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # mean over the real tokens
        return self.head(pooled)


def build() -> TextClassifier:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return TextClassifier().eval()
