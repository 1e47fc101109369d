#!/usr/bin/env python3
"""Checks the Rust, Julia and Python bindings against ffi/include/lighthouse.h (Python 3 stdlib
only). The Python binding's ctypes declarations are checked by check_python_binding.py, which
`coverage` and `selftest` run when given the binding's _capi.py as PYTHON_CAPI.

  check_bindings.py ccalls   HEADER JULIA_DIR        every ccall in the Julia package names a
                                                      header function with the same number and
                                                      kinds of arguments and the same return type
  check_bindings.py coverage HEADER RUST_SYS JULIA_DIR [PYTHON_CAPI]
                                                      every header function is declared by the
                                                      Rust -sys crate with the same prototype and
                                                      called by the Julia package (and declared
                                                      by PYTHON_CAPI); every enum and integer
                                                      #define has the same value in each
  check_bindings.py selftest HEADER RUST_SYS JULIA_DIR [PYTHON_CAPI]
                                                      mutates the header, a ccall and a @cfunction
                                                      in memory and expects each mutation to be
                                                      caught

Callback typedefs (typedef R (*name)(args);) are checked too: lighthouse-sys must declare each as
`Option<unsafe extern "C" fn(args) -> R>` with the same prototype, and the Julia package must
declare it as Ptr{Cvoid} and make it with @cfunction(<name>_trampoline, R, (args...)).

Types are compared in a normal form: pointer levels with the constness of what they point to,
scalars by ABI kind (int and int32_t are both i32), enums and opaque structs by their C name
(both bindings declare aliases with the header's names, checked to be 32-bit / opaque).
Julia and ctypes have no const pointers, so constness is ignored for them.
"""
import os
import re
import sys

# ---- a small type model ----------------------------------------------------------------------

SCALARS = {  # C spelling -> ABI kind
    "int": "i32", "int32_t": "i32", "int64_t": "i64", "double": "f64", "float": "f32",
    "char": "char", "void": "void", "size_t": "usize", "uint8_t": "u8",
}
RUST_SCALARS = {
    "c_int": "i32", "i32": "i32", "i64": "i64", "f64": "f64", "c_double": "f64", "f32": "f32",
    "c_float": "f32", "c_char": "char", "c_void": "void", "usize": "usize", "u8": "u8",
}
JULIA_SCALARS = {
    "Cint": "i32", "Int32": "i32", "Int64": "i64", "Clonglong": "i64", "Cdouble": "f64",
    "Float64": "f64", "Cfloat": "f32", "Float32": "f32", "Cchar": "char", "UInt8": "u8",
    "Cvoid": "void", "Nothing": "void", "Csize_t": "usize",
}


def base(name, const=False):
    return ("base", SCALARS.get(name, name), const)


def ptr(pointee, const=False):
    return ("ptr", pointee, const)


def show(t, with_const=True):
    """A readable normal form: 'const void*', 'lh_context**', 'i64'."""
    if t[0] == "ptr":
        return show(t[1], with_const) + "*" + (" const" if (t[2] and with_const) else "")
    return ("const " if (t[2] and with_const) else "") + t[1]


def drop_top_const(t):
    return (t[0], t[1], False)


def strip_const(t):
    if t[0] == "ptr":
        return ("ptr", strip_const(t[1]), False)
    return ("base", t[1], False)


# ---- the header --------------------------------------------------------------------------------

def strip_c_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def parse_c_type(text):
    """'const lh_context *' / 'char *const *' -> normal form (top-level const dropped)."""
    tokens = re.findall(r"\*|[A-Za-z_]\w*", text)
    words = []
    t = None
    for tok in tokens:
        if tok == "*":
            if t is None:
                t = base(" ".join(w for w in words if w != "const"), "const" in words)
            t = ptr(t)
        elif tok == "const" and t is not None:
            t = ptr(t[1], True)
        else:
            words.append(tok)
    if t is None:
        t = base(" ".join(w for w in words if w != "const"), "const" in words)
    return drop_top_const(t)


def split_c_param(param):
    """'const void *q' -> type text 'const void *' (the trailing name, if any, removed)."""
    param = param.strip()
    m = re.match(r"^(.*?[\s*])([A-Za-z_]\w*)$", param)
    if m and m.group(1).strip() not in ("", "const"):
        return m.group(1)
    return param  # an unnamed parameter


def parse_c_params(params):
    params = params.strip()
    return [] if params in ("", "void") else [parse_c_type(split_c_param(p)) for p in params.split(",")]


