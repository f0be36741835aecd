#!/usr/bin/env python3
"""Writes tests/data/tokenizer/corpus.json: the strings the tokenizer golden
test covers. Deterministic (no randomness beyond a fixed seed), so the file
can be regenerated and diffed. Run: python3 tools/reference/make_tokenizer_corpus.py

Categories: every script we could think of, emoji sequences (ZWJ, skin tones,
flags, keycaps), combining marks, full-width forms, whitespace runs,
leading/trailing spaces, special tokens inside text, chat-template shapes,
code, numbers, long repeats, byte-fallback-only characters, and a seeded
random mix.
"""
import json, os, random

C = []
def add(*xs):
    for x in xs:
        C.append(x)

# --- basics and whitespace
add("", " ", "  ", "   ", "\t", "\n", "\r\n", "\n\n\n", " \n ", "\t\t\tx", "x\t\t\t",
    "Hello world", "Hello, world!", " Hello world", "Hello world ", "  Hello  world  ",
    "hello\nworld", "hello\n\nworld", "hello \n world", "a\tb\tc", "a \t b", "line1\r\nline2\r\n",
    "The quick brown fox jumps over the lazy dog.",
    "THE QUICK BROWN FOX", "tHe QuIcK bRoWn FoX", "I'm can't won't it's y'all",
    "e-mail co-operate re-enter", "U.S.A. e.g. i.e. etc.", "\u00a0non-breaking\u00a0space",
    "tab\tseparated\tvalues\n1\t2\t3", "trailing newline\n", "\nleading newline",
    " " * 17, "\n" * 9, "\t" * 5, " \t \t \n\n  \t", "x" + " " * 40 + "y")
# --- punctuation, numbers, code, urls
add("1234567890", "3.14159265358979", "-42", "1,000,000", "0x7fffffff", "1e-10", "2024-11-26",
    "12:30:45", "$100.00", "€50", "£20", "¥1000", "100%", "a+b=c", "(a*b)/c",
    "def f(x):\n    return x ** 2\n", "int main(void) { return 0; }",
    "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}", "<div class=\"x\">hi</div>",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}", "SELECT * FROM users WHERE id = 1;",
    "https://example.com/path?query=1&b=2#frag", "user@example.com", "C:\\Windows\\System32",
    "~/.bashrc && ls -la | grep foo", "#!/usr/bin/env python3", "// comment\n/* block */",
    "`code` **bold** _it_ [link](url)", "| a | b |\n|---|---|\n| 1 | 2 |", "a\\nb\\tc",
    "!!!???...", "---===+++", "@#$%^&*()", "\"quoted\" 'single'", "«guillemets» „Anführung“",
    "…—–‘’“”•", "½ ¼ ¾ ² ³ µ ° ±", "™®©", "→←↑↓⇒∀∃∈∑∏√∞≈≠≤≥")
# --- Latin with diacritics, precomposed and combining
add("café naïve résumé", "Ångström Øresund Æsir", "Straße groß", "łódź żółć", "čeština řeka",
    "Türkçe ığüşöç İstanbul", "Việt Nam tiếng Việt", "español año niño", "português ação",
    "cafe\u0301 (combining acute)", "e\u0301\u0302\u0303 stacked marks", "a\u0308o\u0308u\u0308",
    "Z\u0351\u0352\u0353a\u0354\u0355l\u0356g\u0357o\u0358", "ﬁ ﬂ ﬀ ligatures", "ǅ ǈ ǋ titlecase",
    "Ꭰ Ꭱ Ꭲ Cherokee", "ẞ capital sharp s")
# --- scripts
add("Привет, мир!", "Съешь же ещё этих мягких французских булок", "Ελληνικά: Γειά σου Κόσμε",
    "Բարեւ աշխարհ", "გამარჯობა მსოფლიო", "שלום עולם", "שָׁלוֹם עוֹלָם (niqqud)",
    "مرحبا بالعالم", "اَلْعَرَبِيَّةُ مع التشكيل", "سلام دنیا (فارسی)", "ہیلو دنیا (اردو)",
    "नमस्ते दुनिया", "हिन्दी में क्षत्रिय ज्ञान", "ਸਤਿ ਸ੍ਰੀ ਅਕਾਲ", "নমস্কার বিশ্ব", "வணக்கம் உலகம்",
    "నమస్కారం ప్రపంచం", "ನಮಸ್ಕಾರ ಜಗತ್ತು", "നമസ്കാരം ലോകം", "ഹലോ", "ສະບາຍດີ", "สวัสดีชาวโลก",
    "မင်္ဂလာပါ", "សួស្តី​ពិភពលោក", "ཀུ་སྒྲ་", "ᠮᠣᠩᠭᠣᠯ", "ሰላም ልዑል", "ᐊᐃᓐᓇᐅᓂᖅ",
    "你好，世界！", "中华人民共和国成立于一九四九年。", "繁體中文測試", "こんにちは世界",
    "カタカナとひらがなと漢字", "ｶﾀｶﾅ半角", "안녕하세요 세계", "한국어 문장입니다.", "𠀀𠀁𠀂 (CJK ext B)",
    "丂丄丅丆 rare CJK", "〇一二三", "Ꙗ Ꙕ Old Cyrillic", "𐌰𐌱𐌲 Gothic", "𓀀𓀁𓀂 hieroglyphs",
    "ᚠᚢᚦᚨᚱᚲ runes", "Ⲁⲃⲅ Coptic", "ߊߋߌ N'Ko", "ⴰⵣⵓⵍ Tifinagh", "Ꮳ Ꮴ", "ꦲꦏ꧀ꦱꦫ Javanese")
