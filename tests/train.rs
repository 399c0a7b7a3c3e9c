//! Training gradients: the training forward agrees with the inference engine (itself checked against PyTorch),
//! and every weight's gradient agrees with finite differences through a multi-segment sample (full BPTT).

mod common;

use common::{fixture, rel_err};
use rmt_fast::rng::Rng;
use rmt_fast::train::look_back::LookBack;
use rmt_fast::train::{
    look_back_loss, look_back_loss_and_grads, loss, loss_and_grads, loss_and_grads_truncated, loss_and_grads_with,
    loss_with, Dropout, Probe, TrainSample,
};
use rmt_fast::{Engine, Model};

fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = max + logits.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
    lse - logits[target as usize] as f64
}

fn prompt(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let mut p: Vec<u32> = (0..n - 1).map(|_| rng.below(94) as u32).collect();
    p.push(94); // GEN of the fixture vocabulary
    p
}

/// Teacher forcing with the model's own greedy answer is greedy decoding: the training loss equals the mean NLL of
/// the inference engine's logits, for prompts of one to five segments. The answer and EOS must fit in the prompt's
/// last segment, as the authors size their samples (qa_margin, RMT-SPEC §1.8): otherwise training starts a new
/// segment where decoding continues the old one.
#[test]
fn training_forward_agrees_with_the_inference_engine() {
    let model = Model::load(fixture("rmt.safetensors")).unwrap();
    let engine = Engine::cpu_reference(model.clone());
    for n in [9, 20, 37, 43, 75] {
        let p = prompt(n, n as u64);
        let answer = engine.session().ask(&p[..n - 1], 4).unwrap();
        let mut targets = answer.tokens.clone();
        let steps = if answer.stopped_at_eos {
            answer.logits.clone()
        } else {
            // one more step gives the logits that must predict EOS after the last answer token
            engine.session().ask(&p[..n - 1], 5).unwrap().logits[..5].to_vec()
        };
        targets.push(95);
        let want = targets.iter().zip(&steps).map(|(&t, l)| nll(l, t)).sum::<f64>() / targets.len() as f64;
        let got = loss(&model, &TrainSample::new(p, answer.tokens.clone())).unwrap() as f64;
        assert!((got - want).abs() <= 1e-5 * want.abs(), "prompt {n}: training loss {got} vs inference {want}");
    }
}

/// Directional finite differences per weight tensor: (L(θ+εv) − L(θ−εv)) / 2ε against ⟨∇L, v⟩, through three
/// segments (37-token prompt + answer over segments of 16), so the memory gradient crosses two hand-offs.
/// Unit-norm directions and ε = 1e-2 keep the truncation error small; the f32 rounding of the loss (≈ 3e-7) puts
/// ≈ 2e-5 of noise on every derivative. Tolerance: |numeric − analytic| ≤ 1e-2·|analytic| + 5e-5 (measured: at most
/// 3.7e-3 relative where |analytic| > 1e-3).
#[test]
fn gradients_match_finite_differences() {
    check_finite_differences(&fixture_model(), &plain_sample(), None);
}

/// The same check with dropout 0.1 (fixed masks: the same seed in every evaluation).
#[test]
fn gradients_with_dropout_match_finite_differences() {
    check_finite_differences(&fixture_model(), &plain_sample(), Some(Dropout { p: 0.1, seed: 4 }));
}

fn fixture_model() -> Model {
    Model::load(fixture("rmt.safetensors")).unwrap()
}

/// Three segments of the fixture model (segments of 16): a 37-token prompt and a 3-token answer.
fn plain_sample() -> TrainSample {
    TrainSample::new(prompt(37, 1), vec![17, 3, 55])
}

/// The same check with three look-back heads on (loss weight 0.5), through the model and into the heads: the
/// heads' loss reaches every layer through `ln_f` of the context rows, and the LM head through the candidates' rows.
#[test]
fn look_back_gradients_match_finite_differences() {
    let model = Model::load(fixture("rmt.safetensors")).unwrap();
    let heads = LookBack::new(3, model.config.n_embd, 7);
    let sample = TrainSample::new(prompt(37, 1), vec![17, 3, 55]);
    let weight = 0.5;
    let (l0, mut g, mut gh) = look_back_loss_and_grads(&model, &heads, weight, true, &sample).unwrap();
    let plain = loss(&model, &sample).unwrap();
    assert!(l0 > plain + 0.5, "the heads add their loss: {l0} vs {plain} without");
    assert_eq!(l0, look_back_loss(&model, &heads, weight, &sample).unwrap(), "forward only = forward of the backward");
    // the model's tensors
    let names: Vec<String> = model.weights.named(&model.config).into_iter().map(|(n, _, _)| n).collect();
    let analytic = g.tensors_mut().into_iter().map(|t| t.clone()).collect();
    compare_directional(&names, analytic, |k, v, sign| {
        let mut m = model.clone();
        m.weights.tensors_mut()[k].iter_mut().zip(v).for_each(|(w, d)| *w += sign * d);
        look_back_loss(&m, &heads, weight, &sample).unwrap()
    });
    // the heads' tensors
    let names: Vec<String> = heads.named().into_iter().map(|(n, _, _)| n).collect();
    let analytic = gh.tensors_mut().into_iter().map(|t| t.clone()).collect();
    compare_directional(&names, analytic, |k, v, sign| {
        let mut h = heads.clone();
        h.tensors_mut()[k].iter_mut().zip(v).for_each(|(w, d)| *w += sign * d);
        look_back_loss(&model, &h, weight, &sample).unwrap()
    });
}

