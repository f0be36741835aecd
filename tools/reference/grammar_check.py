#!/usr/bin/env python3
"""A reference recogniser for the grammar text engine/json_schema.c writes,
so tests can check that text before the C grammar engine exists.

Stdlib only. Written for clarity, not speed: an Earley recogniser over
Unicode code points.

    python3 tools/reference/grammar_check.py [--check] GRAMMAR_FILE STRING
        exit 0: STRING matches the rule root; 1: it does not; 2: bad grammar
    python3 tools/reference/grammar_check.py [--check] GRAMMAR_FILE --lines FILE
        one input per line of FILE (UTF-8, the newline not included);
        prints one character per input, 1 (matches) or 0, then a newline

--check also proves the grammar well formed for a streaming engine: every
rule used is defined, `root` exists, no rule is left recursive (directly or
through rules that can match nothing), and every rule can terminate (it
matches at least one finite string). Problems go to stderr, exit status 2.

The syntax (one rule a line; `#` starts a comment outside literals/classes):
    name ::= alternative | alternative ...      name: [a-z0-9-]+
    alternative: elements separated by spaces, each one of
        "literal"      escapes \\n \\t \\r \\\\ \\" \\xHH
        [a-z_] [^"\\\\]  one code point in / not in the set; ranges a-b;
                       escapes \\\\ \\] \\- \\n \\t \\r \\xHH
        rule-name  ( alternatives )
    each optionally followed by * + ? {m} {m,} {m,n}
"""
import re
import sys

NAME = re.compile(r"[a-z0-9-]+")


class GrammarError(Exception):
    pass


# ---- parsing: text -> {name: alts}; alt = [elem]; elem = (kind, data, lo, hi) --------------
# kinds: "lit" data=str, "cls" data=(negated, [(lo, hi)]), "ref" data=name, "grp" data=alts.
# lo/hi: repetition bounds (hi None = unbounded); a plain element is (1, 1).


class Parser:
    def __init__(self, line, lineno):
        self.s, self.i, self.lineno = line, 0, lineno

    def fail(self, msg):
        raise GrammarError("line %d, column %d: %s" % (self.lineno, self.i + 1, msg))

    def peek(self):
        return self.s[self.i] if self.i < len(self.s) else ""

    def skip_space(self):
        while self.peek() in (" ", "\t"):
            self.i += 1
        if self.peek() == "#":
            self.i = len(self.s)

    def escape(self, allowed):
        c = self.peek()
        self.i += 1
        if c == "x":
            h = self.s[self.i:self.i + 2]
            if not re.fullmatch(r"[0-9a-fA-F]{2}", h):
                self.fail("\\x needs two hex digits")
            self.i += 2
            return chr(int(h, 16))
        table = {"n": "\n", "t": "\t", "r": "\r"}
        if c in table:
            return table[c]
        if c in allowed:
            return c
        self.fail("unknown escape \\%s" % c)

    def literal(self):
        self.i += 1  # the opening quote
        out = []
        while True:
            c = self.peek()
            if c == "":
                self.fail("unterminated literal")
            self.i += 1
            if c == '"':
                return "".join(out)
            out.append(self.escape('\\"') if c == "\\" else c)

    def char_class(self):
        self.i += 1  # [
        negated = self.peek() == "^"
        if negated:
            self.i += 1
        ranges = []

        def one():
            c = self.peek()
            if c == "":
                self.fail("unterminated character class")
            self.i += 1
            return self.escape("\\]-[^\"") if c == "\\" else c

        while self.peek() != "]":
            lo = one()
            hi = lo
            if self.peek() == "-" and self.s[self.i + 1:self.i + 2] not in ("]", ""):
                self.i += 1
                hi = one()
                if ord(hi) < ord(lo):
                    self.fail("range %r-%r is empty" % (lo, hi))
            ranges.append((ord(lo), ord(hi)))
        self.i += 1
        if not ranges:
            self.fail("empty character class")
        return negated, ranges

    def postfix(self):
        c = self.peek()
        if c == "*":
            self.i += 1
            return 0, None
        if c == "+":
            self.i += 1
            return 1, None
        if c == "?":
            self.i += 1
            return 0, 1
        if c == "{":
            m = re.compile(r"\{(\d+)(,(\d*))?\}").match(self.s, self.i)
            if not m:
                self.fail("bad repetition")
            self.i = m.end()
            lo = int(m.group(1))
            if m.group(2) is None:
                return lo, lo
            hi = int(m.group(3)) if m.group(3) else None
            if hi is not None and hi < lo:
                self.fail("repetition {%d,%d} is empty" % (lo, hi))
            return lo, hi
        return 1, 1

    def element(self):
        c = self.peek()
        if c == '"':
            e = ("lit", self.literal())
        elif c == "[":
            e = ("cls", self.char_class())
        elif c == "(":
            self.i += 1
            alts = self.alternatives()
            if self.peek() != ")":
                self.fail("expected )")
            self.i += 1
            e = ("grp", alts)
        else:
            m = NAME.match(self.s, self.i)
            if not m:
                self.fail("unexpected %r" % c)
            self.i = m.end()
            e = ("ref", m.group(0))
        lo, hi = self.postfix()
        return (e[0], e[1], lo, hi)

    def alternatives(self):
        alts = [[]]
        while True:
            self.skip_space()
            c = self.peek()
            if c in ("", ")"):
                return alts
            if c == "|":
                self.i += 1
                alts.append([])
                continue
            alts[-1].append(self.element())


