//! The CPU engine against PyTorch fixtures (HF transformers GPT-2 + the RMT/RMT-R wrapper in
//! `scripts/rmt_reference.py`): memory after every segment, answer logits at every generation step, greedy tokens.
//! Tolerance: normalised error ≤ 1e-5 (f32 on both sides; the measured errors are around 1e-7). Both CPU kernel
//! sets (the exact reference and the fast kernels) are checked.

mod common;

use common::{fixture, rel_err, Expected};
use rmt_fast::convert::{import_pytorch, ConvertOptions};
use rmt_fast::{Device, Engine, Model};

const TOL: f64 = 1e-5;
const MAX_NEW: usize = 10;

/// Checks every fixture case of one model file; returns the largest error seen.
fn check_model(model_file: &str, expected_file: &str) -> f64 {
    check_loaded(Model::load(fixture(model_file)).unwrap(), model_file, expected_file)
}

/// Both CPU kernel sets against the fixture: the reference and the fast kernels.
fn check_loaded(model: Model, model_file: &str, expected_file: &str) -> f64 {
    [Device::CpuReference, Device::Cpu]
        .into_iter()
        .map(|device| check_engine(device, model.clone(), model_file, expected_file))
        .fold(0.0, f64::max)
}

fn check_engine(device: Device, model: Model, model_file: &str, expected_file: &str) -> f64 {
    let engine = Engine::new(model, device);
    let exp = Expected::load(expected_file);
    let cfg = engine.model().config.clone();
    let (seg, md) = (cfg.memory.segment_size, cfg.memory.num_mem_tokens * cfg.n_embd);
    let mut worst = 0.0f64;
    let mut check = |what: String, got: &[f32], want: &[f32]| {
        let e = rel_err(got, want);
        assert!(e <= TOL, "{model_file} on {device:?}, {what}: normalised error {e:.3e} > {TOL:e}");
        worst = worst.max(e);
    };
    let mut case = 0;
    while exp.has(&format!("case{case}.prompt")) {
        let prompt = exp.tokens(&format!("case{case}.prompt"));
        let ctx = &prompt[..prompt.len() - 1];
        assert_eq!(*prompt.last().unwrap(), cfg.gen_token_id);

        // generation path: every chunk but the last writes memory
        let (_, mems) = exp.f32(&format!("case{case}.memories"));
        let writes = (prompt.len() - 1) / seg;
        assert_eq!(mems.len(), writes * md, "case{case}: fixture memory count");
        let mut session = engine.session();
        for s in 0..writes {
            session.read(&ctx[s * seg..(s + 1) * seg]).unwrap();
            check(format!("case{case} memory after segment {s}"), &session.state().memory, &mems[s * md..][..md]);
        }
        let answer = session.ask(&ctx[writes * seg..], MAX_NEW).unwrap();
        let (shape, logits) = exp.f32(&format!("case{case}.logits"));
        assert_eq!(shape[0], answer.logits.len(), "case{case}: generation steps");
        for (i, row) in answer.logits.iter().enumerate() {
            check(format!("case{case} logits of step {i}"), row, &logits[i * cfg.vocab_size..][..cfg.vocab_size]);
        }
        let mut tokens = answer.tokens.clone();
        if answer.stopped_at_eos {
            tokens.push(cfg.eos_token_id);
        }
        assert_eq!(tokens, exp.tokens(&format!("case{case}.tokens")), "case{case}: greedy tokens");

        // training-mode forward: the partial last segment writes memory too
        let (_, train) = exp.f32(&format!("case{case}.train_memories"));
        let mut session = engine.session();
        for (s, chunk) in prompt.chunks(seg).enumerate() {
            session.read(chunk).unwrap();
            session.flush().unwrap();
            check(
                format!("case{case} training memory after segment {s}"),
                &session.state().memory,
                &train[s * md..][..md],
            );
        }
        case += 1;
    }
    assert_eq!(case, 5, "{expected_file}: expected 5 cases");
    worst
}

#[test]
fn rmt_matches_pytorch() {
    let e = check_model("rmt.safetensors", "rmt.expected.safetensors");
    eprintln!("RMT worst normalised error {e:.2e}");
}

#[test]
fn rmt_r_v1_matches_pytorch() {
    let e = check_model("rmt_r_v1.safetensors", "rmt_r_v1.expected.safetensors");
    eprintln!("RMT-R v1 worst normalised error {e:.2e}");
}

#[test]
fn rmt_r_v2_with_untied_head_matches_pytorch() {
    let e = check_model("rmt_r_v2.safetensors", "rmt_r_v2.expected.safetensors");
    eprintln!("RMT-R v2 worst normalised error {e:.2e}");
}

/// A bf16 file is read exactly: it matches PyTorch run with the same bf16-rounded weights to f32 tolerance.
#[test]
fn bf16_file_matches_pytorch_with_rounded_weights() {
    let e = check_model("rmt_bf16.safetensors", "rmt_bf16.expected.safetensors");
    eprintln!("RMT bf16 file worst normalised error {e:.2e}");
}

/// Storing the weights in bf16 moves the answers by a bounded amount: answer logits of the bf16 file stay within
/// 1e-2 normalised error of the f32 model's (bf16 keeps 8 bits of mantissa: ≈ 4e-3 per weight).
#[test]
fn bf16_file_stays_close_to_f32() {
    let f32_engine = Engine::cpu(Model::load(fixture("rmt.safetensors")).unwrap());
    let bf16_engine = Engine::cpu(Model::load(fixture("rmt_bf16.safetensors")).unwrap());
    let exp = Expected::load("rmt.expected.safetensors");
    let mut worst = 0.0f64;
    for case in 0..5 {
        let prompt = exp.tokens(&format!("case{case}.prompt"));
        let ctx = &prompt[..prompt.len() - 1];
        let a = f32_engine.session().ask(ctx, 1).unwrap();
        let b = bf16_engine.session().ask(ctx, 1).unwrap();
        worst = worst.max(rel_err(&b.logits[0], &a.logits[0]));
    }
    eprintln!("bf16 vs f32 answer logits: worst normalised error {worst:.2e}");
    assert!(worst > 0.0, "the bf16 file must actually differ");
    assert!(worst <= 1e-2, "bf16 vs f32 normalised error {worst:.3e} > 1e-2");
}

/// A checkpoint saved by PyTorch with the authors' key names in bf16 (duplicated lm_head included) converts to a
/// model that matches PyTorch run with the same weights.
#[test]
fn converted_pytorch_checkpoint_matches_pytorch() {
    let config = std::fs::read_to_string(fixture("authors_rmt_bf16.config.json")).unwrap();
    let opts = ConvertOptions { config: Some(rmt_fast::Config::from_json(&config).unwrap()), ..Default::default() };
    let c = import_pytorch(&fixture("authors_rmt_bf16.pytorch_model.bin"), &opts).unwrap();
    assert_eq!(c.dtypes, ["BF16"]);
    assert!(c.tied_duplicate_head, "the stored lm_head equals wte and is tied again");
    let e = check_loaded(c.model, "authors_rmt_bf16.pytorch_model.bin", "authors_rmt_bf16.expected.safetensors");
    eprintln!("converted checkpoint worst normalised error {e:.2e}");
}
