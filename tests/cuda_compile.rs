//! Every kernel compiles with NVRTC for sm_80 (A100) and sm_90a (H100), in both precisions, with no register
//! spills and no stack frame (ENGINEERING §4); the registers per kernel are printed. NVRTC comes from the pinned wheels that
//! `scripts/install-nvrtc.sh` installs (`.ci/run` does); without it this test fails and says so.

use rmt_fast::backend::cuda::{nvrtc, Precision};

#[test]
fn every_kernel_compiles_for_ampere_and_hopper_without_spills() {
    assert!(nvrtc::available(), "NVRTC not found: run scripts/install-nvrtc.sh (see README)");
    let kernels = nvrtc::kernel_names();
    for arch in ["sm_80", "sm_90a"] {
        for precision in [Precision::Bf16, Precision::F32] {
            let compiled = nvrtc::compile(arch, precision).unwrap_or_else(|e| panic!("{e}"));
            assert!(!compiled.cubin.is_empty());
            let usage = compiled.usage();
            for name in &kernels {
                let k = usage
                    .iter()
                    .find(|u| u.name == *name)
                    .unwrap_or_else(|| panic!("{arch} {precision:?}: no ptxas report for {name}:\n{}", compiled.log));
                eprintln!(
                    "{arch} {precision:?} {name:<20} {:>3} registers, {} B stack, {} B spill stores, {} B spill loads",
                    k.registers, k.stack_bytes, k.spill_store_bytes, k.spill_load_bytes
                );
                assert_eq!((k.spill_store_bytes, k.spill_load_bytes), (0, 0), "{arch} {precision:?} {name} spills");
                // a stack frame means an array that lives in local memory instead of registers
                assert_eq!(k.stack_bytes, 0, "{arch} {precision:?} {name} keeps an array in local memory");
                assert!(k.registers > 0, "{arch} {precision:?} {name}: register count parsed");
            }
        }
    }
}

/// The report parser sees spills when ptxas reports them (the check above can fail).
#[test]
fn the_ptxas_report_parser_reads_spills() {
    let log = "ptxas info    : Compiling entry function 'k' for 'sm_90a'\n\
               ptxas info    : Function properties for k\n\
               \x20   16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads\n\
               ptxas info    : Used 255 registers, used 1 barriers, 4096 bytes smem, 400 bytes cmem[0]\n";
    let usage = nvrtc::Compiled { cubin: vec![], log: log.into() }.usage();
    let k = &usage[0];
    assert_eq!(
        (k.name.as_str(), k.registers, k.stack_bytes, k.spill_store_bytes, k.spill_load_bytes),
        ("k", 255, 16, 8, 12)
    );
}

/// `rmt-fast kernels` writes the CUBINs where the GPU backend looks them up (so a GPU machine needs no NVRTC),
/// and reports every kernel.
#[test]
fn the_kernels_command_fills_a_cache() {
    let dir = std::env::temp_dir().join(format!("rmt-fast-kernels-{}", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rmt-fast"))
        .args(["kernels", "--arch", "sm_80", "-o", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).unwrap();
    for name in nvrtc::kernel_names() {
        assert_eq!(table.matches(&format!("| {name} |")).count(), 2, "{name} in both precisions");
    }
    for precision in [Precision::Bf16, Precision::F32] {
        let file = nvrtc::cubin_file(&dir, "sm_80", precision);
        assert!(std::fs::metadata(&file).is_ok_and(|m| m.len() > 0), "{} written", file.display());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
