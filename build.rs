//! Embeds the CUDA C++ sources in `cuda/` into the library: the CUDA backend compiles them at run time with NVRTC,
//! so building the crate never needs nvcc or a CUDA toolkit (ENGINEERING.md §4).

use std::fmt::Write;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=cuda");
    let mut files: Vec<_> = std::fs::read_dir("cuda")
        .expect("cuda/ directory")
        .map(|e| e.expect("cuda/ entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("cu" | "cuh")))
        .collect();
    files.sort();
    let mut table = String::from("&[\n");
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        let abs = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join(f);
        writeln!(table, "    ({name:?}, include_str!({:?})),", abs.display().to_string()).unwrap();
    }
    table.push(']');
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("cuda_sources.rs");
    std::fs::write(out, table).unwrap();
}
