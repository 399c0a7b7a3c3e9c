//! `rmt-fast babilong gen`: exact lengths, facts in order at their recorded positions, reproducible bytes, clear
//! errors. Real bAbI files and Austen's novels from ../shared/data, and the built-in generators and synthetic prose.

mod common;

use std::path::Path;

use common::{rmt_fast, scratch_dir, shared_data, stderr};
use rmt_fast::stream::tokenizer::Tokenizer;
use rmt_fast::stream::tokens::TokenFile;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn gen(args: &[&str]) -> std::process::Output {
    let mut all = vec!["babilong", "gen"];
    all.extend_from_slice(args);
    rmt_fast(&all)
}

fn records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Checks every record of one (task, length) file against its token twin.
fn check(dir: &Path, task: &str, name: &str, length: usize) {
    let tok = Tokenizer::gpt2();
    let twin = TokenFile::open(dir.join(task).join(format!("{name}.bin")), None).unwrap();
    let mut all = Vec::new();
    twin.read_into(0..twin.len(), &mut all);
    for r in records(&dir.join(task).join(format!("{name}.jsonl"))) {
        let t = &r["tokens"];
        let (offset, context) = (t["offset"].as_u64().unwrap() as usize, t["context"].as_u64().unwrap() as usize);
        let facts: Vec<String> =
            r["facts"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect();
        let facts_len: usize = facts.iter().map(|f| tok.encode(&format!(" {f}")).len()).sum();
        assert_eq!(context, if length == 0 { facts_len } else { length }, "{task} {name}: exact context length");
        let ctx = &all[offset..offset + context];
        // facts in story order, each at its recorded position
        let positions = r["fact_positions"].as_array().unwrap();
        let mut last = 0;
        for (f, p) in facts.iter().zip(positions) {
            let (p, ft) = (p.as_u64().unwrap() as usize, tok.encode(&format!(" {f}")));
            assert!(p >= last, "facts in order");
            assert_eq!(&ctx[p..p + ft.len()], &ft[..], "{task} {name}: fact `{f}` at {p}");
            last = p + ft.len();
        }
        // then the question and GEN; the JSONL input is the decoded context
        let q = tok.encode(r["question"].as_str().unwrap());
        assert_eq!(&all[offset + context..offset + context + q.len()], &q[..]);
        assert_eq!(all[offset + context + q.len()], 35353);
        assert_eq!(r["input"].as_str().unwrap(), tok.decode(ctx).unwrap().trim_start());
        assert_eq!(t["target"].as_array().unwrap().len(), tok.encode(r["target"].as_str().unwrap()).len());
    }
}

#[test]
fn real_babi_in_austen_exact_lengths_and_facts_in_place() {
    let dir = scratch_dir("babilong-real");
    let babi = shared_data("babi/tasks_1-20_v1-2/en");
    let austen = shared_data("haystack/austen");
    let o = gen(&[
        "--tasks",
        "qa1,qa2,qa3",
        "--lengths",
        "0k,1k,2k,4k,16k",
        "--samples",
        "4",
        "--seed",
        "5",
        "--babi",
        s(&babi),
        "--haystack",
        s(&austen),
        "-o",
        s(&dir),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for task in ["qa1", "qa2", "qa3"] {
        for (name, n) in [("0k", 0), ("1k", 1000), ("2k", 2000), ("4k", 4000), ("16k", 16000)] {
            check(&dir, task, name, n);
        }
    }
    let r = &records(&dir.join("qa1/4k.jsonl"))[0];
    assert!(r["haystack"].as_str().unwrap().contains("austen") && r["task"] == "qa1" && r["length"] == 4000);
}

#[test]
fn built_in_generators_and_synthetic_prose_are_reproducible() {
    let (a, b, c) = (scratch_dir("babilong-a"), scratch_dir("babilong-b"), scratch_dir("babilong-c"));
    let args = |d: &Path, seed: &'static str| {
        vec![
            "--tasks".to_string(),
            "qa1,qa4,qa5".into(),
            "--lengths".into(),
            "0k,2k,5000".into(),
            "--samples".into(),
            "3".into(),
            "--seed".into(),
            seed.into(),
            "-o".into(),
            s(d).into(),
        ]
    };
    for (d, seed) in [(&a, "9"), (&b, "9"), (&c, "10")] {
        let v = args(d, seed);
        let o = gen(&v.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains("SYNTHETIC") || !std::io::IsTerminal::is_terminal(&std::io::stderr()));
    }
    for task in ["qa1", "qa4", "qa5"] {
        for name in ["0k", "2k", "5000"] {
            for ext in ["jsonl", "bin"] {
                let f = format!("{task}/{name}.{ext}");
                assert_eq!(
                    std::fs::read(a.join(&f)).unwrap(),
                    std::fs::read(b.join(&f)).unwrap(),
                    "{f}: same seed, same bytes"
                );
                assert_ne!(std::fs::read(a.join(&f)).unwrap(), std::fs::read(c.join(&f)).unwrap(), "{f}: another seed");
            }
            check(&a, task, name, rmt_fast::babilong::sample::parse_length(name).unwrap());
        }
    }
    assert_eq!(records(&a.join("qa5/2k.jsonl"))[0]["haystack"], "synthetic");
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = scratch_dir("babilong-bad");
    let fails = |args: &[&str], needle: &str| {
        let o = gen(args);
        assert!(!o.status.success() && stderr(&o).contains(needle), "expected `{needle}`: {}", stderr(&o));
    };
    fails(&["--babi", "/nonexistent/babi", "-o", s(&dir)], "/nonexistent/babi does not exist");
    fails(&["--tasks", "qa1,qa42", "-o", s(&dir)], "unknown bAbI task `qa42`");
    fails(&["--tasks", "qa6", "-o", s(&dir)], "built-in generators cover qa1–qa5");
    fails(&["--lengths", "4x", "-o", s(&dir)], "bad length `4x`");
    fails(&["--tasks", "qa2", "--lengths", "30", "--samples", "5", "-o", s(&dir)], "smaller than the sample's");
    let empty = scratch_dir("babilong-empty-haystack");
    fails(&["--haystack", s(&empty), "-o", s(&dir)], "holds no text");
}