# --- full-width, compatibility, invisible
add("ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ！", "１２３４５", "（全角括弧）", "ｈｅｌｌｏ　ｗｏｒｌｄ",
    "zero\u200bwidth\u200bspace", "soft\u00adhyphen", "joiner\u200dnon\u200cjoiner",
    "bom\ufeffinside", "rtl\u200fmark\u200e", "\u2028line sep\u2029para sep", "ideographic\u3000space",
    "em\u2003space thin\u2009space", "\u0000nul", "bell\u0007", "del\u007f", "esc\u001b[31mred\u001b[0m",
    "\ufffd replacement char", "\U0010ffff max codepoint", "\ue000 private use")
# --- emoji
add("😀", "😀😃😄", "👍", "👍🏻👍🏼👍🏽👍🏾👍🏿", "👨‍👩‍👧‍👦", "👩🏽‍💻", "🏳️‍🌈", "🏴‍☠️", "🇺🇸🇬🇧🇯🇵",
    "1️⃣ #️⃣ *️⃣", "❤️ ♥ ❤", "🧑‍🤝‍🧑", "I ❤️ NY 🗽", "emoji at end 🎉", "🎉 emoji at start",
    "mixed😀text😃here", "🦄🦓🦒", "👁️‍🗨️", "🤷‍♀️🤷‍♂️", "🫠🫡🫶", "🧔🏻‍♀️")
# --- special tokens and chat shapes
add("</s>", "<s>", "<unk>", "<s></s>", "a</s>b", "a </s> b", "</s></s>", "<s>hello", "hello<s>",
    "<image>", "<image>\nWhat is shown in this image?", "<pad>", "<image><image>", "x<image>y",
    "[INST] Hello [/INST]", "[INST] <image>\nWhat is shown in this image? [/INST]",
    "[INST] <image>\nWhat is shown in this image? [/INST] The image shows a cat.</s> [INST] And the colors? [/INST]",
    "[INST] <image>\n<image>\nCompare these two images. [/INST]",
    "<<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\n[INST] Hi [/INST]",
    "USER: <image>\nWhat's the content of the image? ASSISTANT:", "</ s>", "< s>", "<s >", "<S>",
    "<0x0A>", "<0xFF>", "▁", "▁▁", "▁hello", "hello▁world", "<<image>>", "<im age>", "< image>")
# --- long and repetitive
add("a" * 100, "a" * 1000, "ab" * 300, "abc " * 200, "." * 500, "=" * 80, "😀" * 50,
    "中" * 200, "ä" * 100, " " * 100 + "x", "\n" * 50 + "x", "ha" * 64 + "!",
    "na " * 16 + "Batman!", "0" * 64, "1234567890" * 20, "lorem ipsum dolor sit amet " * 30,
    ("The tokenizer must handle long inputs without quadratic time. " * 40).strip())
# --- mixed-script sentences
add("English, Русский, 中文, العربية, हिन्दी in one line",
    "Mix of 日本語 and English words 123 😀", "αβγ abc 123 абв", "Ωmega ∑um √root",
    "The word 'naïve' in 中文 is 天真", "¿Qué? ¡Sí! — ok.", "Ça va? Ça va.", "über-cool 👍🏽",
    "Emoji ZWJ 👨‍👩‍👧 and flags 🇫🇷🇩🇪 mixed", "Tab\there and\u3000ideographic space")

# --- a seeded random mix of code points from many blocks, including rare ones
rng = random.Random(1234)
blocks = [(0x20, 0x7e), (0xa0, 0x24f), (0x370, 0x3ff), (0x400, 0x4ff), (0x590, 0x5ff),
          (0x600, 0x6ff), (0x900, 0x97f), (0xe00, 0xe7f), (0x1100, 0x11ff), (0x3040, 0x30ff),
          (0x4e00, 0x9fff), (0xac00, 0xd7a3), (0xff00, 0xffef), (0x1f300, 0x1faff), (0x20000, 0x2a6df)]
def rand_text(n):
    out = []
    for _ in range(n):
        a, b = blocks[rng.randrange(len(blocks))]
        cp = rng.randint(a, b)
        if 0xd800 <= cp <= 0xdfff:
            cp = 0x41
        out.append(chr(cp))
        if rng.random() < 0.15:
            out.append(rng.choice([" ", "  ", "\n", "\t", "</s>", "<image>", "<s>"]))
    return "".join(out)
for i in range(90):
    add(rand_text(rng.randint(1, 60)))
# random ASCII words and spacing
words = ["the", "a", "image", "cat", "dog", "red", "blue", "circle", "square", "is", "of",
         "What", "color", "left", "right", "How", "many", "?", ".", ",", "INST", "[", "]"]
for i in range(40):
    n = rng.randint(1, 25)
    s = ""
    for _ in range(n):
        s += rng.choice(words) + rng.choice([" ", " ", " ", "  ", "\n", "", "\t"])
    add(s)

seen, cases = set(), []
for s in C:
    if s not in seen:
        seen.add(s)
        cases.append(s)
out = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "tokenizer", "corpus.json")
with open(out, "w", encoding="utf-8") as f:
    json.dump({"strings": cases}, f, ensure_ascii=False, indent=0)
    f.write("\n")
print(f"{len(cases)} strings -> {os.path.normpath(out)}")
