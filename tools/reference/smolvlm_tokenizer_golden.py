#!/usr/bin/env python3
"""Golden token ids for test_tokenizer_bytelevel, from Hugging Face `tokenizers`.

Run where `tokenizers` is installed (the GPU machine):
    python3 tools/reference/smolvlm_tokenizer_golden.py \\
        tests/data/smolvlm/smolvlm-tiny/tokenizer.json \\
        tests/data/tokenizer/corpus.json \\
        tests/data/smolvlm/tokenizer_golden.json
TOKENIZER_JSON is a SmolVLM / SmolLM2 tokenizer.json (byte-level BPE:
pre_tokenizer Sequence[Digits(individual_digits), ByteLevel], decoder
ByteLevel). The corpus is CORPUS_JSON's "strings" followed by EXTRA below,
which stress the byte-level pipeline (digits, Unicode numbers, contractions,
whitespace runs, CJK, emoji, combining marks, SmolVLM's added tokens).

For every string it records:
  text          the string
  ids           encode(text, add_special_tokens=True).ids
  tokens        the token strings of those ids (for reading a diff only)
  decoded       decode(ids, skip_special_tokens=False)
  decoded_skip  decode(ids, skip_special_tokens=True)
and "decode_cases": id sequences made to cut characters between byte
tokens and to put ill-formed bytes next to each other (the ByteLevel
decoder's U+FFFD rules), each with decoded and decoded_skip.
Plus tokenizers_version and tokenizer_sha256 (of the file's bytes).

Plain Python 3 + tokenizers; json, hashlib, random and sys from the
standard library. The EXTRA list is read by other tools with ast, so it
stays a literal and `tokenizers` is imported inside main().
"""
import hashlib
import json
import random
import sys

EXTRA = [
    # digits: Digits(individual_digits) isolates every number character
    "12345", "3.14", "3.14159 and 2,000,000", "0x7f 1e-10 -42", "a1b2c3", "x² + y² = z²",
    "Ⅻ", "²", "½ ¼ ¾", "١٢٣", "٣.١٤", "१२३", "𝟎𝟏𝟐", "① ② ③", "2024年12月6日",
    # contractions: lowercase only, the regex is case-sensitive
    "don't", "it'S", "I'M", "we'll've", "y'all", "'s 's", " 's", "''s", "'tis", "rock 'n' roll",
    "DON'T", "she'd", "they're", "you've", "'",
    # whitespace runs before words, at the end, newlines, tabs
    "   leading spaces", "trailing spaces   ", "  both  ", "a  b   c    d", " ", "  ", "\n\n",
    "\n\nHello", "Hello\n\n", "Hello\n\nworld", "tab\tsep", "\t\tx", "x\t\t", " \t \n x",
    "line\r\nbreak\r\n", "\u00a0nbsp\u00a0", "ideographic\u3000space", "a\u2028b", "a\u0085b",
    "    indented code", "def f(x):\n    return x ** 2\n", "\n \n\n \n\n\n \t \t\t \t\n  \n   \n",
    # CJK, other scripts
    "日本語のテキスト", "中文文本，标点。", "한국어 텍스트", "Привет, мир!", "Γειά σου κόσμε",
    "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก", "Ελληνικά123abc",
    "mixed日本語English한국어", "ｆｕｌｌｗｉｄｔｈ　ＡＢＣ　１２３",
    # emoji (multi-byte, joiners, modifiers, flags)
    "🙂", "👍🏽", "👨‍👩‍👧", "🇫🇷🇯🇵", "🦙🦙 llama", "I ❤️ it", "✅ done",
    # combining marks
    "e\u0301", "n\u0303o", "a\u0308\u0304", "Zalgo z\u0351\u0352a\u0353l\u0354g\u0355o",
    # SmolVLM's added tokens inside text
    "User:<image>Hi<end_of_utterance>\nAssistant:", "<row_1_col_2>", "<global-img>",
    "<fake_token_around_image><global-img><image><image><fake_token_around_image>",
    "<fake_token_around_image><row_1_col_1><image><fake_token_around_image><row_1_col_2>",
    "<|im_start|>User: What is in the image?<end_of_utterance>\nAssistant:",
    "<|im_start|>user\nDescribe this.<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>", "text<|endoftext|>text", " <image> ", "<image >", "<<image>>",
    "<image><image>", "image", "<end_of_utterance>", "<|reserved_special_token_0|>",
    # punctuation and symbols
    "Hello, world!", "...!!!???", "---===+++", "@#$%^&*()", "«guillemets» „quotes“",
    "…—–‘’“”•", "€50 £20 ¥1000 $100.00", "https://example.com/path?q=1&b=2#frag",
    "C:\\Windows\\System32", "`code` **bold** _it_", "a\\nb",
    # long runs
    "a" * 300, "1" * 120, " " * 64, "ab " * 80, "\n" * 40, "🙂" * 30,
]


def decode_cases(tok, n_vocab):
    """Id sequences that cut characters and mix ill-formed bytes."""
    # the token of each single byte: bytes_to_unicode of GPT-2
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_id = {}
    for b, c in zip(bs, cs):
        i = tok.token_to_id(chr(c))
        if i is not None:
            byte_id[b] = i
    specials = [tok.token_to_id(s) for s in ("<image>", "<end_of_utterance>", "<|im_start|>")]
    specials = [s for s in specials if s is not None]
    rnd = random.Random(1234)
    cases = []
    texts = ["日本", "é", "🙂👍🏽", "a€b", "Привет"]
    for t in texts:  # each character cut into its byte tokens
        cases.append([byte_id[b] for b in t.encode("utf-8") if b in byte_id])
    high = [b for b in range(0x80, 0x100) if b in byte_id]
    for _ in range(200):
        ids = []  # may stay empty: decode([]) is ""
        for _ in range(rnd.randint(1, 12)):
            r = rnd.random()
            if r < 0.6 and high:
                ids.append(byte_id[rnd.choice(high)])
            elif r < 0.75 and specials:
                ids.append(rnd.choice(specials))
            else:
                i = rnd.randrange(n_vocab)
                if tok.id_to_token(i) is not None:  # ids in use only
                    ids.append(i)
        cases.append(ids)
    out = []
    for ids in cases:
        out.append({
            "ids": ids,
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip": tok.decode(ids, skip_special_tokens=True),
        })
    return out


def main():
    import tokenizers
    from tokenizers import Tokenizer

    tok_path, corpus_path, out_path = sys.argv[1:4]
    raw = open(tok_path, "rb").read()
    sha = hashlib.sha256(raw).hexdigest()
    strings = json.load(open(corpus_path, encoding="utf-8"))["strings"] + EXTRA

    tok = Tokenizer.from_file(tok_path)
    cases = []
    for s in strings:
        enc = tok.encode(s, add_special_tokens=True)
        cases.append({
            "text": s,
            "ids": enc.ids,
            "tokens": enc.tokens,
            "decoded": tok.decode(enc.ids, skip_special_tokens=False),
            "decoded_skip": tok.decode(enc.ids, skip_special_tokens=True),
        })
    out = {
        "tokenizer_sha256": sha,
        "tokenizers_version": tokenizers.__version__,
        "cases": cases,
        "decode_cases": decode_cases(tok, tok.get_vocab_size(with_added_tokens=True)),
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
    print(f"{len(cases)} cases, {len(out['decode_cases'])} decode cases, "
          f"tokenizers {tokenizers.__version__}, tokenizer sha256 {sha}")


if __name__ == "__main__":
    main()