def parse_header(text):
    """-> (functions {name: (ret, [args])}, constants {NAME: int}, enum type names, structs,
    callbacks {typedef name: (ret, [args])} of the function-pointer typedefs)."""
    code = strip_c_comments(text)
    functions = {}
    for m in re.finditer(r"^\s*LH_API\s+([^;(]+?)\s*\(([^)]*)\)\s*;", code, flags=re.M | re.S):
        decl = m.group(1).strip()
        nm = re.match(r"^(.*?)([A-Za-z_]\w*)$", decl)
        functions[nm.group(2)] = (parse_c_type(nm.group(1)), parse_c_params(m.group(2)))
    # typedef RET (*NAME)(PARAMS);  (callbacks the caller passes to the library)
    callbacks = {}
    for m in re.finditer(r"typedef\s+([^;()]+?)\s*\(\s*\*\s*(\w+)\s*\)\s*\(([^)]*)\)\s*;", code, flags=re.S):
        callbacks[m.group(2)] = (parse_c_type(m.group(1)), parse_c_params(m.group(3)))
    constants, enums = {}, set()
    for m in re.finditer(r"typedef\s+enum\s+(\w+)\s*\{(.*?)\}\s*(\w+)\s*;", code, flags=re.S):
        enums.add(m.group(3))
        value = -1
        for item in m.group(2).split(","):
            item = item.strip()
            if not item:
                continue
            em = re.match(r"^(\w+)\s*(?:=\s*(.+))?$", item, flags=re.S)
            value = evaluate(em.group(2), constants) if em.group(2) else value + 1
            constants[em.group(1)] = value
    for m in re.finditer(r"^\s*#define\s+(LH_\w+)\s+(.+)$", code, flags=re.M):
        try:
            constants[m.group(1)] = evaluate(m.group(2), constants)
        except ValueError:
            pass  # not an integer constant (LH_API)
    structs = set(re.findall(r"typedef\s+struct\s+\w+\s+(\w+)\s*;", code))
    return functions, constants, enums, structs, callbacks


def evaluate(expr, constants):
    """An integer constant expression made of literals, known names, + - * / and parentheses."""
    expr = re.sub(r"\b(?:Cint|Int32|Int64|c_int|i32|i64)\((.*?)\)", r"(\1)", expr.strip())  # casts
    expr = re.sub(r"\bas\s+\w+", "", expr)
    expr = re.sub(r"[A-Za-z_]\w*", lambda m: str(constants[m.group(0)]) if m.group(0) in constants else m.group(0), expr)
    if not re.fullmatch(r"[\d\s+\-*/()]+", expr):
        raise ValueError(expr)
    return int(eval(expr.replace("/", "//"), {"__builtins__": {}}))


# ---- the Rust -sys crate -----------------------------------------------------------------------

def parse_rust_type(text):
    text = text.strip()
    m = re.match(r"^\*\s*(const|mut)\s+(.*)$", text, flags=re.S)
    if m:
        inner = parse_rust_type(m.group(2))
        if m.group(1) == "const":
            inner = (inner[0], inner[1], True)
        return ptr(inner)
    name = text.split("::")[-1]
    return ("base", RUST_SCALARS.get(name, name), False)


def parse_rust_signature(params, ret):
    """'a: *mut c_void, b: c_int' and '-> lh_status' text -> (ret, [args]) in normal form.
    Parameters may be named ('a: T') or not ('T', as in fn-pointer types)."""
    args = [a for a in (x.strip() for x in params.split(",")) if a]
    types = [parse_rust_type(a.split(":", 1)[1] if ":" in a.replace("::", "") else a) for a in args]
    ret = parse_rust_type(ret) if ret else base("void")
    return drop_top_const(ret), types


