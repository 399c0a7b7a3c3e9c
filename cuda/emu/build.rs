//! Compiles every kernel in `../*.cu` (and the emulator's own `selftest.cu`) as C++ against the emulation header,
//! once per precision, and generates the kernel registry from the sources (every `KERNEL void name(`), so a new
//! kernel cannot be forgotten.

use std::fmt::Write;
use std::path::{Path, PathBuf};

fn main() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let cuda = here.parent().unwrap().to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed={}", cuda.display());
    println!("cargo:rerun-if-changed=emu.h");
    println!("cargo:rerun-if-changed=module.cpp");
    println!("cargo:rerun-if-changed=selftest.cu");

    let mut sources: Vec<PathBuf> = std::fs::read_dir(&cuda)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    sources.sort();
    sources.push(here.join("selftest.cu"));
    let (mut includes, mut registry) = (String::new(), String::new());
    for src in &sources {
        writeln!(includes, "#include {:?}", src.display().to_string()).unwrap();
        for name in kernel_names(src) {
            writeln!(
                registry,
                "{{{name:?}, emu::signature(kernels::{name}), [](void** p) {{ emu::call(kernels::{name}, p); }}}},"
            )
            .unwrap();
        }
    }
    std::fs::write(out.join("kernels.inc"), includes).unwrap();
    std::fs::write(out.join("registry.inc"), registry).unwrap();

    for (lib, entry, f32) in [("emu_f32", "emu_launch_f32", true), ("emu_bf16", "emu_launch_bf16", false)] {
        let mut build = cc::Build::new();
        build.cpp(true).std("c++17").opt_level(2).include(&here).include(&cuda).include(&out);
        build.define("EMU_ENTRY", entry).warnings(false).file(here.join("module.cpp"));
        if f32 {
            build.define("RMT_F32", None);
        }
        build.compile(lib);
    }
}

/// The names in `KERNEL void name(` (or `KERNEL_BOUNDED(threads, blocks) void name(`) declarations.
fn kernel_names(src: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(src).unwrap();
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix("KERNEL")?.split_once("void ").map(|(_, rest)| rest))
        .map(|rest| rest.split('(').next().unwrap().trim().to_string())
        .collect()
}
