#!/usr/bin/env python3
"""Checks the Python binding's ctypes declarations (bindings/python/lighthouse/_capi.py) against
ffi/include/lighthouse.h (Python 3 stdlib only). check_bindings.py runs it as part of `coverage`
and `selftest` when given the file; on its own:

  check_python_binding.py check    HEADER PYTHON_CAPI   every header function is in FUNCTIONS with
                                                        the same return and argument types, every
                                                        enum value and integer #define has the same
                                                        value, every type is declared (enums as
                                                        c_int, handles as opaque Structures,
                                                        callbacks as CFUNCTYPE with the typedef's
                                                        prototype), and nothing else is declared
  check_python_binding.py selftest HEADER PYTHON_CAPI   a dropped argument in FUNCTIONS and in a
                                                        callback must be caught

The file is parsed (ast), never imported. ctypes has no const pointers, so constness is ignored.
"""
import ast
import sys

from check_bindings import base, evaluate, parse_header, ptr, show, strip_const

PY_SCALARS = {
    "c_int": "i32", "c_int32": "i32", "c_int64": "i64", "c_longlong": "i64", "c_double": "f64",
    "c_float": "f32", "c_char": "char", "c_uint8": "u8", "c_size_t": "usize",
}
PY_POINTERS = {"c_void_p": "void", "c_char_p": "char"}


def python_type(expr, env):
    """A ctypes type expression -> the checker's normal form; module-level helper names (_ctx)
    are followed to their definition."""
    if isinstance(expr, ast.Constant) and expr.value is None:
        return base("void")
    if isinstance(expr, ast.Name):
        name = expr.id
        if name.startswith("_") and name in env:
            return python_type(env[name], env)
        if name in PY_POINTERS:
            return ptr(base(PY_POINTERS[name]))
        return ("base", PY_SCALARS.get(name, name), False)
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "POINTER" and len(expr.args) == 1:
        return ptr(python_type(expr.args[0], env))
    return ("base", "?" + ast.unparse(expr), False)


def parse_python(text):
    """-> (functions {name: (ret, [args])}, constants, aliases {name: target}, opaque structs,
    callbacks {name: (ret, [args])}, problems [str])."""
    tree = ast.parse(text)
    env, functions, constants, aliases, structs, callbacks, problems = {}, {}, {}, {}, set(), {}, []
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(isinstance(b, ast.Name) and b.id == "Structure" for b in node.bases):
            fields = [s for s in node.body if isinstance(s, ast.Assign)
                      and any(isinstance(t, ast.Name) and t.id == "_fields_" for t in s.targets)]
            (problems.append(f"Python: {node.name} has _fields_, a handle must be opaque") if fields
             else structs.add(node.name))
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target, value = node.targets[0], node.value
        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
            pairs = [(t.id, v) for t, v in zip(target.elts, value.elts) if isinstance(t, ast.Name)]
        elif isinstance(target, ast.Name):
            pairs = [(target.id, value)]
        else:
            continue
        for name, value in pairs:
            env[name] = value
            if name.startswith("LH_"):
                constants[name] = evaluate(ast.unparse(value), constants)
            elif name.startswith("lh_") and isinstance(value, ast.Name):
                aliases[name] = value.id
            elif (name.startswith("lh_") and isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                  and value.func.id == "CFUNCTYPE"):
                types = [python_type(a, env) for a in value.args]
                callbacks[name] = (types[0], types[1:])
            elif name == "FUNCTIONS":
                for entry in value.elts:
                    if (not isinstance(entry, ast.Tuple) or len(entry.elts) != 3
                            or not isinstance(entry.elts[0], ast.Constant) or not isinstance(entry.elts[2], ast.Tuple)):
                        problems.append(f"Python: cannot read the FUNCTIONS entry {ast.unparse(entry)[:60]}")
                        continue
                    fname, ret, args = entry.elts
                    if fname.value in functions:
                        problems.append(f"Python: {fname.value} is listed twice in FUNCTIONS")
                    functions[fname.value] = (python_type(ret, env), [python_type(a, env) for a in args.elts])
    return functions, constants, aliases, structs, callbacks, problems


