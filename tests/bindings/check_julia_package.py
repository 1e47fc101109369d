#!/usr/bin/env python3
"""Static checks of the Julia package's layout, for machines without Julia (Python 3 stdlib only).

  check_julia_package.py check    JULIA_DIR   the package as Pkg and the loader expect it
  check_julia_package.py selftest JULIA_DIR   mutates the package in memory and expects each
                                              mutation to be caught

What `check` verifies (each is something Julia would only report when the package is loaded):
  - Project.toml: name and UUID; every dependency's UUID is the General registry's (a table below,
    kept by hand: a wrong UUID makes Pkg resolve another package or none); a weak dependency is
    not also a strong one; a [compat] entry for every dependency that is not a standard library,
    and julia >= 1.9 once there are [extensions]; the test target names only [extras]/[deps].
  - Extensions: each [extensions] entry names weak dependencies; its file is ext/NAME.jl (or
    ext/NAME/NAME.jl) and defines `module NAME`; it loads only the package, its trigger packages
    and the package's dependencies; every ext/ file is an extension and every weak dependency
    triggers one.
  - Names: src/ loads only [deps]; every exported name is defined in src/; every `Pkg.name`
    that ext/ and test/ use or extend, and every name they import with `using Pkg: a, b`, is
    defined in src/.
"""
import os
import re
import sys

from check_bindings import balanced, strip_julia_comments

try:
    import tomllib
except ImportError:  # Python < 3.11: the small subset Project.toml uses
    tomllib = None

# name -> UUID in the General registry (or the standard library), for every package the
# Project.toml may name. Add a package's UUID here, from its own Project.toml, when adding it.
KNOWN_UUIDS = {
    "CUDA": "052768ef-5323-5732-b1bb-66c8b64840ba",
    "ChainRulesCore": "d360d2e6-b24c-11e9-a2a3-2a2ae2dbcce4",
    "Libdl": "8f399da3-3557-5675-b5ff-fb832c97cbdb",
    "Preferences": "21216c6a-2e73-6563-6e65-726566657250",
    "Test": "8dfed614-e22c-5e08-85e1-65c5234f0b40",
}
STDLIBS = {"Base", "Core", "Libdl", "Test", "LinearAlgebra", "Random", "TOML", "Printf"}
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def parse_toml(text):
    if tomllib is not None:
        return tomllib.loads(text)
    data, table = {}, None
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"\[([\w.]+)\]", line)
        if m:
            table = data.setdefault(m.group(1), {})
            continue
        key, value = (x.strip() for x in line.split("=", 1))
        value = re.findall(r'"([^"]*)"', value) if value.startswith("[") else value.strip('"')
        (data if table is None else table)[key.strip('"')] = value
    return data


def load(julia_dir):
    """{path relative to the package: text} of Project.toml and every .jl file."""
    files = {}
    for root, _, names in os.walk(julia_dir):
        for name in names:
            if name.endswith(".jl") or name == "Project.toml":
                path = os.path.join(root, name)
                with open(path, encoding="utf-8") as f:
                    files[os.path.relpath(path, julia_dir)] = f.read()
    return files


def used_packages(code):
    """Packages a file loads: `using A, B`, `using A: x`, `import A`, `import A.x`."""
    names = set()
    for m in re.finditer(r"^\s*(?:using|import)\s+([^\n]+)", code, flags=re.M):
        clause = m.group(1)
        if ":" in clause:
            clause = clause.split(":", 1)[0]
        for part in clause.split(","):
            part = part.strip().split(".")[0].strip()
            if part:
                names.add(part)
    return names


def imported_names(code, package):
    """Names a file imports from `package` with `using Package: a, b` (possibly over lines)."""
    names = set()
    for m in re.finditer(r"^\s*(?:using|import)\s+%s\s*:\s*((?:[^\n]*,\s*\n)*[^\n]*)" % package,
                         code, flags=re.M):
        names.update(n.strip() for n in m.group(1).replace("\n", " ").split(",") if n.strip())
    return names


