"""Tokenizers built from in-memory vocabularies, so tiny repos need no hub download.

transformers 5.x tokenizers are ``tokenizers``-backed classes that accept a vocabulary as
Python objects; the vocabularies below are just large enough to segment ordinary English
prompts into meaningful pieces rather than mostly ``<unk>``.
"""

from __future__ import annotations

import string

from transformers import CLIPTokenizer, T5Tokenizer

# SentencePiece marks a word start with U+2581; T5/UMT5 pieces carry it.
WORD_START = "\u2581"

# A prompt-flavoured word list: whole-word pieces make tokenization (and thus the random text
# embeddings) depend on the words, not just on their letters.
_COMMON_WORDS = """
a an the of in on at to and or with by from into over under through near behind above below
is are was his her its their this that as while then slowly quickly gently
man woman boy girl child people dog cat bird horse fish car train boat plane robot astronaut
city street road house room window door table chair forest tree flower garden field mountain
river lake sea ocean beach wave sky cloud sun moon star night day morning evening light shadow
water fire snow rain wind smoke red orange yellow green blue purple white black golden silver
small large tall old young bright dark soft warm cold beautiful walking running flying sitting
standing dancing playing swimming looking holding camera video scene background foreground
close up wide shot cinematic realistic style detailed high quality motion
""".split()

# transformers falls back to a huge model_max_length for in-memory tokenizers, which breaks
# pipelines that pad to it; callers always pass the real repo's value.
DEFAULT_T5_MAX_LENGTH = 512
DEFAULT_CLIP_MAX_LENGTH = 77


def unigram_vocab() -> list[tuple[str, float]]:
    """(piece, log-probability) pairs laid out like real T5: ``<pad>``, ``</s>``, ``<unk>`` first.

    Scores rank whole words over single characters, so the Unigram model prefers them.
    """
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), (WORD_START, -2.0)]
    pieces += [(WORD_START + word, -3.0) for word in _COMMON_WORDS]
    characters = string.ascii_letters + string.digits + string.punctuation
    pieces += [(WORD_START + char, -5.0) for char in characters]
    pieces += [(char, -6.0) for char in characters]
    # The Unigram model rejects a vocabulary with duplicate pieces.
    seen: set[str] = set()
    unique = []
    for piece, score in pieces:
        if piece not in seen:
            seen.add(piece)
            unique.append((piece, score))
    return unique


def t5_tokenizer(model_max_length: int = DEFAULT_T5_MAX_LENGTH) -> T5Tokenizer:
    """A T5-style (Unigram) tokenizer; also serves UMT5-based pipelines such as Wan.

    No sentinel ``<extra_id_*>`` tokens: encoders only ever see prompts.
    """
    return T5Tokenizer(vocab=unigram_vocab(), extra_ids=0, model_max_length=model_max_length)


def _byte_symbols() -> list[str]:
    """One printable character per byte value, the byte-level BPE convention CLIP uses.

    Printable Latin-1 bytes stand for themselves; the others are shifted past 255 so that no
    symbol is whitespace or a control character.
    """
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    symbols, shifted = [], 0
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


def clip_vocab() -> dict[str, int]:
    """Every byte symbol, alone and as a word end (``</w>``), then the two CLIP specials.

    With no merges every byte becomes a token: coarse, but any text encodes without ``<unk>``.
    """
    symbols = _byte_symbols()
    tokens = symbols + [symbol + "</w>" for symbol in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}


def clip_tokenizer(model_max_length: int = DEFAULT_CLIP_MAX_LENGTH) -> CLIPTokenizer:
    return CLIPTokenizer(vocab=clip_vocab(), merges=[], model_max_length=model_max_length)