/// `lm_head: false` holds the LM-head rows fixed for the heads: the gradient loses exactly the heads' share in the
/// (tied) LM head's rows of the prompt's tokens, and nothing else changes.
#[test]
fn look_back_without_lm_head_leaves_only_the_candidates_rows_out() {
    let model = Model::load(fixture("rmt.safetensors")).unwrap();
    let heads = LookBack::new(3, model.config.n_embd, 7);
    let sample = TrainSample::new(prompt(37, 1), vec![17, 3, 55]);
    let (l_with, mut with, h_with) = look_back_loss_and_grads(&model, &heads, 0.5, true, &sample).unwrap();
    let (l_without, mut without, h_without) = look_back_loss_and_grads(&model, &heads, 0.5, false, &sample).unwrap();
    assert_eq!(l_with, l_without);
    assert_eq!(format!("{:?}", h_with.heads), format!("{:?}", h_without.heads), "the heads' own gradient");
    let names: Vec<String> = model.weights.named(&model.config).into_iter().map(|(n, _, _)| n).collect();
    let d = model.config.n_embd;
    let candidates: std::collections::BTreeSet<usize> = sample.prompt.iter().map(|&t| t as usize).collect();
    let head = if model.weights.lm_head.is_some() { "lm_head.weight" } else { "wte.weight" };
    let mut changed_rows = 0;
    for ((name, a), b) in names.iter().zip(with.tensors_mut()).zip(without.tensors_mut()) {
        if name.ends_with(head) {
            for (row, (ra, rb)) in a.chunks_exact(d).zip(b.chunks_exact(d)).enumerate() {
                if ra != rb {
                    assert!(candidates.contains(&row), "row {row} of {name} is not a prompt token's");
                    changed_rows += 1;
                }
            }
        } else {
            assert!(a == b, "{name} changed");
        }
    }
    assert_eq!(changed_rows, candidates.len(), "every candidate's row loses the heads' share");
}

/// The same check with two memory probes (after segments 0 and 1 of three): their loss adds to the answer's, and
/// their gradient crosses the hand-offs back to the learned memory. With dropout, so the probes' own masks are
/// checked too.
#[test]
fn probe_gradients_match_finite_differences() {
    let model = Model::load(fixture("rmt.safetensors")).unwrap();
    let mut sample = TrainSample::new(prompt(37, 1), vec![17, 3, 55]);
    let plain = loss(&model, &sample).unwrap();
    let probe =
        |after: usize, seed: u64, weight: f32| Probe { after, prompt: prompt(6, seed), answer: vec![40], weight };
    sample.probes = vec![probe(0, 5, 0.7), probe(1, 6, 0.4)];
    let with = loss(&model, &sample).unwrap();
    assert!(with > plain + 0.5, "the probes add their loss: {with} vs {plain} without");
    check_finite_differences(&model, &sample, Some(Dropout { p: 0.1, seed: 4 }));
    // a probe after the last segment is allowed; one past it, or one longer than a segment, is not
    sample.probes = vec![probe(2, 5, 1.0)];
    assert!(loss(&model, &sample).is_ok());
    sample.probes = vec![probe(3, 5, 1.0)];
    assert!(loss(&model, &sample).unwrap_err().to_string().contains("after segment 3"));
    sample.probes = vec![Probe { after: 0, prompt: prompt(16, 5), answer: vec![1], weight: 1.0 }];
    assert!(loss(&model, &sample).unwrap_err().to_string().contains("does not fit"));
}

