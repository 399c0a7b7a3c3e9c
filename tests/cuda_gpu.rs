//! The CUDA backend on a real GPU against the CPU backend: the kernel checks of `cuda_checks` (as under
//! emulation) and whole streams, tiny and GPT-2-small-shaped. They need a GPU, so they are `#[ignore]`d in
//! `cargo test` (reported as ignored, never as passed); `scripts/gpu-check.sh` runs them with `--ignored`.

mod common;
mod cuda_checks;

use cuda_checks::{compare_streams, tiny_model, PRECISIONS};
use rmt_fast::backend::cuda::{Gpu, Precision};
use rmt_fast::{Config, Engine, Model};

fn gpu(p: Precision) -> Gpu {
    Gpu::new(0, p).unwrap_or_else(|e| panic!("these tests need a GPU: {e}"))
}

fn engine(model: &Model, p: Precision) -> Engine {
    Engine::cuda(model.clone(), p).unwrap_or_else(|e| panic!("these tests need a GPU: {e}"))
}

#[test]
#[ignore = "needs a GPU: scripts/gpu-check.sh"]
fn gpu_kernels_match_the_cpu() {
    for p in PRECISIONS {
        eprintln!("{}", gpu(p).describe());
        cuda_checks::layernorm(gpu(p));
        cuda_checks::matmul_kernels(gpu(p));
        cuda_checks::attention(gpu(p));
        cuda_checks::retrieval(gpu(p));
        cuda_checks::embed(gpu(p));
        cuda_checks::associative(gpu(p));
    }
}

#[test]
#[ignore = "needs a GPU: scripts/gpu-check.sh"]
fn gpu_tiny_streams_match_the_cpu() {
    for memory in [
        r#"{"kind": "rmt", "num_mem_tokens": 4, "segment_size": 16}"#,
        r#"{"kind": "rmt-r", "num_mem_tokens": 4, "segment_size": 12, "retrieval": "v1"}"#,
        r#"{"kind": "rmt-r", "num_mem_tokens": 4, "segment_size": 12, "retrieval": "v2"}"#,
    ] {
        let model = tiny_model(memory, 7);
        compare_streams(&model, 30, 7, [(Precision::F32, engine(&model, Precision::F32))]);
        // bf16 rounding compounds through the recurrence (this model on an H200: 7.9e-3 after one segment,
        // 1.03e-2 after six), so its 1e-2 bound is checked over 4 segments, as under emulation
        compare_streams(&model, 4, 7, [(Precision::Bf16, engine(&model, Precision::Bf16))]);
    }
    let model = cuda_checks::tiny_armt(7);
    compare_streams(&model, 30, 7, [(Precision::F32, engine(&model, Precision::F32))]);
    compare_streams(&model, 4, 7, [(Precision::Bf16, engine(&model, Precision::Bf16))]);
    cuda_checks::batched_streams(&model, engine(&model, Precision::F32));
    let decayed = cuda_checks::decayed(model);
    compare_streams(&decayed, 30, 7, [(Precision::F32, engine(&decayed, Precision::F32))]);
    let model = tiny_model(r#"{"kind": "rmt", "num_mem_tokens": 4, "segment_size": 16}"#, 3);
    cuda_checks::batched_streams(&model, engine(&model, Precision::F32));
}

/// GPT-2 small (12 × 768, 12 heads of 64), RMT and RMT-R v2 with 16 memory tokens and segments of 512: memory
/// after each of 8 segments, the answer, and the memory after all 8 read at once, against the exact CPU reference.
/// One stream of 544-row segments: attention splits its keys (and its decode rows') across blocks.
#[test]
#[ignore = "needs a GPU: scripts/gpu-check.sh"]
fn gpu_gpt2_small_streams_match_the_cpu() {
    for memory in [
        r#"{"kind": "rmt", "num_mem_tokens": 16, "segment_size": 512}"#,
        r#"{"kind": "rmt-r", "num_mem_tokens": 16, "segment_size": 512, "retrieval": "v2"}"#,
    ] {
        let cfg = Config::from_json(&format!(
            r#"{{"n_layer": 12, "n_head": 12, "n_embd": 768, "vocab_size": 50257, "n_positions": 1024,
                "memory": {memory}}}"#
        ))
        .unwrap();
        let model = Model::random(cfg, 11).unwrap();
        compare_streams(&model, 8, 11, PRECISIONS.map(|p| (p, engine(&model, p))));
    }
}

/// The bundled default (an ARMT trained here, 4 layers × 128, segments of 128): its associative state after each
/// of 16 segments in f32 and 8 in bf16, and the answers, against the exact CPU reference. Run from the repository
/// root (as cargo and gpu-check.sh do).
#[test]
#[ignore = "needs a GPU: scripts/gpu-check.sh"]
fn gpu_bundled_default_matches_the_cpu() {
    let model = Model::load("models/default.safetensors").unwrap();
    compare_streams(&model, 16, 13, [(Precision::F32, engine(&model, Precision::F32))]);
    compare_streams(&model, 8, 13, [(Precision::Bf16, engine(&model, Precision::Bf16))]);
}
