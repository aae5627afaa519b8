#!/usr/bin/env python3
"""Checks the module graph of src/: no import cycle, and no module importing one above it.

Run it from anywhere (scripts/test.sh runs it next to clippy):

    python3 scripts/check-modules.py          # silent when fine; exit 1 with each problem otherwise
    python3 scripts/check-modules.py -v       # also prints every module's layer and imports

A module is a file: src/a.rs is `a`, src/a/mod.rs is `a`, src/a/b.rs is `a::b`, src/bin/x.rs is
`bin::x` (the binaries are checked too; src/lib.rs only declares modules). An import is any
`crate::`, `super::` or `self::` path (or `vault_kubernetes::` in src/bin/), in `use` lines or
inline, outside comments and `#[cfg(test)]` modules (test code may use anything). It resolves to
the longest module it names, so `crate::http::Retry` is `http` and `crate::vault::token::X` is
`vault::token`.

Rules:
1. Layers. LAYERS below lists them from the top; every module belongs to the entry with the
   longest prefix matching its path (`sync` covers `sync::plan`). A module may import modules
   of its own layer or of layers below it, never above: leaves never import configuration,
   transport, clients or programs. A new module that matches no entry is an error: add it to
   the layer it belongs to.
2. No cycle. A child naming its own parent (`super::`) is not counted: a folder's mod.rs and
   its files are one room, as in ../shared/tools/module-cycles.py, whose count this matches.
3. Every module opens with `//!` lines saying what it is for.
"""
import os
import re
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
CRATE = "vault_kubernetes"

# Top first. A module may import its own layer and those after it in this list.
LAYERS = [
    # main()s and what they share: parse the environment, run one program, one error line.
    ("entry points", ["bin", "cli"]),
    # Orchestrate one job each; own no mechanism. `env` is the exec wrapper.
    ("programs", ["authenticate", "renew", "sync", "env"]),
    # Vault and Kubernetes APIs, and the token file the programs hand each other.
    ("clients", ["vault", "kube", "events", "token_file", "watch"]),
    # One HTTP layer under every client: requests, retries, deadlines, TLS, sockets, rate limit.
    ("transport", ["http"]),
    # The only reader of the environment: typed settings, checked before any I/O.
    ("configuration", ["config"]),
    # Small helpers everything may use; they import only each other.
    ("leaves", ["error", "time", "random", "secret", "url", "log", "base64", "mapping", "fs",
                "core_dump", "dir", "parallel", "signals", "termination", "x509"]),
]


