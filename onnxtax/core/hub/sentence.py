"""The sentence-transformers pipeline of an `st:` folder, built without sentence-transformers:
the transformer, the pooling its `1_Pooling/config.json` names, and the L2 normalisation when
`modules.json` lists a Normalize module. The same arithmetic as sentence-transformers' Pooling
(masked mean, CLS, masked max, mean / sqrt(length), position-weighted mean, last token; several
modes concatenated in that order), written without in-place writes so both exporters trace it.
"""

from __future__ import annotations

from typing import Any

# sentence-transformers' Pooling config keys, in the order it concatenates them
MODES = (("cls", "pooling_mode_cls_token"), ("max", "pooling_mode_max_tokens"),
         ("mean", "pooling_mode_mean_tokens"), ("mean_sqrt_len", "pooling_mode_mean_sqrt_len_tokens"),
         ("weightedmean", "pooling_mode_weightedmean_tokens"), ("lasttoken", "pooling_mode_lasttoken"))


def pooling_modes(config: dict) -> list[str]:
    """The modes a pooling config turns on; `pooling_mode: "mean"` (newer configs) counts too; none: mean."""
    modes = [name for name, key in MODES if config.get(key)]
    named = config.get("pooling_mode")
    if isinstance(named, str) and named in dict(MODES) and named not in modes:
        modes.append(named)
    return modes or ["mean"]


def _module_class() -> type:
    import torch

    class SentencePipeline(torch.nn.Module):
        """transformer -> pooling -> (normalize): {"token_embeddings", "sentence_embedding"}."""

        def __init__(self, transformer: Any, pipeline: dict):
            super().__init__()
            self.transformer = transformer
            self.modes = list(pipeline.get("pooling") or ["mean"])
            self.normalize = bool(pipeline.get("normalize"))

        def forward(self, **inputs):
            out = self.transformer(**inputs, return_dict=True)
            tokens = out["last_hidden_state"]
            mask = inputs.get("attention_mask")
            if mask is None:
                mask = torch.ones(tokens.shape[:2], dtype=torch.int64, device=tokens.device)
            pooled = torch.cat([self.pool(mode, tokens, mask) for mode in self.modes], dim=1)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            return {"token_embeddings": tokens, "sentence_embedding": pooled}

        @staticmethod
        def pool(mode: str, tokens, mask):
            weights = mask.unsqueeze(-1).to(tokens.dtype)
            if mode == "cls":
                return tokens[:, 0]
            if mode == "max":
                return torch.where(weights == 0, torch.full_like(tokens, -1e9), tokens).max(dim=1).values
            if mode in ("mean", "mean_sqrt_len"):
                total = (tokens * weights).sum(dim=1)
                count = weights.sum(dim=1).clamp(min=1e-9)
                return total / (count if mode == "mean" else torch.sqrt(count))
            if mode == "weightedmean":
                position = torch.arange(1, tokens.shape[1] + 1, device=tokens.device, dtype=tokens.dtype)
                w = weights * position.view(1, -1, 1)
                return (tokens * w).sum(dim=1) / w.sum(dim=1).clamp(min=1e-9)
            if mode == "lasttoken":
                last = mask.to(torch.int64).sum(dim=1) - 1  # right padding: the last attended token
                index = last.clamp(min=0).view(-1, 1, 1).expand(-1, 1, tokens.shape[-1])
                return tokens.gather(1, index).squeeze(1)
            raise ValueError(f"unknown pooling mode {mode}")

    return SentencePipeline


def __getattr__(name: str) -> Any:
    if name == "SentencePipeline":  # a torch module class, made on first use (no torch at import)
        cls = _module_class()
        globals()[name] = cls
        return cls
    raise AttributeError(name)