def signature(name, ret, args):
    return f"{show(ret, False)} {name}({', '.join(show(a, False) for a in args)})"


def same(got, want):
    return strip_const(got[0]) == strip_const(want[0]) and len(got[1]) == len(want[1]) and all(
        strip_const(g) == strip_const(w) for g, w in zip(got[1], want[1]))


def compare(kind, want, got, where):
    """Every C declaration of `want` declared alike in `got`, and nothing else."""
    errors = []
    for name, prototype in sorted(want.items()):
        if name not in got:
            errors.append(f"Python: {kind} {name} is missing from the {where} of _capi.py")
        elif not same(got[name], prototype):
            errors.append(f"Python: lighthouse.h has the {kind} {signature(name, *prototype)} but _capi.py "
                          f"declares {signature(name, *got[name])}")
    for name in sorted(set(got) - set(want)):
        errors.append(f"Python: the {where} of _capi.py declare the {kind} {name}, which lighthouse.h does not")
    return errors


def check_python(header, text):
    functions, constants, enums, structs, callbacks = header
    py_functions, py_constants, aliases, py_structs, py_callbacks, errors = parse_python(text)
    for name in sorted(enums):
        if aliases.get(name) not in ("c_int", "c_int32"):
            errors.append(f"Python: enum {name} must be declared as c_int, got {aliases.get(name, 'nothing')}")
    for name in sorted(structs - py_structs):
        errors.append(f"Python: handle {name} is not declared as an opaque Structure")
    errors += compare("callback type", callbacks, py_callbacks, "CFUNCTYPE declarations")
    errors += compare("function", functions, py_functions, "FUNCTIONS")
    for name, value in sorted(constants.items()):
        if name not in py_constants:
            errors.append(f"Python: constant {name} (= {value}) is missing")
        elif py_constants[name] != value:
            errors.append(f"Python: constant {name} is {py_constants[name]}, lighthouse.h says {value}")
    for name in sorted(set(py_constants) - set(constants)):
        errors.append(f"Python: constant {name} is not in lighthouse.h")
    return errors


def selftest(header_text, text):
    """Mutations of _capi.py that only the Python check can see; each must be caught."""
    header = parse_header(header_text)
    if check_python(header, text):
        return ["selftest: _capi.py already fails: " + check_python(header, text)[0]]
    mutations = {
        "a dropped argument type in FUNCTIONS": ('("lh_plan_set_i64", lh_status, (_plan, lh_param, c_int64))',
                                                 '("lh_plan_set_i64", lh_status, (_plan, c_int64))'),
        "a callback's dropped argument": ("POINTER(c_float), c_void_p)\nlh_attention_backward_hook",
                                          "POINTER(c_float))\nlh_attention_backward_hook"),
        "a changed constant": ("LH_ERROR_IO = 20", "LH_ERROR_IO = 21"),
        "a wrong return type": ('("lh_version_number", c_int, ())', '("lh_version_number", c_int64, ())'),
    }
    failures = []
    for what, (old, new) in mutations.items():
        if old not in text:
            failures.append(f"selftest: the Python mutation '{what}' did not apply (update the selftest)")
        elif not check_python(header, text.replace(old, new, 1)):
            failures.append(f"selftest: {what} in _capi.py went unnoticed")
    return failures


def main(argv):
    if len(argv) != 4 or argv[1] not in ("check", "selftest"):
        print(__doc__)
        return 2
    header_text, text = (open(p, encoding="utf-8").read() for p in argv[2:4])
    if argv[1] == "selftest":
        failures = selftest(header_text, text)
        print("\n".join(failures + [f"selftest: {'FAILED' if failures else 'every mutation was caught'}"]))
        return 1 if failures else 0
    header = parse_header(header_text)
    errors = check_python(header, text)
    summary = f"{len(header[0])} functions in lighthouse.h, {len(parse_python(text)[0])} in _capi.py's FUNCTIONS"
    print("\n".join(errors + [("FAILED: %d problems; " % len(errors) if errors else "OK: ") + summary]))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