def parse_rust(text):
    """-> (functions, constants, aliases {name: type text}, opaque struct names,
    callbacks {alias: (ret, [args])} of `pub type X = Option<unsafe extern "C" fn(..) -> R>;`)."""
    code = re.sub(r"//[^\n]*", " ", text)
    functions = {}
    for block in re.finditer(r'extern\s+"C"\s*\{(.*?)\n\}', code, flags=re.S):
        for m in re.finditer(r"pub\s+fn\s+(\w+)\s*\((.*?)\)\s*(?:->\s*([^;]+))?;", block.group(1), flags=re.S):
            functions[m.group(1)] = parse_rust_signature(m.group(2), m.group(3))
    aliases = dict(re.findall(r"pub\s+type\s+(\w+)\s*=\s*([\w:]+)\s*;", code))
    callbacks = {}
    for m in re.finditer(r'pub\s+type\s+(\w+)\s*=\s*(.*?);', code, flags=re.S):
        fm = re.fullmatch(r'Option\s*<\s*unsafe\s+extern\s+"C"\s+fn\s*\((.*?)\)\s*(?:->\s*([\w:*\s]+?))?\s*,?\s*>', m.group(2).strip(), flags=re.S)
        if fm:
            callbacks[m.group(1)] = parse_rust_signature(fm.group(1), fm.group(2))
        elif "fn" in m.group(2):
            callbacks[m.group(1)] = None  # a function type not written as Option<unsafe extern "C" fn>
    constants = {}
    for name, expr in re.findall(r"pub\s+const\s+(LH_\w+)\s*:\s*\w+\s*=\s*(.+?);", code, flags=re.S):
        constants[name] = evaluate(expr, constants)
    structs = set(re.findall(r"pub\s+struct\s+(\w+)", code))
    return functions, constants, aliases, structs, callbacks


# ---- the Julia package -------------------------------------------------------------------------

def strip_julia_comments(text):
    text = re.sub(r"#=.*?=#", " ", text, flags=re.S)
    return re.sub(r"#[^\n]*", " ", text)  # the package keeps '#' out of its string literals


def split_top(text):
    """Splits at commas outside (), [], {}."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts]


def balanced(text, open_at):
    """The text inside the parenthesis that opens at `open_at`."""
    depth = 0
    for i in range(open_at, len(text)):
        depth += text[i] == "("
        depth -= text[i] == ")"
        if depth == 0:
            return text[open_at + 1:i]
    raise ValueError("unbalanced parenthesis")


def parse_julia_type(text):
    text = text.strip()
    m = re.match(r"^(?:Ptr|Ref)\{(.*)\}$", text, flags=re.S)
    if m:
        return ptr(parse_julia_type(m.group(1)))
    if text == "Cstring":
        return ptr(base("char"))
    return ("base", JULIA_SCALARS.get(text, text), False)


def julia_files(julia_dir):
    for root, _, files in os.walk(julia_dir):
        for f in sorted(files):
            if f.endswith(".jl"):
                yield os.path.join(root, f)


def parse_julia(sources):
    """sources: {path: text} -> (ccalls [(where, name, ret, args, nvalues)], constants, aliases).
    `aliases` also maps the key FUNCTIONS to the names of the package's symbol table, if any, and
    the key CFUNCTIONS to the package's @cfunction calls [(where, callable, ret, args)]."""
    calls, constants, aliases = [], {}, {"CFUNCTIONS": []}
    for path, text in sources.items():
        code = strip_julia_comments(text)
        for m in re.finditer(r"@cfunction\s*\(", code):
            where = "%s:%d" % (os.path.basename(path), code.count("\n", 0, m.start()) + 1)
            parts = split_top(balanced(code, m.end() - 1))
            if len(parts) != 3 or not re.match(r"^\(.*\)$", parts[2], flags=re.S):
                aliases["CFUNCTIONS"].append((where, None, None, None))
                continue
            arg_types = [parse_julia_type(t) for t in split_top(parts[2][1:-1])]
            aliases["CFUNCTIONS"].append((where, parts[0].strip(), parse_julia_type(parts[1]), arg_types))
        # Function-pointer types (callback typedefs) are plain pointers to Julia.
        aliases.update(re.findall(r"^\s*const\s+(lh_\w+)\s*=\s*(Ptr\{Cvoid\})\s*$", code, flags=re.M))
        for m in re.finditer(r"\bccall\s*\(", code):
            where = "%s:%d" % (os.path.basename(path), code.count("\n", 0, m.start()) + 1)
            parts = split_top(balanced(code, m.end() - 1))
            sym = re.search(r":(\w+)", parts[0]) if parts else None
            if len(parts) < 3 or not sym or not re.match(r"^\(.*\)$", parts[2], flags=re.S):
                calls.append((where, None, None, None, None))
                continue
            arg_types = [parse_julia_type(t) for t in split_top(parts[2][1:-1])]
            calls.append((where, sym.group(1), parse_julia_type(parts[1]), arg_types, len(parts) - 3))
        for name, expr in re.findall(r"^\s*const\s+(LH_\w+)\s*=\s*([^\n]+)", code, flags=re.M):
            constants[name] = evaluate(expr, constants)
        aliases.update(re.findall(r"^\s*const\s+(lh_\w+)\s*=\s*(\w+)\s*$", code, flags=re.M))
        table = re.search(r"^\s*const\s+FUNCTIONS\s*=\s*\((.*?)\)", code, flags=re.M | re.S)
        if table:
            aliases["FUNCTIONS"] = re.findall(r":(\w+)", table.group(1))
    return calls, constants, aliases