/// Truncated BPTT (the authors' `k2`). Through the last segment only, the gradient of a three-segment sample is the
/// full gradient of its last segment alone, asked of a model whose learned memory is the memory entering that
/// segment (read by the inference engine, so the two agree to rounding: 1e-4); the learned memory gets none.
/// Through all segments it is full BPTT, bit for bit. The loss changes by rounding only (the segments before the
/// window run through the inference engine's fast step: 1e-5); a probe before the window is left out.
#[test]
fn truncated_bptt_is_the_last_segments_from_a_constant_memory() {
    let model = fixture_model();
    let seg = model.config.memory.segment_size;
    let p = prompt(40, 3); // segments of 16, 16 and 8 + answer + EOS
    let mut sample = TrainSample::new(p.clone(), vec![17, 3]);
    let (full_loss, full) = loss_and_grads(&model, &sample).unwrap();
    for k2 in [3, 4] {
        let (l, g) = loss_and_grads_truncated(&model, &sample, k2).unwrap();
        assert_eq!(l, full_loss);
        assert_eq!(g.named(&model.config), full.named(&model.config), "k2 = {k2} is full BPTT");
    }
    let (l1, g1) = loss_and_grads_truncated(&model, &sample, 1).unwrap();
    assert!((l1 - full_loss).abs() <= 1e-5 * full_loss, "truncation changes the gradient, not the loss");
    let mut session = Engine::cpu_reference(model.clone()).session();
    session.read(&p[..2 * seg]).unwrap();
    let mut last = model.clone();
    last.weights.memory = session.state().memory.clone();
    let (l_last, g_last) = loss_and_grads(&last, &TrainSample::new(p[2 * seg..].to_vec(), vec![17, 3])).unwrap();
    assert!((l1 - l_last).abs() <= 1e-5 * l1, "{l1} vs the last segment alone {l_last}");
    let mut far_from_full = 0.0f64;
    for (((name, _, a), (_, _, b)), (_, _, f)) in
        g1.named(&model.config).into_iter().zip(g_last.named(&model.config)).zip(full.named(&model.config))
    {
        if name == "memory" {
            assert!(a.iter().all(|&x| x == 0.0), "the memory entering the window is a constant");
            continue;
        }
        let e = rel_err(a, b);
        assert!(e <= 1e-4, "{name}: normalised error {e:.2e} against the last segment alone");
        far_from_full = far_from_full.max(rel_err(a, f));
    }
    assert!(far_from_full > 1e-2, "the truncated gradient is not the full one ({far_from_full:.1e})");
    let (_, g_plain) = loss_and_grads_truncated(&model, &sample, 1).unwrap();
    sample.probes = vec![Probe { after: 0, prompt: prompt(6, 5), answer: vec![40], weight: 1.0 }];
    let (l_probe, g_probe) = loss_and_grads_truncated(&model, &sample, 1).unwrap();
    assert_eq!((l_probe, g_probe.named(&model.config)), (l1, g_plain.named(&model.config)), "the probe is left out");
}

/// Every weight's gradient of `sample`'s loss against finite differences (see [`compare_directional`]).
fn check_finite_differences(model: &Model, sample: &TrainSample, dropout: Option<Dropout>) {
    let (l0, grads) = loss_and_grads_with(model, sample, dropout).unwrap();
    assert!(l0.is_finite());
    let names: Vec<String> = model.weights.named(&model.config).into_iter().map(|(n, _, _)| n).collect();
    let analytic = grads.clone().tensors_mut().into_iter().map(|t| t.clone()).collect();
    compare_directional(&names, analytic, |k, v, sign| {
        let mut m = model.clone();
        m.weights.tensors_mut()[k].iter_mut().zip(v).for_each(|(w, d)| *w += sign * d);
        loss_with(&m, sample, dropout).unwrap()
    });
    let memory = &grads.memory;
    assert!(memory.iter().any(|&x| x != 0.0), "the gradient reaches the learned memory through two hand-offs");
}

/// Per tensor k: a random unit direction v, and the central difference of `shifted(k, ε·v, ±1)` (the loss with
/// tensor k moved by ±ε·v) against ⟨analytic[k], v⟩, within the tolerance stated above.
fn compare_directional(names: &[String], analytic: Vec<Vec<f32>>, shifted: impl Fn(usize, &[f32], f32) -> f32) {
    let mut rng = Rng::new(3);
    let eps = 1e-2f32;
    let mut worst = 0.0f64;
    for (k, (name, g)) in names.iter().zip(&analytic).enumerate() {
        // a random direction of unit norm: a small step in every tensor, large or small
        let v: Vec<f32> = (0..g.len()).map(|_| rng.normal() as f32).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let v: Vec<f32> = v.iter().map(|x| x / norm).collect();
        let want: f64 = g.iter().zip(&v).map(|(&a, &b)| a as f64 * b as f64).sum();
        let step: Vec<f32> = v.iter().map(|x| eps * x).collect();
        let numeric = (shifted(k, &step, 1.0) as f64 - shifted(k, &step, -1.0) as f64) / (2.0 * eps as f64);
        let diff = (numeric - want).abs();
        eprintln!("{name:28} numeric {numeric:+.6} analytic {want:+.6} difference {diff:.1e}");
        assert!(diff <= 1e-2 * want.abs() + 5e-5, "{name}: numeric {numeric:.6} vs analytic {want:.6}");
        if want.abs() > 1e-3 {
            worst = worst.max(diff / want.abs());
        }
    }
    eprintln!("{} tensors: worst relative error where |analytic| > 1e-3: {worst:.2e}", names.len());
}

#[test]
fn bad_samples_are_errors() {
    let model = Model::load(fixture("rmt.safetensors")).unwrap();
    assert!(loss(&model, &TrainSample::new(vec![], vec![1])).unwrap_err().to_string().contains("prompt"));
    assert!(loss(&model, &TrainSample::new(vec![1, 500], vec![])).unwrap_err().to_string().contains("500"));
    let rmt_r = Model::load(fixture("rmt_r_v2.safetensors")).unwrap();
    assert!(loss(&rmt_r, &TrainSample::new(vec![1, 94], vec![])).unwrap_err().to_string().contains("RMT-R"));
}

