//! `tokenize`, `detokenize`, `infer`, `ask`, `info` run as a user would: real text (Jane Austen from
//! ../shared/data), every bad token file, state save / resume, Ctrl-C, and a SIGKILL mid-stream.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{rmt_fast, scratch_dir, shared_data, stderr};
use rmt_fast::stream::tokenizer::Tokenizer;
use rmt_fast::stream::tokens::{TokenDtype, TokenFile, TokenWriter};

const MODEL_CFG: &str = r#"{"n_layer": 1, "n_head": 2, "n_embd": 32, "vocab_size": 50257, "n_positions": 96,
    "memory": {"kind": "rmt-r", "num_mem_tokens": 4, "segment_size": 48, "retrieval": "v2"}}"#;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(o: std::process::Output) -> String {
    assert!(o.status.success(), "command failed: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails_with(o: std::process::Output, needle: &str) {
    assert!(!o.status.success(), "must fail: {needle}");
    assert!(stderr(&o).contains(needle), "expected `{needle}` in: {}", stderr(&o));
}

/// A model and the tokenized first `bytes` of Emma in `dir`.
fn setup(dir: &Path, bytes: usize) -> (PathBuf, PathBuf) {
    let (cfg, model, text, tokens) =
        (dir.join("cfg.json"), dir.join("m.safetensors"), dir.join("emma.txt"), dir.join("emma.bin"));
    std::fs::write(&cfg, MODEL_CFG).unwrap();
    ok(rmt_fast(&["init", "--config", s(&cfg), "--seed", "3", "-o", s(&model)]));
    let emma = std::fs::read_to_string(shared_data("haystack/austen/1_emma.txt")).unwrap();
    let cut = (0..=bytes.min(emma.len())).rev().find(|&i| emma.is_char_boundary(i)).unwrap();
    std::fs::write(&text, &emma[..cut]).unwrap();
    ok(rmt_fast(&["tokenize", s(&text), "-o", s(&tokens)]));
    (model, tokens)
}

#[test]
fn tokenize_is_exact_and_detokenize_restores_the_text() {
    let dir = scratch_dir("tokenize");
    let (_, tokens) = setup(&dir, 1 << 20); // four 4 MiB-block boundaries would be more; 1 MiB exercises the loop
    let text = std::fs::read_to_string(dir.join("emma.txt")).unwrap();
    let file = TokenFile::open(&tokens, None).unwrap();
    let mut got = Vec::new();
    file.read_into(0..file.len(), &mut got);
    assert_eq!(got, Tokenizer::gpt2().encode(&text), "streamed tokenization equals whole-text tokenization");
    assert_eq!(ok(rmt_fast(&["detokenize", s(&tokens)])), text);
    let part = ok(rmt_fast(&["detokenize", s(&tokens), "--start", "10", "--count", "5"]));
    assert_eq!(part, Tokenizer::gpt2().decode(&got[10..15]).unwrap());
    fails_with(rmt_fast(&["detokenize", s(&tokens), "--start", "10", "--count", "99999999"]), "outside the file");
    let info = ok(rmt_fast(&["info", s(&tokens)]));
    assert!(info.contains(&format!("tokens       {}", got.len())) && info.contains("LlmC(U16)"), "{info}");
    // not UTF-8
    std::fs::write(dir.join("bad.txt"), b"abc \xff\xfe def").unwrap();
    fails_with(
        rmt_fast(&["tokenize", s(&dir.join("bad.txt")), "-o", s(&dir.join("x.bin"))]),
        "not UTF-8 text (byte offset 4)",
    );
    fails_with(rmt_fast(&["tokenize", s(&dir.join("missing.txt")), "-o", s(&dir.join("x.bin"))]), "missing.txt");
}

fn write_bytes(path: &Path, header: Option<[i32; 3]>, body: &[u8]) {
    let mut b = Vec::new();
    if let Some(h) = header {
        let mut full = [0i32; 256];
        full[..3].copy_from_slice(&h);
        full.iter().for_each(|v| b.extend(v.to_le_bytes()));
    }
    b.extend_from_slice(body);
    std::fs::write(path, b).unwrap();
}