# ---- checks ----------------------------------------------------------------------------------

def check_signature(where, what, got, want, with_const):
    """Errors for a prototype `got` (ret, [args]) that differs from the header's `want`."""
    norm = (lambda t: t) if with_const else strip_const
    (got_ret, got_args), (want_ret, want_args) = got, want
    if len(got_args) != len(want_args):
        return [f"{where}: {what} takes {len(want_args)} arguments in lighthouse.h, here {len(got_args)}"]
    errors = []
    if norm(got_ret) != norm(want_ret):
        errors.append(f"{where}: {what} returns {show(want_ret)} in lighthouse.h, here {show(got_ret, with_const)}")
    for i, (g, w) in enumerate(zip(got_args, want_args)):
        if norm(g) != norm(w):
            errors.append(f"{where}: {what} argument {i + 1} is {show(w)} in lighthouse.h, here {show(g, with_const)}")
    return errors


def check_cfunctions(header, cfunctions):
    """Every @cfunction whose callable is named <typedef>_trampoline has the typedef's prototype,
    and every callback typedef of the header has such a trampoline."""
    callbacks = header[4]
    errors, seen = [], set()
    for where, callable_, ret, args in cfunctions:
        if callable_ is None:
            errors.append(f"{where}: cannot read this @cfunction (expected @cfunction(f, Ret, (Args...,)))")
            continue
        name = max((c for c in callbacks if callable_.startswith(c + "_")), key=len, default=None)
        if name is None:
            errors.append(f"{where}: @cfunction of {callable_}, not named <callback typedef>_trampoline")
            continue
        seen.add(name)
        errors += check_signature(where, f"callback {name}", (ret, args), callbacks[name], False)
    for name in sorted(set(callbacks) - seen):
        errors.append(f"Julia: no @cfunction trampoline for the callback type {name}")
    return errors


def check_ccalls(header, calls, julia_aliases):
    functions, _, enums, structs, callbacks = header
    aliases = {k: v for k, v in julia_aliases.items() if k not in ("FUNCTIONS", "CFUNCTIONS")}
    errors = check_aliases("Julia", aliases, enums, structs, {"Cint", "Int32"}, {"Cvoid", "Nothing"})
    for name, target in aliases.items():
        if name in callbacks and target != "Ptr{Cvoid}":
            errors.append(f"Julia: callback type {name} is declared as {target}, not Ptr{{Cvoid}}")
        if target == "Ptr{Cvoid}" and name not in callbacks:
            errors.append(f"Julia: {name} is declared as a function pointer but lighthouse.h has no such callback type")
    errors += check_cfunctions(header, julia_aliases.get("CFUNCTIONS", []))
    for where, name, ret, args, nvalues in calls:
        if name is None:
            errors.append(f"{where}: cannot read this ccall (expected ccall(<... :lh_name ...>, Ret, (Args...,), values...))")
            continue
        if name not in functions:
            errors.append(f"{where}: ccall of {name}, which lighthouse.h does not declare")
            continue
        want_ret, want_args = functions[name]
        if nvalues != len(args):
            errors.append(f"{where}: {name}: {len(args)} argument types but {nvalues} values")
        if len(args) != len(want_args):
            errors.append(f"{where}: {name} takes {len(want_args)} arguments in lighthouse.h, the ccall passes {len(args)}")
            continue
        if strip_const(ret) != strip_const(want_ret):
            errors.append(f"{where}: {name} returns {show(want_ret)} in lighthouse.h, the ccall says {show(ret, False)}")
        for i, (got, want) in enumerate(zip(args, want_args)):
            if strip_const(got) != strip_const(want):
                errors.append(f"{where}: {name} argument {i + 1} is {show(want)} in lighthouse.h, the ccall says {show(got, False)}")
    return errors


def check_aliases(lang, aliases, enums, structs, int_names, opaque_names):
    """Enum aliases must be 32-bit ints and handle aliases opaque, or name comparison means nothing."""
    errors = []
    for name, target in aliases.items():
        target = target.split("::")[-1]
        if name in enums and target not in int_names:
            errors.append(f"{lang}: enum {name} is declared as {target}, not a 32-bit int")
        if name in structs and target not in opaque_names:
            errors.append(f"{lang}: handle {name} is declared as {target}, not opaque")
    return errors