fn tiny_config(steps: u64, checkpoint_every: u64) -> rmt_fast::train::trainer::TrainConfig {
    tiny_config_with(steps, checkpoint_every, "")
}

/// The tiny run, with `extra` (JSON members, each followed by a comma) added to its config.
fn tiny_config_with(steps: u64, checkpoint_every: u64, extra: &str) -> rmt_fast::train::trainer::TrainConfig {
    serde_json::from_str(&format!(
        r#"{{"model": {{"init": {{"n_layer": 1, "n_head": 2, "n_embd": 32, "vocab_size": 50257, "n_positions": 96,
              "memory": {{"kind": "rmt", "num_mem_tokens": 4, "segment_size": 40}}}}}},
            "seed": 5, "tasks": ["qa1"], "dropout": 0.1, {extra}
            "stages": [{{"segments": 2, "steps": {steps}, "batch": 4, "lr": 3e-3, "warmup": 2}}],
            "valid_every": 5, "valid_samples": 8, "checkpoint_every": {checkpoint_every}}}"#
    ))
    .unwrap()
}

/// A run that crashes (no chance to save) resumes from its last checkpoint and ends bit-identical to an
/// uninterrupted one: the same checkpoint bytes (weights, optimizer moments, progress) and the same log.
#[test]
fn resumed_training_equals_uninterrupted_training() {
    check_resume(&tiny_config(10, 4), "train");
}

/// The same for ARMT, started from the backbone of an RMT model; a backbone of another shape is refused.
#[test]
fn resumed_armt_training_from_an_rmt_backbone_equals_uninterrupted_training() {
    use rmt_fast::train::trainer::{train, Start};
    let rmt = tiny_config(2, 4);
    let rmt_dir = common::scratch_dir("train-armt-backbone");
    train(&rmt, &rmt_dir, false, |_| true).unwrap();
    let backbone = rmt_dir.join("model_best.safetensors");
    let armt_json = r#"{"n_layer": 1, "n_head": 2, "n_embd": 32, "vocab_size": 50257, "n_positions": 96,
        "memory": {"kind": "armt", "num_mem_tokens": 4, "segment_size": 40, "d_mem": 8}}"#;
    let mut cfg = tiny_config(10, 4);
    cfg.model = Start::Backbone { init: rmt_fast::Config::from_json(armt_json).unwrap(), from: backbone.clone() };
    let (a, _) = check_resume(&cfg, "train-armt");
    assert_eq!(Model::load(a.join("model_best.safetensors")).unwrap().weights.associative.len(), 1);
    let mut wide = cfg.clone();
    wide.model = Start::Backbone {
        init: rmt_fast::Config::from_json(&armt_json.replace("\"n_embd\": 32", "\"n_embd\": 64")).unwrap(),
        from: backbone,
    };
    let err = train(&wide, &common::scratch_dir("train-armt-wide"), false, |_| true).unwrap_err();
    assert!(err.to_string().contains("backbone's GPT-2 shape"), "{err}");
}

/// `write` sets the starting ARMT's write rule: a run with the replacing write resumes exactly, its models carry
/// the rule, and it trains otherwise than the authors' rule; an RMT is refused. `decay` the same way.
#[test]
fn write_and_decay_set_the_armt_memory() {
    use rmt_fast::train::trainer::{train, Start};
    use rmt_fast::AssociativeWrite;
    let armt_json = r#"{"n_layer": 1, "n_head": 2, "n_embd": 32, "vocab_size": 50257, "n_positions": 96,
        "memory": {"kind": "armt", "num_mem_tokens": 4, "segment_size": 40, "d_mem": 8}}"#;
    let mut delta = tiny_config(10, 4);
    delta.model = Start::Init(rmt_fast::Config::from_json(armt_json).unwrap());
    // samples of up to 3 segments: the gain is 1 in the first write (z = 0), so 2 segments could not tell
    delta.stages[0].segments = 3;
    let replacing = rmt_fast::train::trainer::TrainConfig { write: Some(AssociativeWrite::Replacing), ..delta.clone() };
    let (a, _) = check_resume(&replacing, "train-armt-replacing");
    let model = Model::load(a.join("model_best.safetensors")).unwrap();
    assert_eq!(model.config.memory.write, AssociativeWrite::Replacing);
    let d = common::scratch_dir("train-armt-delta");
    train(&delta, &d, false, |_| true).unwrap();
    let losses = |dir: &std::path::Path| -> Vec<String> {
        let log = std::fs::read_to_string(dir.join("log.jsonl")).unwrap();
        log.lines().map(|l| l.split(",\"grad_norm").next().unwrap().to_string()).collect()
    };
    assert_ne!(losses(&a), losses(&d), "the replacing write trains as the authors' rule does");
    // `decay` likewise: the models carry it, and it trains otherwise
    let decayed = rmt_fast::train::trainer::TrainConfig { decay: Some(0.5), ..delta.clone() };
    let dd = common::scratch_dir("train-armt-decay");
    train(&decayed, &dd, false, |_| true).unwrap();
    assert_eq!(Model::load(dd.join("model_best.safetensors")).unwrap().config.memory.decay, Some(0.5));
    assert_ne!(losses(&dd), losses(&d), "the decay trains as the authors' rule does");
    let rmt = rmt_fast::train::trainer::TrainConfig { write: Some(AssociativeWrite::Replacing), ..tiny_config(2, 4) };
    let err = train(&rmt, &common::scratch_dir("train-rmt-replacing"), false, |_| true).unwrap_err();
    assert!(err.to_string().contains("not an ARMT"), "{err}");
    let rmt = rmt_fast::train::trainer::TrainConfig { decay: Some(0.5), ..tiny_config(2, 4) };
    let err = train(&rmt, &common::scratch_dir("train-rmt-decay"), false, |_| true).unwrap_err();
    assert!(err.to_string().contains("memory.decay is only for memory.kind armt"), "{err}");
}

