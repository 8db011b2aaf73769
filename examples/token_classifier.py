"""A token classifier (NER-style): int64 token ids + attention mask -> per-token tag
logits, dynamic batch and sequence. `batch` and `seq` are shared by both inputs.

    onnxtax export examples/token_classifier.py:build -o out/tagger.onnx \\
        --input 'input_ids:[batch,seq]:int64' --input 'attention_mask:[batch,seq]:int64'
"""

import torch
from torch import nn

VOCAB = 1000


class TokenClassifier(nn.Module):
    def __init__(self, vocab: int = VOCAB, dim: int = 32, tags: int = 9):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.position = nn.Embedding(128, dim)
        self.encoder = nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=64, batch_first=True, dropout=0.1)
        self.tagger = nn.Linear(dim, tags)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        hidden = self.embed(input_ids) + self.position(positions)
        hidden = hidden * attention_mask.unsqueeze(-1).to(hidden.dtype)
        return self.tagger(self.encoder(hidden))


def build() -> TokenClassifier:
    """A zero-argument factory: onnxtax accepts these as well as classes and instances."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return TokenClassifier()