def check_coverage(header, rust, julia_calls, julia_constants, julia_aliases):
    functions, constants, enums, structs, callbacks = header
    rust_functions, rust_constants, rust_aliases, rust_structs, rust_callbacks = rust
    errors = check_aliases("Rust", rust_aliases, enums, structs, {"c_int", "i32"}, set())
    for name, want in sorted(callbacks.items()):
        if name not in rust_callbacks:
            errors.append(f"Rust: lighthouse-sys does not declare the callback type {name}")
        elif rust_callbacks[name] is None:
            errors.append(f'Rust: callback type {name} must be Option<unsafe extern "C" fn(..) -> ..>')
        else:
            errors += check_signature("Rust", f"callback type {name}", rust_callbacks[name], want, True)
    for name in sorted(set(rust_callbacks) - set(callbacks)):
        errors.append(f"Rust: lighthouse-sys declares the callback type {name}, which lighthouse.h does not")
    for name in sorted(enums | structs | set(callbacks)):
        if name not in rust_aliases and name not in rust_structs and name not in rust_callbacks:
            errors.append(f"Rust: lighthouse-sys does not declare the type {name}")
        if name not in julia_aliases:
            errors.append(f"Julia: the package does not declare the type {name}")
    called = {c[1] for c in julia_calls if c[1]}
    table = set(julia_aliases.get("FUNCTIONS", []))
    for name in sorted(set(functions) - table):
        errors.append(f"Julia: {name} is missing from the FUNCTIONS table of capi.jl")
    for name in sorted(table - set(functions)):
        errors.append(f"Julia: the FUNCTIONS table lists {name}, which lighthouse.h does not declare")
    for name, (ret, args) in sorted(functions.items()):
        if name not in rust_functions:
            errors.append(f"Rust: lighthouse-sys does not declare {name}")
        else:
            got_ret, got_args = rust_functions[name]
            want = f"{show(ret)} {name}({', '.join(show(a) for a in args)})"
            got = f"{show(got_ret)} {name}({', '.join(show(a) for a in got_args)})"
            if (got_ret, got_args) != (ret, args):
                errors.append(f"Rust: lighthouse.h has {want} but lighthouse-sys declares {got}")
        if name not in called:
            errors.append(f"Julia: no ccall of {name}")
    for name in sorted(set(rust_functions) - set(functions)):
        errors.append(f"Rust: lighthouse-sys declares {name}, which lighthouse.h does not")
    for lang, have in (("Rust", rust_constants), ("Julia", julia_constants)):
        for name, value in sorted(constants.items()):
            if name not in have:
                errors.append(f"{lang}: constant {name} (= {value}) is missing")
            elif have[name] != value:
                errors.append(f"{lang}: constant {name} is {have[name]}, lighthouse.h says {value}")
        for name in sorted(set(have) - set(constants)):
            errors.append(f"{lang}: constant {name} is not in lighthouse.h")
    return errors


def load(header_path, rust_path, julia_dir):
    read = lambda p: open(p, encoding="utf-8").read()
    julia = {p: read(p) for p in julia_files(julia_dir)}
    return read(header_path), (read(rust_path) if rust_path else None), julia


def run_all(header_text, rust_text, julia_sources, python_text=None):
    header = parse_header(header_text)
    calls, jconst, jalias = parse_julia(julia_sources)
    errors = check_ccalls(header, calls, jalias)
    if rust_text is not None:
        errors += check_coverage(header, parse_rust(rust_text), calls, jconst, jalias)
    if python_text is not None:
        from check_python_binding import check_python  # it imports this module's parsers
        errors += check_python(header, python_text)
    return errors, header, calls