/// Trained models record the longest samples of the run that made them (what `infer` warns past): a run of
/// 2-segment samples records 2, and the same run from a model trained on 5 records 2 again, since training on
/// shorter samples retrains the memory for them.
#[test]
fn models_record_the_longest_samples_of_their_own_run() {
    use rmt_fast::train::trainer::{train, Start};
    let first = common::scratch_dir("train-length-first");
    train(&tiny_config(2, 4), &first, false, |_| true).unwrap();
    let mut model = Model::load(first.join("model_best.safetensors")).unwrap();
    assert_eq!(model.config.trained_segments, Some(2));
    model.config.trained_segments = Some(5);
    let longer = first.join("trained-on-5.safetensors");
    model.save(&longer, rmt_fast::FileDtype::F32).unwrap();
    let cfg = rmt_fast::train::trainer::TrainConfig { model: Start::From(longer), ..tiny_config(2, 4) };
    let second = common::scratch_dir("train-length-second");
    train(&cfg, &second, false, |_| true).unwrap();
    assert_eq!(Model::load(second.join("model_best.safetensors")).unwrap().config.trained_segments, Some(2));
}

/// `"model": {"resize": …}` starts from a trained model carried to longer segments: the run trains at them, and
/// its models have the new segment size and positions.
#[test]
fn a_run_resizes_its_starting_model_to_longer_segments() {
    use rmt_fast::train::trainer::train;
    let short = common::scratch_dir("train-resize-short");
    train(&tiny_config(2, 4), &short, false, |_| true).unwrap();
    let from = short.join("model_best.safetensors");
    let mut cfg = tiny_config(3, 4);
    cfg.model = serde_json::from_str(&format!(r#"{{"resize": {{"from": {from:?}, "segment_size": 80}}}}"#)).unwrap();
    let long = common::scratch_dir("train-resize-long");
    train(&cfg, &long, false, |_| true).unwrap();
    let model = Model::load(long.join("model_best.safetensors")).unwrap();
    assert_eq!((model.config.memory.segment_size, model.config.n_positions), (80, 96 + 40));
    assert_eq!(model.config.trained_segments, Some(2));
}

/// A stage's `k2` reaches the gradient: the same run backpropagating through one segment only has the same first
/// loss and then other ones (its steps differ); `"k2": 0` is refused.
#[test]
fn a_stage_can_truncate_bptt() {
    use rmt_fast::train::trainer::{train, Stage};
    let full = tiny_config(3, 10);
    let mut cut = full.clone();
    cut.stages[0].k2 = std::num::NonZeroUsize::new(1);
    let losses = [(&full, "train-k2-full"), (&cut, "train-k2-cut")].map(|(cfg, name)| {
        let dir = common::scratch_dir(name);
        train(cfg, &dir, false, |_| true).unwrap();
        let log = std::fs::read_to_string(dir.join("log.jsonl")).unwrap();
        log.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap()).collect()
    });
    let [full_losses, cut_losses]: [Vec<f64>; 2] = losses;
    assert_eq!(full_losses[0], cut_losses[0]);
    assert_ne!(full_losses[1..], cut_losses[1..]);
    let zero = r#"{"segments": 2, "steps": 1, "batch": 1, "lr": 1e-3, "warmup": 0, "k2": 0}"#;
    assert!(serde_json::from_str::<Stage>(zero).is_err());
}

/// The same with look-back heads on: the checkpoint carries the heads and their moments, so resuming stays exact;
/// `model_best` is the model alone; a resume whose config drops the heads is refused.
#[test]
fn resumed_training_with_look_back_heads_equals_uninterrupted_training() {
    let cfg = tiny_config_with(10, 4, r#""look_back": {"heads": 3},"#);
    let (a, b) = check_resume(&cfg, "train-lb");
    let names = |f: &std::path::Path| {
        let bytes = std::fs::read(f).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.names().into_iter().filter(|n| n.contains("look_back")).count()
    };
    assert_eq!(names(&a.join("checkpoint.safetensors")), 3 * 2 * 3, "3 heads × (weight, bias) × (value, m, v)");
    assert_eq!(names(&a.join("model_best.safetensors")), 0);
    let log = std::fs::read_to_string(a.join("log.jsonl")).unwrap();
    assert!(log.lines().all(|l| l.contains("look_back_loss")), "every step logs the heads' loss");
    let err = rmt_fast::train::trainer::train(&tiny_config(10, 4), &b, true, |_| true).unwrap_err();
    assert!(err.to_string().contains("3 look-back heads, the config 0"), "{err}");
}

/// The same with memory probes on: the trainer asks them (their loss is logged and not zero), resuming stays
/// exact, and a run without any of the probed tasks (qa1 by default) is refused.
#[test]
fn resumed_training_with_probes_equals_uninterrupted_training() {
    let cfg = tiny_config_with(10, 4, r#""probes": {"weight": 1.0},"#);
    let (a, _) = check_resume(&cfg, "train-probes");
    let log = std::fs::read_to_string(a.join("log.jsonl")).unwrap();
    let probe_losses: Vec<f64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["probe_loss"].as_f64().unwrap())
        .collect();
    assert_eq!(probe_losses.len(), 10);
    assert!(probe_losses.iter().all(|&l| l > 0.0), "every batch has probes: {probe_losses:?}");
    let mut qa4 = cfg.clone();
    qa4.tasks = vec!["qa4".into()];
    let err = rmt_fast::train::trainer::train(&qa4, &a.join("qa4"), false, |_| true).unwrap_err();
    assert!(err.to_string().contains("none of the run's tasks"), "{err}");
    // beside qa1 another task trains too, its samples without probes
    qa4.tasks = vec!["qa1".into(), "qa4".into()];
    rmt_fast::train::trainer::train(&qa4, &a.join("qa1-qa4"), false, |_| true).unwrap();
}

/// Runs `cfg` uninterrupted, then again with a crash after step 5 and a resume; asserts the two end with the same
/// files and returns both directories.
fn check_resume(cfg: &rmt_fast::train::trainer::TrainConfig, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    use rmt_fast::train::trainer::train;
    let (a, b) = (common::scratch_dir(&format!("{name}-a")), common::scratch_dir(&format!("{name}-b")));
    train(cfg, &a, false, |_| true).unwrap();
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train(cfg, &b, false, |e| {
            assert!(e.step < 6, "simulated crash after step 5 (the last checkpoint is at step 4)");
            true
        })
    }));
    assert!(crashed.is_err());
    let log = std::fs::read_to_string(b.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 6, "the crashed run logged steps past its checkpoint");
    train(cfg, &b, true, |_| true).unwrap();
    for f in ["checkpoint.safetensors", "log.jsonl", "model_best.safetensors"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f}");
    }
    (a, b)
}