def parse_grammar(text):
    rules, order = {}, []
    for lineno, line in enumerate(text.split("\n"), 1):
        p = Parser(line, lineno)
        p.skip_space()
        if p.peek() == "":
            continue
        m = re.compile(r"([a-z0-9-]+)[ \t]*::=").match(line, p.i)
        if not m:
            p.fail("expected 'name ::='")
        name = m.group(1)
        if name in rules:
            p.fail("rule %s defined twice" % name)
        p.i = m.end()
        alts = p.alternatives()
        if p.peek() == ")":
            p.fail("unbalanced )")
        rules[name] = alts
        order.append(name)
    return rules, order


# ---- well-formedness (--check) ------------------------------------------------------------


def refs_of(alts):
    for alt in alts:
        for kind, data, _, _ in alt:
            if kind == "ref":
                yield data
            elif kind == "grp":
                yield from refs_of(data)


def check(rules):
    problems = []
    if "root" not in rules:
        problems.append("no rule root")
    for name, alts in rules.items():
        for r in refs_of(alts):
            if r not in rules:
                problems.append("%s uses undefined rule %s" % (name, r))
    if problems:
        return problems

    def fixpoint(elem_ok):
        ok = set()
        changed = True
        while changed:
            changed = False
            for name, alts in rules.items():
                if name not in ok and any(all(elem_ok(e, ok) for e in alt) for alt in alts):
                    ok.add(name)
                    changed = True
        return ok

    def nullable_elem(e, ok):
        kind, data, lo, _ = e
        if lo == 0:
            return True
        if kind == "lit":
            return data == ""
        if kind == "cls":
            return False
        if kind == "ref":
            return data in ok
        return any(all(nullable_elem(x, ok) for x in alt) for alt in data)

    def productive_elem(e, ok):
        kind, data, lo, _ = e
        if lo == 0 or kind in ("lit", "cls"):
            return True
        if kind == "ref":
            return data in ok
        return any(all(productive_elem(x, ok) for x in alt) for alt in data)

    nullable = fixpoint(nullable_elem)
    productive = fixpoint(productive_elem)
    for name in rules:
        if name not in productive:
            problems.append("rule %s can never end" % name)

    # left edges: rules reachable at the start of a rule, past nullable prefixes
    def left(alts, out):
        for alt in alts:
            for e in alt:
                kind, data, lo, _ = e
                if kind == "ref":
                    out.add(data)
                elif kind == "grp":
                    left(data, out)
                if not nullable_elem(e, nullable):
                    break
        return out

    edges = {name: left(alts, set()) for name, alts in rules.items()}
    for name in rules:
        seen, todo = set(), list(edges[name])
        while todo:
            r = todo.pop()
            if r == name:
                problems.append("rule %s is left recursive" % name)
                break
            if r not in seen:
                seen.add(r)
                todo.extend(edges[r])
    return problems


# ---- Earley recogniser over a plain BNF ---------------------------------------------------
# The EBNF is lowered to productions over ints (nonterminals) and terminals
# (("t", predicate)): a literal is its code points, a class one predicate,
# x* is N ::= | N x, x+ is N ::= x | N x, x{m,n} is m copies then n-m nested optionals.