def definitions(code):
    """Names a file defines at any level: functions (long and short form), types, constants,
    macros, and methods it adds to another module's function (`Mod.f(...) = ...`)."""
    names = set()
    for m in re.finditer(r"^\s*(?:function|macro)\s+(?:\w+\.)?([\w!]+)", code, flags=re.M):
        names.add(m.group(1))
    for m in re.finditer(r"^\s*(?:mutable\s+)?struct\s+(\w+)|^\s*abstract\s+type\s+(\w+)|"
                         r"^\s*const\s+(\w+)", code, flags=re.M):
        names.add(next(g for g in m.groups() if g))
    # Short form: `name(args) = body` or `Mod.name(args) where {T} = body` at a line's start.
    for m in re.finditer(r"^[ \t]*((?:\w+\.)?[\w!]+)(?:\{[^}\n]*\})?\(", code, flags=re.M):
        try:
            inside = balanced(code, m.end() - 1)
        except ValueError:
            continue
        rest = code[m.end() + len(inside) + 1:]
        if re.match(r"\s*(?:::\s*[\w{}.,]+\s*)?(?:where\s*(?:\{[^}]*\}|\w+)\s*)*=(?!=)", rest):
            names.add(m.group(1).split(".")[-1])
    return names


def strip_strings(code):
    """The code without its string literals (docstrings included)."""
    code = re.sub(r'""".*?"""', '""', code, flags=re.S)
    return re.sub(r'"(?:[^"\\\n]|\\.)*"', '""', code)


def qualified_uses(code, package):
    """Names used as `Package.name` (a function extended, called or read) outside strings."""
    return set(re.findall(r"\b%s\.([A-Za-z_][\w!]*)" % package, strip_strings(code)))


def check(files):
    errors = []
    if "Project.toml" not in files:
        return ["no Project.toml"]
    try:
        project = parse_toml(files["Project.toml"])
    except Exception as e:  # a syntax error in Project.toml
        return [f"Project.toml does not parse: {e}"]
    pkg = project.get("name", "")
    if not pkg or not UUID_RE.match(project.get("uuid", "")):
        errors.append("Project.toml: the package needs a name and a UUID")
    deps, weak = project.get("deps", {}), project.get("weakdeps", {})
    extras, compat = project.get("extras", {}), project.get("compat", {})
    extensions = project.get("extensions", {})
    for table, entries in (("deps", deps), ("weakdeps", weak), ("extras", extras)):
        for name, uuid in entries.items():
            if name not in KNOWN_UUIDS:
                errors.append(f"Project.toml [{table}]: {name} is not in KNOWN_UUIDS of this "
                              "checker (add its UUID from the package's own Project.toml)")
            elif uuid != KNOWN_UUIDS[name]:
                errors.append(f"Project.toml [{table}]: {name} = {uuid}, but its UUID is "
                              f"{KNOWN_UUIDS[name]}")
    for name in sorted(set(weak) & set(deps)):
        errors.append(f"Project.toml: {name} is both a dependency and a weak dependency")
    for name in sorted((set(deps) | set(weak)) - STDLIBS - set(compat)):
        errors.append(f"Project.toml [compat]: no entry for {name}")
    julia = re.match(r"\s*\^?(\d+)\.(\d+)", compat.get("julia", ""))
    if not julia:
        errors.append("Project.toml [compat]: no julia entry")
    elif extensions and (int(julia.group(1)), int(julia.group(2))) < (1, 9):
        errors.append(f"Project.toml [compat]: julia = {compat['julia']}, but package "
                      "extensions need 1.9")
    for target, names in project.get("targets", {}).items():
        for name in names:
            if name not in extras and name not in deps:
                errors.append(f"Project.toml [targets] {target}: {name} is not in [extras]")

    code = {path: strip_julia_comments(text) for path, text in files.items() if path.endswith(".jl")}
    src = {p: c for p, c in code.items() if p.startswith("src" + os.sep)}
    defined = set().union(*(definitions(c) for c in src.values())) if src else set()
    triggering = set()
    for ext, triggers in extensions.items():
        triggers = [triggers] if isinstance(triggers, str) else list(triggers)
        for t in triggers:
            if t not in weak and t not in deps:
                errors.append(f"[extensions] {ext}: {t} is neither in [weakdeps] nor in [deps]")
        triggering.update(triggers)
        path = next((p for p in (os.path.join("ext", ext + ".jl"),
                                 os.path.join("ext", ext, ext + ".jl")) if p in code), None)
        if path is None:
            errors.append(f"[extensions] {ext}: no file ext/{ext}.jl (or ext/{ext}/{ext}.jl)")
            continue
        if not re.search(r"^\s*module\s+%s\s*$" % re.escape(ext), code[path], flags=re.M):
            errors.append(f"{path}: does not define `module {ext}`")
        allowed = {pkg} | set(triggers) | set(deps) | STDLIBS
        for used in sorted(used_packages(code[path]) - allowed):
            errors.append(f"{path}: loads {used}, which is not the package, a trigger of {ext} "
                          "or a dependency")
    for path in sorted(code):
        if path.startswith("ext" + os.sep):
            name = os.path.splitext(os.path.basename(path))[0]
            if name not in extensions and os.path.dirname(path) in ("ext", os.path.join("ext", name)):
                errors.append(f"{path}: not listed in [extensions]")
    for name in sorted(set(weak) - triggering):
        errors.append(f"[weakdeps] {name} triggers no extension")

    for path, c in sorted(src.items()):
        for used in sorted(used_packages(c) - set(deps) - {"Base", "Core"}):
            errors.append(f"{path}: loads {used}, which is not in [deps]")
    main_file = os.path.join("src", pkg + ".jl")
    exported = set()
    for m in re.finditer(r"^\s*export\s+((?:[^\n]*,\s*\n)*[^\n]*)", code.get(main_file, ""),
                         flags=re.M):
        exported.update(n.strip() for n in m.group(1).replace("\n", " ").split(",") if n.strip())
    if main_file not in code:
        errors.append(f"no {main_file}")
    for name in sorted(exported - defined):
        errors.append(f"{main_file}: exports {name}, which src/ does not define")
    for path, c in sorted(code.items()):
        if path.startswith("src" + os.sep):
            continue
        for name in sorted((qualified_uses(c, pkg) | imported_names(c, pkg)) - defined):
            errors.append(f"{path}: uses {pkg}.{name}, which src/ does not define")
    return errors