/// `stop_after` ends a stage early on the schedule planned for all its steps: the stopped run's log is the head of
/// the full run's, learning rates included, and the run then counts as finished.
#[test]
fn stop_after_replays_the_head_of_the_full_stage() {
    use rmt_fast::train::trainer::train;
    let full = tiny_config(10, 4);
    let mut stopped = full.clone();
    stopped.stages[0].stop_after = Some(5);
    let (a, b) = (common::scratch_dir("train-full"), common::scratch_dir("train-stopped"));
    train(&full, &a, false, |_| true).unwrap();
    let mut steps = 0;
    train(&stopped, &b, false, |_| {
        steps += 1;
        true
    })
    .unwrap();
    assert_eq!(steps, 5);
    let (la, lb) =
        (std::fs::read_to_string(a.join("log.jsonl")).unwrap(), std::fs::read_to_string(b.join("log.jsonl")).unwrap());
    assert_eq!(lb.lines().collect::<Vec<_>>(), la.lines().take(5).collect::<Vec<_>>());
    assert!(lb.lines().last().unwrap().contains("valid_accuracy"), "the stage's last step validates");
    let err = train(&stopped, &b, true, |_| true).unwrap_err();
    assert!(err.to_string().contains("has finished all 1 stages"), "{err}");
}

/// Training learns: on qa1 (built-in facts, synthetic background) the mean loss of steps 26–30 is at least 25 %
/// below that of steps 1–5 (measured: 10.5 → 7.1 nats with this 32-wide model).
#[test]
fn training_reduces_the_loss() {
    let cfg = tiny_config(30, 100);
    let dir = common::scratch_dir("train-learns");
    let mut losses = Vec::new();
    rmt_fast::train::trainer::train(&cfg, &dir, false, |e| {
        losses.push(e.loss);
        true
    })
    .unwrap();
    let (first, last) = (losses[..5].iter().sum::<f32>() / 5.0, losses[25..].iter().sum::<f32>() / 5.0);
    eprintln!("mean loss of steps 1–5: {first:.3}, of steps 26–30: {last:.3}");
    assert!(last < 0.75 * first, "loss {first} → {last}");
}