def modules(src):
    """{module path: file} for every .rs file under src."""
    found = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), src)
            if rel in ("lib.rs", "main.rs"):
                continue
            parts = rel[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            found["::".join(parts)] = os.path.join(dirpath, f)
    return found


def lex(text):
    """The text with comments dropped and string and character literals emptied."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 300]) and not re.match(r"\w", text[i - 1:i] or " "):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + len(hashes) + 2)
            i = n if end < 0 else end + 1 + len(hashes)
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'":
            if text.startswith("\\", i + 1):
                end = text.find("'", i + 3)
                i = n if end < 0 else end + 1
                out.append("' '")
            elif i + 2 < n and text[i + 2] == "'":
                i += 3
                out.append("' '")
            else:  # a lifetime or label
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def strip(text):
    """The text without comments, literals and `#[cfg(test)]` items."""
    text = lex(text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        # Skip the item: up to its matching closing brace, or its semicolon.
        j, depth = m.end(), 0
        while j < len(text):
            c = text[j]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    j += 1
                    break
            elif c == ";" and depth == 0:
                j += 1
                break
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def paths_after(text, start):
    """The paths of a use tree starting at text[start:] (after `crate::`), e.g. `a::{b, c::d}`."""
    out = []

    def tree(i, prefix):
        segs = []
        while True:
            m = re.compile(r"\s*(" + IDENT + r")\s*").match(text, i)
            if m:
                segs.append(m.group(1))
                i = m.end()
                if text.startswith("::", i):
                    i += 2
                    continue
                out.append("::".join(prefix + segs))
                return i
            m = re.compile(r"\s*\{").match(text, i)
            if m:
                i = m.end()
                while True:
                    m2 = re.compile(r"\s*\}").match(text, i)
                    if m2:
                        return m2.end()
                    i = tree(i, prefix + segs)
                    m3 = re.compile(r"\s*(as\s+" + IDENT + r")?\s*,?").match(text, i)
                    i = m3.end() if m3 else i
                    if i >= len(text):
                        return i
            if segs:
                out.append("::".join(prefix + segs))
            return i

    tree(start, [])
    return out


def imports(module, path, mods, lib_names):
    text = strip(open(path, encoding="utf-8", errors="replace").read())
    parent = module.rsplit("::", 1)[0] if "::" in module else ""
    roots = ["crate", CRATE] if module.startswith("bin::") else ["crate"]
    names = []
    for root in roots:
        for m in re.finditer(r"\b" + root + r"::", text):
            names += paths_after(text, m.end())
    for m in re.finditer(r"(?<![:\w])super::", text):
        names += [parent + "::" + p if parent else p for p in paths_after(text, m.end())]
    for m in re.finditer(r"(?<![:\w])self::", text):
        names += [module + "::" + p for p in paths_after(text, m.end())]
    # A folder's own files, named bare (`tls::build`) or declared (`mod tls;`).
    for child in (c for c in mods if c.rsplit("::", 1)[0] == module and "::" in c):
        leaf = child.rsplit("::", 1)[1]
        if re.search(r"(?<![:\w])(?:mod\s+)?" + leaf + r"\s*(?:::|;)", text):
            names.append(child)
    found = set()
    for n in names:
        segs = n.split("::")
        if segs[0] in lib_names:  # `crate::Error`: a re-export in lib.rs
            segs = lib_names[segs[0]].split("::") + segs[1:]
        target = None
        for k in range(len(segs), 0, -1):
            if "::".join(segs[:k]) in mods:
                target = "::".join(segs[:k])
                break
        if target and target != module and not (target == parent and module.startswith(target + "::")):
            found.add(target)
    return found


def lib_reexports(src):
    """`pub use error::{Error, Result};` in lib.rs: name -> module."""
    names = {}
    lib = os.path.join(src, "lib.rs")
    if os.path.exists(lib):
        text = strip(open(lib, encoding="utf-8").read())
        for m in re.finditer(r"pub\s+use\s+(?:crate::)?(" + IDENT + r")::", text):
            for p in paths_after(text, m.end()):
                names[p.split("::")[-1]] = m.group(1)
    return names


def layer_of(module):
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if module == p or module.startswith(p + "::"):
                if best is None or len(p) > len(best[1]):
                    best = (rank, p)
    return None if best is None else best[0]


def cycles(edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    verbose = "-v" in sys.argv
    src = args[0] if args else os.path.join(ROOT, "src")
    mods = modules(src)
    lib_names = lib_reexports(src)
    edges = {m: imports(m, p, mods, lib_names) for m, p in mods.items()}
    problems = []
    for m in sorted(mods):
        if layer_of(m) is None:
            # The lowest layer its imports allow, as a hint.
            ranks = [layer_of(t) for t in edges[m] if layer_of(t) is not None]
            fits = LAYERS[min(ranks, default=len(LAYERS) - 1)][0]
            problems.append(
                f"{m} ({mods[m]}): in no layer; add it to LAYERS in {sys.argv[0]} "
                f"(from its imports it fits '{fits}' or above)")
    for m in sorted(mods):
        if not open(mods[m], encoding="utf-8", errors="replace").read().lstrip().startswith("//!"):
            problems.append(f"{m} ({mods[m]}): no `//!` doc lines saying what it is for")
    for m in sorted(mods):
        lm = layer_of(m)
        for t in sorted(edges[m]):
            lt = layer_of(t)
            if lm is not None and lt is not None and lt < lm:
                problems.append(
                    f"{m} ({LAYERS[lm][0]}) imports {t} ({LAYERS[lt][0]}), a layer above it")
    for c in cycles(edges):
        problems.append("cycle: " + ", ".join(
            f"{a} -> {'/'.join(sorted(b for b in edges[a] if b in c))}" for a in c))
    if verbose:
        for rank, (name, _) in enumerate(LAYERS):
            print(f"{name}:")
            for m in sorted(x for x in mods if layer_of(x) == rank):
                print(f"  {m} -> {', '.join(sorted(edges[m])) or '-'}")
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s) in the module graph of {src}")
        return 1
    if verbose:
        print(f"{len(mods)} modules, no cycle, no upward import")
    return 0


if __name__ == "__main__":
    sys.exit(main())