def selftest(files):
    """Each mutation must be reported; the unmutated package must pass."""
    failures = [f"the unmutated package already fails: {e}" for e in check(files)[:1]]
    project = files["Project.toml"]
    ext_files = sorted(p for p in files if p.startswith("ext" + os.sep))
    if not ext_files:
        return failures + ["selftest: the package has no extension (update the selftest)"]
    ext = ext_files[0]
    name = os.path.splitext(os.path.basename(ext))[0]
    main_file = next(p for p in files if p.startswith("src" + os.sep) and
                     re.search(r"^export ", files[p], flags=re.M))
    mutations = {
        "an extension's file renamed": lambda f: {**{k: v for k, v in f.items() if k != ext},
                                                  ext.replace(name, name + "X"): f[ext]},
        "an extension's module renamed": lambda f: {**f, ext: f[ext].replace(
            "module " + name, "module " + name + "X")},
        "a weak dependency dropped": lambda f: {**f, "Project.toml": re.sub(
            r"\[weakdeps\]\n[^\n]*\n", "[weakdeps]\n", project)},
        "julia compat below 1.9": lambda f: {**f, "Project.toml": re.sub(
            r'julia = "[^"]*"', 'julia = "1.6"', project)},
        "a wrong UUID": lambda f: {**f, "Project.toml": project.replace(
            KNOWN_UUIDS["Preferences"], "3" + KNOWN_UUIDS["Preferences"][1:])},
        "a dependency without compat": lambda f: {**f, "Project.toml": re.sub(
            r'\nPreferences = "1"', "", project)},
        "an export of an undefined name": lambda f: {**f, main_file: f[main_file].replace(
            "\nexport ", "\nexport no_such_function, ", 1)},
        "an extension using an undefined name": lambda f: {**f, ext: f[ext].replace(
            "\nend", "\nno_such_name() = Lighthouse.no_such_name\nend", 1)},
        "a package loaded but not a dependency": lambda f: {**f, ext: f[ext].replace(
            "\nusing ", "\nusing Statistics\nusing ", 1)},
    }
    for what, mutate in mutations.items():
        mutated = mutate(files)
        if mutated == files:
            failures.append(f"selftest: the mutation '{what}' did not apply (update the selftest)")
        elif not check(mutated):
            failures.append(f"selftest: {what} went unnoticed")
    return failures


def main(argv):
    if len(argv) != 3 or argv[1] not in ("check", "selftest"):
        print(__doc__)
        return 2
    files = load(argv[2])
    if argv[1] == "selftest":
        failures = selftest(files)
        for f in failures:
            print(f)
        print("selftest: %s" % ("FAILED" if failures else "every mutation was caught"))
        return 1 if failures else 0
    errors = check(files)
    for e in errors:
        print(e)
    extensions = parse_toml(files["Project.toml"]).get("extensions", {}) if "Project.toml" in files else {}
    summary = "%d files, extensions: %s" % (len(files), ", ".join(sorted(extensions)) or "none")
    print(("FAILED: %d problems; " % len(errors) if errors else "OK: ") + summary)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