/// AdamW's first step is lr · (g / (|g| + ε) + decay · p), with decay only on matrices, embeddings and memory.
#[test]
fn adamw_first_step_is_the_closed_form() {
    use rmt_fast::train::optim::{AdamState, AdamW};
    let model = Model::load(fixture("rmt.safetensors")).unwrap();
    let mut w = model.weights.clone();
    let mut g = w.zeros_like();
    let mut rng = Rng::new(9);
    g.tensors_mut().into_iter().for_each(|t| t.iter_mut().for_each(|x| *x = rng.normal() as f32));
    let opt = AdamW::default();
    let mut state = AdamState::new(&w);
    let lr = 1e-2;
    opt.step(&model.config, &mut w, &mut g.clone(), &mut state, lr);
    let names: Vec<String> = model.weights.named(&model.config).into_iter().map(|(n, _, _)| n).collect();
    let mut before = model.weights.clone();
    for (((p0, p1), gr), name) in before.tensors_mut().into_iter().zip(w.tensors_mut()).zip(g.tensors_mut()).zip(&names)
    {
        let decay = if name.ends_with(".bias") || name.contains("ln_") { 0.0 } else { opt.weight_decay };
        for ((&a, &b), &gv) in p0.iter().zip(p1.iter()).zip(gr.iter()) {
            let want = a - lr * (gv / (gv.abs() + opt.eps) + decay * a);
            assert!((b - want).abs() <= 1e-6 * want.abs().max(1.0), "{name}: {b} vs {want}");
        }
    }
}