def selftest(header_text, rust_text, julia_sources, python_text=None):
    """Each mutation must be reported; the unmutated sources must pass. With the Python binding's
    _capi.py, every header mutation but a constness one (ctypes has none) must also be caught by
    its check alone, and so must the mutations of _capi.py itself."""
    errors, _, _ = run_all(header_text, rust_text, julia_sources, python_text)
    if errors:
        return ["the unmutated sources already fail: " + errors[0]]
    header_mutations = {
        "a new function": header_text.replace("#ifdef __cplusplus\n}", "LH_API lh_status lh_plan_reset(lh_plan *plan);\n#ifdef __cplusplus\n}"),
        "an argument's type": header_text.replace("lh_param param, double value)", "lh_param param, float value)"),
        "an argument's constness": header_text.replace("lh_status lh_plan_get_i64(const lh_plan *plan", "lh_status lh_plan_get_i64(lh_plan *plan"),
        "an argument fewer": re.sub(r"(lh_scatter\([^)]*?),\s*void \*stream\)", r"\1)", header_text, flags=re.S),
        "a return type": header_text.replace("LH_API int lh_version_number(void)", "LH_API int64_t lh_version_number(void)"),
        "an enum value": header_text.replace("LH_ERROR_INTERNAL = 21", "LH_ERROR_INTERNAL = 22"),
        "a new enum value": header_text.replace("LH_QUERY_RANK = 11", "LH_QUERY_RANK = 11,\n    LH_QUERY_RING_BYTES = 12"),
        "a new callback type": header_text.replace("#ifdef __cplusplus\n}", "typedef void (*lh_log_hook)(void *user_data, const char *message);\n#ifdef __cplusplus\n}"),
        "a callback's argument type": header_text.replace("float *lse, void *stream);", "double *lse, void *stream);"),
        "a callback's argument constness": header_text.replace("void *dv_sel, void *stream);", "const void *dv_sel, void *stream);"),
        "a callback's argument count": header_text.replace("float *lse, void *stream);", "float *lse);"),
        "a callback's return type": header_text.replace("typedef lh_status (*lh_attention_forward_hook)", "typedef int64_t (*lh_attention_forward_hook)"),
    }
    failures = []
    for what, mutated in header_mutations.items():
        if mutated == header_text:
            failures.append(f"selftest: the mutation '{what}' did not apply (update the selftest)")
        elif not run_all(mutated, rust_text, julia_sources, python_text)[0]:
            failures.append(f"selftest: changing {what} in lighthouse.h went unnoticed")
        elif python_text is not None and "constness" not in what and not run_all(mutated, None, {}, python_text)[0]:
            failures.append(f"selftest: changing {what} in lighthouse.h went unnoticed by the Python check")
    if python_text is not None:
        import check_python_binding
        failures += check_python_binding.selftest(header_text, python_text)
    # A ccall with an argument type dropped must be caught by the ccall check alone.
    path, text = next((p, t) for p, t in julia_sources.items() if "ccall(" in t and "Ptr{lh_plan}, " in t)
    broken = dict(julia_sources)
    broken[path] = text.replace("Ptr{lh_plan}, ", "", 1)
    if not run_all(header_text, None, broken)[0]:
        failures.append("selftest: a ccall with a dropped argument type went unnoticed")
    # Likewise a hook trampoline's @cfunction with an argument type dropped.
    path, text = next(((p, t) for p, t in julia_sources.items() if "@cfunction(" in t), (None, None))
    if path is None:
        failures.append("selftest: no @cfunction in the Julia package (update the selftest)")
    else:
        at = text.index("@cfunction(")
        broken = dict(julia_sources)
        broken[path] = text[:at] + text[at:].replace("Ptr{Cvoid}, ", "", 1)
        if not run_all(header_text, None, broken)[0]:
            failures.append("selftest: a @cfunction with a dropped argument type went unnoticed")
    return failures


def main(argv):
    if len(argv) < 4 or argv[1] not in ("ccalls", "coverage", "selftest"):
        print(__doc__)
        return 2
    mode = argv[1]
    if mode == "ccalls":
        header_text, rust_text, julia = load(argv[2], None, argv[3])
    else:
        header_text, rust_text, julia = load(argv[2], argv[3], argv[4])
    # an optional last argument: the Python binding's ctypes declarations (_capi.py)
    python_text = open(argv[5], encoding="utf-8").read() if mode != "ccalls" and len(argv) > 5 else None
    if mode == "selftest":
        failures = selftest(header_text, rust_text, julia, python_text)
        for f in failures:
            print(f)
        print("selftest: %s" % ("FAILED" if failures else "every mutation was caught"))
        return 1 if failures else 0
    errors, header, calls = run_all(header_text, rust_text, julia, python_text)
    for e in errors:
        print(e)
    summary = f"{len(header[0])} functions in lighthouse.h, {len(calls)} ccalls in {len(julia)} Julia files"
    if python_text is not None:
        summary += ", the Python binding's _capi.py"
    print(("FAILED: %d problems; " % len(errors) if errors else "OK: ") + summary)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
