"""A tiny randomly initialised BERT sentence-transformer built offline, so tests train in seconds."""

from __future__ import annotations

from pathlib import Path

# Enough words for the test sentences; anything else maps to [UNK] or to single letters.
WORDS = """
a an the of to in on for with and or is are was be can do does how what why when where which who
i you my your we it this that best way learn python java rust code program programming language
cook pasta rice bread bake cake recipe food eat dinner make fix car engine bike repair travel
visit paris london city trip cheap flight hotel book buy sell phone laptop computer battery fast
slow good bad lose weight run gym sleep well health doctor money save invest stock market job
interview career write essay read novel movie music guitar play piano song sing dog cat pet train
garden grow tomato plant water flower weather rain snow summer winter sun moon star space planet
""".split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny_model(path: Path) -> Path:
    """Build and save a 32-dim, 2-layer BERT wrapped as Transformer + mean Pooling + Normalize.

    Args:
        path: Directory to create (the SentenceTransformer is saved directly in it).

    Returns:
        `path`, loadable with SentenceTransformer(str(path)).
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = Path(path)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    tokens = SPECIAL + list(dict.fromkeys(letters + ["##" + ch for ch in letters] + WORDS + list("?.,!'")))
    vocab = {token: i for i, token in enumerate(tokens)}
    tok = Tokenizer(WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    hf_tokenizer = BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    backbone_dir = path / "_backbone"
    BertModel(config).save_pretrained(backbone_dir)
    hf_tokenizer.save_pretrained(backbone_dir)
    transformer = Transformer(str(backbone_dir), max_seq_length=64)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")
    model.save(str(path), create_model_card=False)
    for item in sorted(backbone_dir.rglob("*"), reverse=True):
        item.unlink() if item.is_file() else item.rmdir()
    backbone_dir.rmdir()
    return path