#[test]
fn train_command_reports_bad_configs() {
    let dir = common::scratch_dir("train-cli");
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"model": {"from": "none.safetensors"}, "tasks": ["qa1"], "stages": [], "valid_every": 1, "valid_samples": 1}"#).unwrap();
    let o = common::rmt_fast(&["train", "--config", bad.to_str().unwrap(), "-o", dir.join("out").to_str().unwrap()]);
    assert!(!o.status.success() && common::stderr(&o).contains("at least one stage"), "{}", common::stderr(&o));
    let o = common::rmt_fast(&[
        "train",
        "--config",
        dir.join("missing.json").to_str().unwrap(),
        "-o",
        dir.to_str().unwrap(),
    ]);
    assert!(!o.status.success() && common::stderr(&o).contains("missing.json"));
    // a misspelt key is an error, not a default silently used
    let typo = dir.join("typo.json");
    let json = serde_json::to_string(&tiny_config(2, 1)).unwrap().replacen("\"steps\"", "\"stpes\"", 1);
    std::fs::write(&typo, json).unwrap();
    let o = common::rmt_fast(&["train", "--config", typo.to_str().unwrap(), "-o", dir.join("typo").to_str().unwrap()]);
    assert!(!o.status.success() && common::stderr(&o).contains("unknown field `stpes`"), "{}", common::stderr(&o));
    let good = dir.join("good.json");
    std::fs::write(&good, serde_json::to_string(&tiny_config(2, 1)).unwrap()).unwrap();
    // a second run into a directory that a run is writing to is refused
    let busy = dir.join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    let lock = std::fs::File::create(busy.join(".lock")).unwrap();
    lock.lock().unwrap();
    let o = common::rmt_fast(&["train", "--config", good.to_str().unwrap(), "-o", busy.to_str().unwrap()]);
    assert!(!o.status.success() && common::stderr(&o).contains("another training run"), "{}", common::stderr(&o));
    drop(lock);
    let o = common::rmt_fast(&[
        "train",
        "--config",
        good.to_str().unwrap(),
        "-o",
        dir.join("fresh").to_str().unwrap(),
        "--resume",
    ]);
    assert!(!o.status.success() && common::stderr(&o).contains("checkpoint.safetensors"), "{}", common::stderr(&o));
    let o = common::rmt_fast(&["train", "--config", good.to_str().unwrap(), "-o", dir.join("ok").to_str().unwrap()]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(dir.join("ok/model_best.safetensors").exists());
    // the trained model records its question form: a plain-text question is asked as bAbI writes it
    let trained = Model::load(dir.join("ok/model_best.safetensors")).unwrap();
    assert_eq!(trained.config.question_template.as_deref(), Some("{question} "));
    let tokens = dir.join("ctx.u16");
    std::fs::write(
        &tokens,
        [464u16, 3290, 373, 257, 2415, 13].iter().flat_map(|t| t.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
    let out = common::rmt_fast(&[
        "infer",
        tokens.to_str().unwrap(),
        "--model",
        dir.join("ok/model_best.safetensors").to_str().unwrap(),
        "--ask",
        "Where is Mary?",
        "--json",
        "--max-new-tokens",
        "3",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tok = rmt_fast::stream::tokenizer::Tokenizer::gpt2();
    let mut s = Engine::cpu(trained).session();
    s.read(&[464, 3290, 373, 257, 2415, 13]).unwrap();
    let want = s.ask(&tok.encode("Where is Mary? "), 3).unwrap();
    assert_eq!(v["answers"][0]["tokens"], serde_json::json!(want.tokens));
    // six tokens are within the 2 segments it was trained on: no warning
    assert_eq!((v["trained_segments"].as_u64(), v["warning"].is_null()), (Some(2), true), "{v}");
    let again = common::rmt_fast(&[
        "train",
        "--config",
        good.to_str().unwrap(),
        "-o",
        dir.join("ok").to_str().unwrap(),
        "--resume",
    ]);
    assert!(
        !again.status.success() && common::stderr(&again).contains("has finished all 1 stages"),
        "{}",
        common::stderr(&again)
    );
    let info = common::rmt_fast(&["info", dir.join("ok/checkpoint.safetensors").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&info.stdout).contains("training checkpoint"), "{}", common::stderr(&info));
}

/// Loss and every gradient against PyTorch autograd on the authors' training objective (the reference script's
/// `training_loss`: three segments with write memory, full BPTT). Tolerance: loss 1e-5 relative, each gradient
/// tensor 1e-4 normalised error.
#[test]
fn gradients_match_pytorch() {
    let model = Model::load(fixture("rmt_train.safetensors")).unwrap();
    let exp = common::Expected::load("rmt_train.expected.safetensors");
    let sample = TrainSample::new(exp.tokens("prompt"), exp.tokens("answer"));
    let (loss, grads) = loss_and_grads(&model, &sample).unwrap();
    let want = exp.f32("loss").1[0];
    assert!(((loss - want) / want).abs() <= 1e-5, "loss {loss} vs PyTorch {want}");
    let mut worst = 0.0f64;
    for (name, _, g) in grads.named(&model.config) {
        let e = common::rel_err(g, &exp.f32(&format!("grad.{name}")).1);
        worst = worst.max(e);
        assert!(e <= 1e-4, "{name}: normalised error {e:.2e} against PyTorch");
    }
    eprintln!("loss {loss} (PyTorch {want}); worst gradient normalised error {worst:.2e}");
}

/// Dropout 0 is no dropout, bit for bit; dropout 0.1 changes the loss, and its masks follow the seed.
#[test]
fn dropout_zero_is_exact_and_masks_follow_the_seed() {
    let model = Model::load(fixture("rmt.safetensors")).unwrap();
    let sample = TrainSample::new(prompt(37, 2), vec![5, 6]);
    let plain = loss_and_grads(&model, &sample).unwrap();
    let zero = loss_and_grads_with(&model, &sample, Some(Dropout { p: 0.0, seed: 1 })).unwrap();
    assert_eq!(plain.0.to_bits(), zero.0.to_bits());
    assert_eq!(plain.1.named(&model.config), zero.1.named(&model.config));
    let (a, b) = (Some(Dropout { p: 0.1, seed: 1 }), Some(Dropout { p: 0.1, seed: 2 }));
    let la = loss_with(&model, &sample, a).unwrap();
    assert_ne!(la, plain.0);
    assert_eq!(la, loss_with(&model, &sample, a).unwrap());
    assert_ne!(la, loss_with(&model, &sample, b).unwrap());
}

/// Every training config kept in the repository (the bundled model's recipe, the records under `bench/results`)
/// still parses: configs refuse unknown keys, so a renamed option would otherwise break a recorded command.
#[test]
fn recorded_training_configs_parse() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("models/recipe"), root.join("bench/results")];
    let mut checked = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read_to_string(&path).unwrap();
                if text.contains("\"stages\"") {
                    serde_json::from_str::<rmt_fast::train::trainer::TrainConfig>(&text)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 4, "the recipe's configs at least: {checked}");
}

/// The bundled model's recipe is a chain: `scripts/train-default.sh` runs `models/recipe/N-*.json` for N = 1, 2, …
/// and each run after the first starts from the best model (f32 or the script's bf16 copy) of the run numbered
/// before it, so a renamed or reordered run cannot silently train from the wrong model.
#[test]
fn recipe_runs_chain_in_numeric_order() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/recipe");
    let mut runs: Vec<(u32, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|name| name.strip_suffix(".json").map(str::to_string))
        .map(|run| (run.split('-').next().unwrap().parse().expect("runs are named N-…"), run))
        .collect();
    runs.sort();
    assert_eq!(runs.iter().map(|r| r.0).collect::<Vec<_>>(), (1..=runs.len() as u32).collect::<Vec<_>>());
    for pair in runs.windows(2) {
        let (prev, run) = (&pair[0].1, &pair[1].1);
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{run}.json"))).unwrap()).unwrap();
        let from = cfg["model"]["from"].as_str().or(cfg["model"]["backbone"]["from"].as_str()).unwrap();
        let best = format!("target/train-default/{prev}/model_best");
        assert!(
            [".safetensors", ".bf16.safetensors"].iter().any(|ext| from == format!("{best}{ext}")),
            "{run} starts from {from}, not from {prev}'s best"
        );
        assert!(dir.join(format!("{run}.log.jsonl")).exists(), "{run} has no log");
    }
}
