//! `rmt-fast init`, run as a user would.

use std::path::PathBuf;
use std::process::{Command, Output};

use rmt_fast::Model;

fn rmt_fast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rmt-fast"))
        .args(args)
        .output()
        .expect("binary runs")
}

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
    let (a, b, c) = (
        scratch("a.safetensors"),
        scratch("b.safetensors"),
        scratch("c.safetensors"),
    );
    for (out, seed) in [(&a, "7"), (&b, "7"), (&c, "8")] {
        let o = rmt_fast(&[
            "init",
            "--config",
            cfg.to_str().unwrap(),
            "--seed",
            seed,
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("parameters"));
    }
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "same seed, same bytes"
    );
    assert_ne!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&c).unwrap(),
        "another seed, another model"
    );

    let m = Model::load(&a).unwrap();
    assert_eq!(m.config.n_embd, 32);
    let w = &m.weights;
    assert!(
        (std_dev(&w.wte) - 0.02).abs() < 0.002,
        "wte std {}",
        std_dev(&w.wte)
    );
    assert!((std_dev(&w.blocks[1].c_fc.w) - 0.02).abs() < 0.002);
    assert!(
        (std_dev(&w.memory) / std_dev(&w.wte) - 1.0).abs() < 0.15,
        "memory = randn · std(wte)"
    );
    assert!(
        w.blocks[0].ln_1.w.iter().all(|&x| x == 1.0)
            && w.blocks[0]
                .c_attn
                .b
                .as_ref()
                .unwrap()
                .iter()
                .all(|&x| x == 0.0)
    );
    assert_eq!(
        w.memory.len(),
        2 * 4 * 32,
        "RMT-R learned memory has 2m rows"
    );

    let bf16 = scratch("bf16.safetensors");
    let o = rmt_fast(&[
        "init",
        "--config",
        cfg.to_str().unwrap(),
        "--dtype",
        "bf16",
        "-o",
        bf16.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert!(
        std::fs::metadata(&bf16).unwrap().len() < std::fs::metadata(&a).unwrap().len() * 6 / 10
    );
}

#[test]
fn init_reports_bad_input() {
    let out = scratch("never.safetensors");
    let o = rmt_fast(&[
        "init",
        "--config",
        "/nonexistent/cfg.json",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/cfg.json"));

    let cfg = scratch("bad.json");
    std::fs::write(&cfg, CONFIG.replace(r#""n_head": 4"#, r#""n_head": 5"#)).unwrap();
    let o = rmt_fast(&[
        "init",
        "--config",
        cfg.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not a multiple of n_head 5") && err.contains("bad.json"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written on error");

    let o = rmt_fast(&[
        "init",
        "--config",
        cfg.to_str().unwrap(),
        "--dtype",
        "f8",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown dtype `f8`"));
}
