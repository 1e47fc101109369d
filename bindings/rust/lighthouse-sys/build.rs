//! Finds liblighthouse for the linker, and makes `cargo run` and `cargo test` load that same
//! library. Only the standard library is used.
//!
//! Where it looks, in this order:
//!
//! 1. `LIGHTHOUSE_LIB_DIR`: a directory holding `liblighthouse.so` (a build directory or an
//!    install's `lib/`). Takes precedence, so a developer build never picks up an installed copy.
//! 2. `pkg-config lighthouse`: `lighthouse.pc` is installed to `<prefix>/lib/pkgconfig` (and
//!    written into the build directory); add that directory to `PKG_CONFIG_PATH`.
//!
//! Loading what was linked: the library's files are linked into `OUT_DIR/lib` (symbolic links)
//! and the crate links from there. Cargo puts the link-search directories that lie inside its
//! target directory on the dynamic-library path of `cargo run` and `cargo test`, for this crate
//! and every crate that depends on it, so those commands load the library found above without
//! `LD_LIBRARY_PATH`. This crate's own test and example binaries also get an rpath to the
//! directory. Cargo passes no link arguments on to dependent crates; a binary that must run
//! outside Cargo adds the rpath in its own build script from `DEP_LIGHTHOUSE_LIB_DIR` (see
//! bindings/README.md), or the library is installed where the system loader looks.
//!
//! Cargo's `links = "lighthouse"` also lets a `[target.<triple>.lighthouse]` section of
//! .cargo/config.toml replace this script entirely.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{self, Command};

const WATCHED: [&str; 5] = [
    "LIGHTHOUSE_LIB_DIR",
    "PKG_CONFIG",
    "PKG_CONFIG_PATH",
    "PKG_CONFIG_LIBDIR",
    "PKG_CONFIG_SYSROOT_DIR",
];

fn main() {
    for var in WATCHED {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=build.rs");

    let found = match env::var_os("LIGHTHOUSE_LIB_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => from_lib_dir(PathBuf::from(dir)),
        None => from_pkg_config(),
    };
    match found {
        Ok(found) => emit(&found),
        Err(tried) => {
            eprintln!(
                "error: liblighthouse not found.\n{tried}\n\
                 Set LIGHTHOUSE_LIB_DIR to the directory that holds liblighthouse.so (a build \
                 directory, or <prefix>/lib of an install), or add <prefix>/lib/pkgconfig (the \
                 directory of lighthouse.pc) to PKG_CONFIG_PATH."
            );
            process::exit(1);
        }
    }
}

/// Where the library is, and what else the linker needs.
struct Found {
    /// The directory holding liblighthouse.so (None: the linker's default path, unknown here).
    lib_dir: Option<PathBuf>,
    /// Other link-search directories, libraries and linker flags from pkg-config.
    search: Vec<String>,
    libs: Vec<String>,
    args: Vec<String>,
}

fn holds_library(dir: &Path) -> bool {
    dir.join("liblighthouse.so").exists() || dir.join("liblighthouse.dylib").exists()
}

fn from_lib_dir(dir: PathBuf) -> Result<Found, String> {
    if !holds_library(&dir) {
        return Err(format!(
            "Tried LIGHTHOUSE_LIB_DIR={}: it holds no liblighthouse.so.",
            dir.display()
        ));
    }
    Ok(Found {
        lib_dir: Some(dir),
        search: Vec::new(),
        libs: Vec::new(),
        args: Vec::new(),
    })
}

fn from_pkg_config() -> Result<Found, String> {
    let libs = pkg_config(&["--libs", "lighthouse"]).map_err(|why| {
        let path = env::var("PKG_CONFIG_PATH").unwrap_or_else(|_| "unset".to_string());
        format!(
            "Tried LIGHTHOUSE_LIB_DIR: not set.\n\
             Tried `pkg-config --libs lighthouse` (PKG_CONFIG_PATH: {path}): {why}"
        )
    })?;
    let mut found = Found {
        lib_dir: None,
        search: Vec::new(),
        libs: Vec::new(),
        args: Vec::new(),
    };
    for flag in libs.split_whitespace() {
        if let Some(dir) = flag.strip_prefix("-L") {
            if found.lib_dir.is_none() && holds_library(Path::new(dir)) {
                found.lib_dir = Some(PathBuf::from(dir));
            } else {
                found.search.push(dir.to_string());
            }
        } else if let Some(name) = flag.strip_prefix("-l") {
            if name != "lighthouse" {
                found.libs.push(name.to_string());
            }
        } else {
            found.args.push(flag.to_string());
        }
    }
    if found.lib_dir.is_none() {
        // No -L (a system directory): libdir still says where the file is.
        let libdir = pkg_config(&["--variable=libdir", "lighthouse"]).unwrap_or_default();
        let libdir = PathBuf::from(libdir.trim());
        if holds_library(&libdir) {
            found.lib_dir = Some(libdir);
        }
    }
    Ok(found)
}

/// Runs pkg-config with `args` and returns what it printed.
fn pkg_config(args: &[&str]) -> Result<String, String> {
    let pkg_config = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_string());
    let output = Command::new(&pkg_config)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {pkg_config}: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    String::from_utf8(output.stdout).map_err(|e| format!("pkg-config printed non-UTF-8: {e}"))
}

fn emit(found: &Found) {
    for dir in &found.search {
        println!("cargo:rustc-link-search=native={dir}");
    }
    for lib in &found.libs {
        println!("cargo:rustc-link-lib={lib}");
    }
    for arg in &found.args {
        println!("cargo:rustc-link-arg={arg}");
    }
    if let Some(dir) = &found.lib_dir {
        let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        match link_into_out_dir(&dir) {
            Ok(links) => println!("cargo:rustc-link-search=native={}", links.display()),
            Err(why) => {
                println!(
                    "cargo:warning=cannot link liblighthouse into OUT_DIR ({why}); `cargo run` \
                     needs LD_LIBRARY_PATH={}",
                    dir.display()
                );
                println!("cargo:rustc-link-search=native={}", dir.display());
            }
        }
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
        println!("cargo:lib_dir={}", dir.display());
    }
    println!("cargo:rustc-link-lib=dylib=lighthouse");
}

/// OUT_DIR/lib with a symbolic link to each liblighthouse.so* of `dir` (the linker's name and
/// the soname the loader asks for), replacing the links of an earlier run.
fn link_into_out_dir(dir: &Path) -> Result<PathBuf, String> {
    let out = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?).join("lib");
    if out.exists() {
        fs::remove_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("liblighthouse.") {
            symlink(&entry.path(), &out.join(&name))
                .map_err(|e| format!("{}: {e}", out.join(&name).display()))?;
        }
    }
    Ok(out)
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    fs::copy(target, link).map(|_| ())
}