#[test]
fn bad_token_files_are_clear_errors() {
    let dir = scratch_dir("bad-tokens");
    let (model, _) = setup(&dir, 2000);
    let u16s = |v: &[u16]| v.iter().flat_map(|t| t.to_le_bytes()).collect::<Vec<u8>>();
    // (file name, llm.c header, body, expected message)
    type Case<'a> = (&'a str, Option<[i32; 3]>, Vec<u8>, &'a str);
    let cases: Vec<Case> = vec![
        ("empty.bin", None, vec![], "empty token file"),
        ("nomagic.bin", None, u16s(&[1, 2, 3]), "no llm.c header (magic 20240520)"),
        ("version.bin", Some([20240520, 7, 3]), u16s(&[1, 2, 3]), "unknown llm.c token file version 7"),
        ("count.bin", Some([20240520, 1, 5]), u16s(&[1, 2, 3]), "header says 5 tokens but 6 bytes"),
        ("odd.u16", None, vec![1, 0, 2], "1 trailing bytes"),
        ("short.bin", Some([20240520, 1, 0]), vec![], "holds no tokens"),
        ("vocab.u16", None, u16s(&[1, 2, 60000, 4]), "token 60000 at index 2 (byte offset 4)"),
    ];
    for (name, header, body, needle) in cases {
        let path = dir.join(name);
        write_bytes(&path, header, &body);
        fails_with(rmt_fast(&["infer", s(&path), "--model", s(&model)]), needle);
    }
    // a raw file works with --dtype, and with its extension
    let raw = dir.join("raw.dat");
    std::fs::write(&raw, 7u32.to_le_bytes().repeat(100)).unwrap();
    fails_with(rmt_fast(&["infer", s(&raw), "--model", s(&model)]), "--dtype");
    let out = ok(rmt_fast(&["infer", s(&raw), "--dtype", "u32", "--model", s(&model), "--json"]));
    assert!(out.contains(r#""tokens_read":100"#), "{out}");
    fails_with(rmt_fast(&["infer", s(&dir.join("none.bin")), "--model", s(&model)]), "none.bin");
    fails_with(rmt_fast(&["infer", s(&raw), "--dtype", "u8", "--model", s(&model)]), "unknown token dtype");
}

#[test]
fn infer_answers_saves_and_ask_answers_the_same_from_the_state() {
    let dir = scratch_dir("infer");
    let (model, tokens) = setup(&dir, 20_000);
    let state = dir.join("s.state");
    let out = ok(rmt_fast(&[
        "infer",
        s(&tokens),
        "--model",
        s(&model),
        "--ask",
        "Where is Emma?",
        "--ask",
        "Who is Mr. Knightley?",
        "--state-out",
        s(&state),
        "--json",
        "--max-new-tokens",
        "4",
    ]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let n = TokenFile::open(&tokens, None).unwrap().len() as u64;
    assert_eq!(v["tokens_read"], n);
    assert_eq!(v["segments"], n / 48);
    assert_eq!(v["answers"].as_array().unwrap().len(), 2);
    assert!(v["tokens_per_s"].as_f64().unwrap() > 0.0 && v["peak_rss_bytes"].as_u64().unwrap() > 0);
    let asked =
        ok(rmt_fast(&["ask", s(&state), "--model", s(&model), "Where is Emma?", "--json", "--max-new-tokens", "4"]));
    let w: serde_json::Value = serde_json::from_str(asked.trim()).unwrap();
    assert_eq!(w["answers"][0], v["answers"][0], "ask from the saved state answers as infer did");
    let text = ok(rmt_fast(&["ask", s(&state), "--model", s(&model), "Where is Emma?", "--max-new-tokens", "4"]));
    assert!(text.starts_with("Q: Where is Emma?\nA: "), "{text}");
    let info = ok(rmt_fast(&["info", s(&state)]));
    assert!(info.contains(&format!("tokens read  {n}")) && info.contains("store"), "{info}");
    assert!(ok(rmt_fast(&["info", s(&model)])).contains("retrieval V2"));
    assert!(v["warning"].is_null() && v["trained_segments"].is_null(), "no trained length recorded: no warning");
    // a model trained on samples of 8 segments warns past them, in text and JSON, in `infer` and `ask`
    let trained_cfg = dir.join("cfg-8.json");
    std::fs::write(&trained_cfg, MODEL_CFG.replacen('{', r#"{"trained_segments": 8, "#, 1)).unwrap();
    let short_trained = dir.join("trained-8.safetensors");
    ok(rmt_fast(&["init", "--config", s(&trained_cfg), "--seed", "3", "-o", s(&short_trained)]));
    assert!(
        ok(rmt_fast(&["info", s(&short_trained)])).contains("trained on   samples of up to 8 segments (384 tokens)")
    );
    let state8 = dir.join("s8.state");
    let o = rmt_fast(&["infer", s(&tokens), "--model", s(&short_trained), "--state-out", s(&state8), "--json"]);
    let warned: serde_json::Value = serde_json::from_str(ok(o.clone()).trim()).unwrap();
    let warning = format!("the stream is {} segments", n / 48);
    assert!(warned["warning"].as_str().unwrap().starts_with(&warning), "{warned}");
    assert!(stderr(&o).contains(&format!("warning: {warning}")), "{}", stderr(&o));
    let o = rmt_fast(&["ask", s(&state8), "--model", s(&short_trained), "Where is Emma?", "--max-new-tokens", "2"]);
    assert!(stderr(&o).contains(&format!("warning: {warning}")), "{}", stderr(&o));

    // wrong model, wrong stream, bad flags, missing default model, no GPU
    let other = dir.join("other.safetensors");
    ok(rmt_fast(&["init", "--config", s(&dir.join("cfg.json")), "--seed", "4", "-o", s(&other)]));
    fails_with(rmt_fast(&["ask", s(&state), "--model", s(&other), "Where?"]), "another model");
    fails_with(rmt_fast(&["infer", s(&tokens), "--model", s(&other), "--resume", s(&state)]), "another model");
    let shifted = dir.join("shifted.bin");
    let mut all = Vec::new();
    TokenFile::open(&tokens, None).unwrap().read_into(0..n as usize, &mut all);
    all[3] = all[3].wrapping_add(1) % 50000;
    let mut w = TokenWriter::create(&shifted, TokenDtype::U16).unwrap();
    w.write(&all).unwrap();
    w.finish().unwrap();
    fails_with(rmt_fast(&["infer", s(&shifted), "--model", s(&model), "--resume", s(&state)]), "different stream");
    fails_with(rmt_fast(&["infer", s(&tokens), "--model", s(&model), "--checkpoint-every", "3"]), "needs --state-out");
    // without --model: the bundled default reads the stream and answers
    let default = ok(rmt_fast(&["infer", s(&tokens), "--ask", "Where is Emma?", "--json"]));
    assert!(default.contains("\"answers\"") && default.contains("Where is Emma?"), "{default}");
    fails_with(rmt_fast(&["infer", s(&tokens), "--model", s(&model), "--device", "cuda"]), "no CUDA driver");
    fails_with(rmt_fast(&["ask", s(&tokens), "--model", s(&model), "Where?"]), "not an rmt-fast state file");
    fails_with(rmt_fast(&["info", s(&dir.join("nothing"))]), "nothing");
}

/// Reads `tokens` in one run; returns the final state's bytes.
fn uninterrupted(model: &Path, tokens: &Path, out: &Path) -> Vec<u8> {
    ok(rmt_fast(&["infer", s(tokens), "--model", s(model), "--state-out", s(out), "--threads", "1"]));
    std::fs::read(out).unwrap()
}

/// Continues the run saved in `state` to the end of `tokens`, writing the final state over it.
fn resume(model: &Path, tokens: &Path, state: &Path) {
    ok(rmt_fast(&[
        "infer",
        s(tokens),
        "--model",
        s(model),
        "--resume",
        s(state),
        "--state-out",
        s(state),
        "--threads",
        "1",
    ]));
}

fn spawn_infer(model: &Path, tokens: &Path, state: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_rmt-fast"))
        .args([
            "infer",
            s(tokens),
            "--model",
            s(model),
            "--state-out",
            s(state),
            "--checkpoint-every",
            "5",
            "--threads",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for_checkpoint(state: &Path, child: &mut std::process::Child) {
    let t0 = Instant::now();
    while !state.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before its first checkpoint");
        assert!(t0.elapsed() < Duration::from_secs(60), "no checkpoint within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tokens_read(state: &Path) -> u64 {
    rmt_fast::state_file::load_state(state, &Default::default()).unwrap().1.tokens_read
}

#[test]
fn sigkill_mid_stream_then_resume_is_bit_identical() {
    let dir = scratch_dir("sigkill");
    let (model, tokens) = setup(&dir, 400_000);
    let total = TokenFile::open(&tokens, None).unwrap().len() as u64;
    let want = uninterrupted(&model, &tokens, &dir.join("whole.state"));

    let state = dir.join("killed.state");
    let mut child = spawn_infer(&model, &tokens, &state);
    wait_for_checkpoint(&state, &mut child);
    std::thread::sleep(Duration::from_millis(150));
    child.kill().unwrap(); // SIGKILL: no chance to save anything
    child.wait().unwrap();
    let at = tokens_read(&state);
    assert!(at > 0 && at < total, "killed mid-stream: checkpoint at {at} of {total}");
    assert_eq!(at % (5 * 48), 0, "checkpoints fall every 5 segments");

    resume(&model, &tokens, &state);
    assert_eq!(std::fs::read(&state).unwrap(), want, "resumed final state equals the uninterrupted one, byte for byte");
}

#[test]
fn sigterm_saves_the_state_and_exits_130() {
    let dir = scratch_dir("sigterm");
    let (model, tokens) = setup(&dir, 400_000);
    let total = TokenFile::open(&tokens, None).unwrap().len() as u64;
    let want = uninterrupted(&model, &tokens, &dir.join("whole.state"));

    let state = dir.join("stopped.state");
    let mut child = spawn_infer(&model, &tokens, &state);
    wait_for_checkpoint(&state, &mut child);
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("state saved to"), "{}", stderr(&out));
    let at = tokens_read(&state);
    assert!(at > 0 && at < total, "stopped mid-stream at {at} of {total}");

    resume(&model, &tokens, &state);
    assert_eq!(std::fs::read(&state).unwrap(), want);
}