class Bnf:
    def __init__(self, rules):
        self.prods = []  # (lhs, (symbols...))
        self.ids = {}
        self.n = 0
        for name in rules:
            self.ids[name] = self.fresh()
        for name, alts in rules.items():
            self.add_alts(self.ids[name], alts)
        self.by_lhs = {}
        for i, (lhs, _) in enumerate(self.prods):
            self.by_lhs.setdefault(lhs, []).append(i)
        self.nullable = set()
        changed = True
        while changed:
            changed = False
            for lhs, rhs in self.prods:
                if lhs not in self.nullable and all(
                        isinstance(s, int) and s in self.nullable for s in rhs):
                    self.nullable.add(lhs)
                    changed = True

    def fresh(self):
        self.n += 1
        return self.n - 1

    def add_alts(self, lhs, alts):
        for alt in alts:
            rhs = []
            for e in alt:
                rhs.extend(self.lower(e))
            self.prods.append((lhs, tuple(rhs)))

    def atom(self, kind, data):
        if kind == "lit":
            return [("t", (False, [(ord(c), ord(c))])) for c in data]
        if kind == "cls":
            return [("t", data)]
        if kind == "ref":
            return [self.ids[data]]
        n = self.fresh()
        self.add_alts(n, data)
        return [n]

    def lower(self, e):
        kind, data, lo, hi = e
        one = self.atom(kind, data)
        if (lo, hi) == (1, 1):
            return one
        out = one * lo
        if hi is None:  # star: N ::= | N one
            n = self.fresh()
            self.prods.append((n, ()))
            self.prods.append((n, tuple([n] + one)))
            return out + [n]
        nxt = None
        for _ in range(hi - lo):  # opt_k ::= | one opt_{k-1}
            n = self.fresh()
            self.prods.append((n, ()))
            self.prods.append((n, tuple(one + ([nxt] if nxt is not None else []))))
            nxt = n
        return out + ([nxt] if nxt is not None else [])


def term_matches(pred, cp):
    negated, ranges = pred
    inside = any(lo <= cp <= hi for lo, hi in ranges)
    return inside != negated


def recognise(bnf, start, text):
    # item: (prod, dot, origin)
    sets = [set() for _ in range(len(text) + 1)]
    todo = []

    def add(k, item):
        if item not in sets[k]:
            sets[k].add(item)
            todo.append(item)

    for p in bnf.by_lhs[start]:
        add(0, (p, 0, 0))
    for k in range(len(text) + 1):
        todo = list(sets[k])
        while todo:
            p, dot, origin = todo.pop()
            lhs, rhs = bnf.prods[p]
            if dot == len(rhs):  # complete
                for q, d, o in list(sets[origin]):
                    r = bnf.prods[q][1]
                    if d < len(r) and r[d] == lhs:
                        add(k, (q, d + 1, o))
                continue
            sym = rhs[dot]
            if isinstance(sym, int):  # predict (Aycock-Horspool: skip a nullable)
                for q in bnf.by_lhs.get(sym, ()):
                    add(k, (q, 0, k))
                if sym in bnf.nullable:
                    add(k, (p, dot + 1, origin))
            elif k < len(text) and term_matches(sym[1], ord(text[k])):
                sets[k + 1].add((p, dot + 1, origin))
    return any(
        bnf.prods[p][0] == start and d == len(bnf.prods[p][1]) and o == 0
        for p, d, o in sets[len(text)])


def main(argv):
    args = argv[1:]
    do_check = "--check" in args
    args = [a for a in args if a != "--check"]
    if len(args) == 3 and args[1] == "--lines":
        with open(args[2], encoding="utf-8") as f:
            inputs = f.read().split("\n")
        if inputs and inputs[-1] == "":
            inputs.pop()
    elif len(args) == 2:
        inputs = [args[1]]
    else:
        sys.stderr.write(__doc__)
        return 2
    with open(args[0], encoding="utf-8") as f:
        text = f.read()
    try:
        rules, _ = parse_grammar(text)
        problems = check(rules) if do_check else []
    except GrammarError as e:
        problems = [str(e)]
    if problems:
        for p in problems:
            sys.stderr.write("grammar: %s\n" % p)
        return 2
    if "root" not in rules:
        sys.stderr.write("grammar: no rule root\n")
        return 2
    bnf = Bnf(rules)
    results = [recognise(bnf, bnf.ids["root"], s) for s in inputs]
    if len(args) == 2:
        return 0 if results[0] else 1
    print("".join("1" if r else "0" for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
