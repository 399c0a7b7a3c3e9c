//! `rmt-fast init`, `convert`, `demo` and `train-curve`, run as a user would.

mod common;

use std::path::PathBuf;

use common::rmt_fast;
use rmt_fast::Model;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rmt-fast-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

const CONFIG: &str = r#"{"n_layer": 2, "n_head": 4, "n_embd": 32, "vocab_size": 300, "n_positions": 64,
    "eos_token_id": 299, "gen_token_id": 298,
    "memory": {"kind": "rmt-r", "num_mem_tokens": 4, "segment_size": 16, "retrieval": "v1"}}"#;

fn std_dev(x: &[f32]) -> f64 {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    (x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
}

#[test]
fn init_writes_a_deterministic_gpt2_initialised_model() {
    let cfg = scratch("cfg.json");
    std::fs::write(&cfg, CONFIG).unwrap();
    let (a, b, c) = (scratch("a.safetensors"), scratch("b.safetensors"), scratch("c.safetensors"));
    for (out, seed) in [(&a, "7"), (&b, "7"), (&c, "8")] {
        let o = rmt_fast(&["init", "--config", cfg.to_str().unwrap(), "--seed", seed, "-o", out.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("parameters"));
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "same seed, same bytes");
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap(), "another seed, another model");

    let m = Model::load(&a).unwrap();
    assert_eq!(m.config.n_embd, 32);
    let w = &m.weights;
    assert!((std_dev(&w.wte) - 0.02).abs() < 0.002, "wte std {}", std_dev(&w.wte));
    assert!((std_dev(&w.blocks[1].c_fc.w) - 0.02).abs() < 0.002);
    assert!((std_dev(&w.memory) / std_dev(&w.wte) - 1.0).abs() < 0.15, "memory = randn · std(wte)");
    assert!(
        w.blocks[0].ln_1.w.iter().all(|&x| x == 1.0)
            && w.blocks[0].c_attn.b.as_ref().unwrap().iter().all(|&x| x == 0.0)
    );
    assert_eq!(w.memory.len(), 2 * 4 * 32, "RMT-R learned memory has 2m rows");

    let bf16 = scratch("bf16.safetensors");
    let o = rmt_fast(&["init", "--config", cfg.to_str().unwrap(), "--dtype", "bf16", "-o", bf16.to_str().unwrap()]);
    assert!(o.status.success());
    assert!(std::fs::metadata(&bf16).unwrap().len() < std::fs::metadata(&a).unwrap().len() * 6 / 10);
}

#[test]
fn init_reports_bad_input() {
    let out = scratch("never.safetensors");
    let o = rmt_fast(&["init", "--config", "/nonexistent/cfg.json", "-o", out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/cfg.json"));

    let cfg = scratch("bad.json");
    std::fs::write(&cfg, CONFIG.replace(r#""n_head": 4"#, r#""n_head": 5"#)).unwrap();
    let o = rmt_fast(&["init", "--config", cfg.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not a multiple of n_head 5") && err.contains("bad.json"), "{err}");
    assert!(!out.exists(), "nothing written on error");

    let o = rmt_fast(&["init", "--config", cfg.to_str().unwrap(), "--dtype", "f8", "-o", out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown dtype `f8`"));
}

#[test]
fn convert_writes_a_bf16_model_and_reports_bad_checkpoints() {
    let ckpt = common::fixture("authors_rmt_bf16.pytorch_model.bin");
    let cfg = common::fixture("authors_rmt_bf16.config.json");
    let out = scratch("converted.safetensors");
    let o =
        rmt_fast(&["convert", ckpt.to_str().unwrap(), "--config", cfg.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(said.contains("BF16") && said.contains("tied"), "{said}");
    let info = rmt_fast(&["info", out.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&info.stdout).contains("BF16"));
    assert!(Model::load(&out).is_ok());

    let o = rmt_fast(&["convert", ckpt.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(common::stderr(&o).contains("not a GPT-2 size: give the number of heads"), "{}", common::stderr(&o));
    // without a config the shape comes from the tensors, and GPT-2's token ids do not fit this tiny vocabulary
    let o = rmt_fast(&[
        "convert",
        ckpt.to_str().unwrap(),
        "--segment-size",
        "16",
        "--n-head",
        "4",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(common::stderr(&o).contains("eos_token_id 50256 is outside the vocabulary (96)"), "{}", common::stderr(&o));

    // not a checkpoint, a truncated archive
    let o = rmt_fast(&["convert", cfg.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(!o.status.success() && common::stderr(&o).contains("not a PyTorch checkpoint"), "{}", common::stderr(&o));
    let bytes = std::fs::read(&ckpt).unwrap();
    let cut = scratch("cut.bin");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let o = rmt_fast(&["convert", cut.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(!o.status.success() && common::stderr(&o).contains("cut.bin"), "{}", common::stderr(&o));
}

/// Output into a closed pipe (`| head`) ends the command quietly, as with any Unix tool: no panic message.
#[cfg(unix)]
#[test]
fn closed_pipes_end_quietly() {
    let model = common::fixture("rmt_r_v2.safetensors");
    let cmd = format!("'{}' info '{}' | head -1", env!("CARGO_BIN_EXE_rmt-fast"), model.display());
    let o = std::process::Command::new("sh").args(["-c", &cmd]).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("rmt-fast model"));
    assert!(!common::stderr(&o).contains("panicked"), "{}", common::stderr(&o));
}

/// `demo` builds a sample with the built-in generators, reads it and prints the question, answer, truth and speed.
#[test]
fn demo_reads_a_generated_sample_and_answers() {
    let dir = scratch("demo");
    std::fs::create_dir_all(&dir).unwrap();
    let model = common::init_model(
        &dir,
        r#"{"n_layer": 1, "n_head": 2, "n_embd": 16, "vocab_size": 50257, "n_positions": 80,
            "memory": {"kind": "rmt", "num_mem_tokens": 2, "segment_size": 64}}"#,
        0,
    );
    let o = rmt_fast(&["demo", "--model", model.to_str().unwrap(), "--length", "2k", "--seed", "4"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    for want in ["qa1 sample of 2000 tokens", "question: Where is", "answer:", "truth:", "tokens/s"] {
        assert!(out.contains(want), "{want} missing from:\n{out}");
    }
    // qa1 rests on one fact: the asked person's last move, which ends in the truth
    let marked: Vec<&str> = out.lines().filter(|l| l.starts_with("  * ")).collect();
    let (who, truth) =
        (out.split("Where is ").nth(1).unwrap().split('?').next().unwrap(), out.split("truth:").nth(1).unwrap());
    assert_eq!(marked.len(), 1, "{out}");
    assert!(
        marked[0].contains(who) && marked[0].ends_with(&format!("{}.", truth.split_whitespace().next().unwrap())),
        "{out}"
    );
    let o = rmt_fast(&["demo", "--model", model.to_str().unwrap(), "--task", "qa9"]);
    assert!(!o.status.success());
}

/// `train-curve` draws validation accuracy against steps counted across stages, with the stages labelled, and
/// continues the axis across chained runs.
#[test]
fn train_curve_plots_validation_across_stages() {
    let dir = scratch("curve");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("log.jsonl");
    std::fs::write(
        &log,
        "{\"stage\":0,\"step\":1,\"loss\":1.0,\"grad_norm\":1.0,\"lr\":0.001}\n\
         {\"stage\":0,\"step\":2,\"loss\":0.9,\"grad_norm\":1.0,\"lr\":0.001,\"valid_accuracy\":0.25}\n\
         {\"stage\":1,\"step\":1,\"loss\":0.8,\"grad_norm\":1.0,\"lr\":0.001,\"valid_accuracy\":0.5}\n",
    )
    .unwrap();
    let svg = dir.join("curve.svg");
    let o = rmt_fast(&["train-curve", log.to_str().unwrap(), "-o", svg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("stage 2") && text.contains("3 in all"), "{text}");
    // two validation points: step 2 of stage 1 and step 3 overall
    let points = text.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
    assert_eq!(points.split(' ').count(), 2, "{points}");
    // a second run chained after it: its stages follow on the same axis, labelled from each run's config
    let (log2, cfg1, cfg2) = (dir.join("log2.jsonl"), dir.join("a.json"), dir.join("b.json"));
    std::fs::write(
        &log2,
        "{\"stage\":0,\"step\":4,\"loss\":0.7,\"grad_norm\":1.0,\"lr\":0.001,\"valid_accuracy\":0.75}\n",
    )
    .unwrap();
    let cfg = |segments: &[usize]| {
        let stages: Vec<String> = segments
            .iter()
            .map(|s| format!(r#"{{"segments": {s}, "steps": 4, "batch": 1, "lr": 1e-3, "warmup": 1}}"#))
            .collect();
        format!(
            r#"{{"model": {{"from": "m.safetensors"}}, "tasks": ["qa1"], "stages": [{}], "valid_every": 1, "valid_samples": 1}}"#,
            stages.join(",")
        )
    };
    std::fs::write(&cfg1, cfg(&[1, 2])).unwrap();
    std::fs::write(&cfg2, cfg(&[8])).unwrap();
    let (l1, l2, c1, c2, out) = (
        log.to_str().unwrap(),
        log2.to_str().unwrap(),
        cfg1.to_str().unwrap(),
        cfg2.to_str().unwrap(),
        svg.to_str().unwrap(),
    );
    let o = rmt_fast(&["train-curve", l1, l2, "--config", c1, "--config", c2, "-o", out]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(["≤1 seg", "≤2 seg", "≤8 seg", "7 in all"].iter().all(|l| text.contains(l)), "{text}");
    let points = text.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
    assert_eq!(points.split(' ').count(), 3, "{points}");
    let o = rmt_fast(&["train-curve", l1, l2, "--config", c1, "-o", out]);
    assert!(common::stderr(&o).contains("one --config per log"), "{}", common::stderr(&o));
    std::fs::write(&log, "not json\n").unwrap();
    assert!(!rmt_fast(&["train-curve", l1, "-o", out]).status.success());
}

/// `convert MODEL.safetensors --dtype bf16` re-stores a model in bf16 (half the file, values rounded); without
/// `--dtype` it is an error.
#[test]
fn convert_restores_a_model_in_another_dtype() {
    let dir = scratch("convert-dtype");
    std::fs::create_dir_all(&dir).unwrap();
    let model = common::init_model(&dir, CONFIG, 5);
    let out = dir.join("bf16.safetensors");
    let o = rmt_fast(&["convert", model.to_str().unwrap(), "--dtype", "bf16", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let (a, b) = (Model::load(&model).unwrap(), Model::load(&out).unwrap());
    let size = |p: &PathBuf| std::fs::metadata(p).unwrap().len() as f64;
    assert!(size(&out) < 0.6 * size(&model));
    for (x, y) in a.weights.wte.iter().zip(&b.weights.wte) {
        assert!((x - y).abs() <= x.abs() / 128.0, "{x} vs {y}");
    }
    let o = rmt_fast(&["convert", model.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(!o.status.success() && common::stderr(&o).contains("--dtype"));
}
