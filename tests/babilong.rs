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
        // the supporting facts: the real files' (tests/babi.rs: the solver names exactly those) or the generators'
        let supporting: Vec<usize> =
            r["supporting"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as usize).collect();
        let derived = rmt_fast::babilong::solver::derive(&facts, r["question"].as_str().unwrap()).unwrap();
        assert_eq!(supporting, derived.supporting, "{task} {name}");
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

/// A random one-layer RMT with segments of 256, in `dir`.
fn tiny_model(dir: &Path) -> std::path::PathBuf {
    common::init_model(
        dir,
        r#"{"n_layer": 1, "n_head": 2, "n_embd": 32, "vocab_size": 50257, "n_positions": 600,
        "memory": {"kind": "rmt", "num_mem_tokens": 4, "segment_size": 256}}"#,
        2,
    )
}

/// `gen` with more samples (same seed) writes the same first samples, so `eval --first` runs the new ones only,
/// and merged with the old results they equal an evaluation of the whole grown set.
#[test]
fn grown_sets_are_evaluated_by_their_new_samples() {
    let dir = scratch_dir("babilong-grow");
    let model = tiny_model(&dir);
    let (small, grown) = (dir.join("small"), dir.join("grown"));
    for (out, n) in [(&small, "2"), (&grown, "4")] {
        let o = gen(&["--tasks", "qa1,qa2", "--lengths", "0k,1000", "--samples", n, "--seed", "4", "-o", s(out)]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    for f in ["qa1/0k", "qa1/1000", "qa2/0k", "qa2/1000"] {
        let (a, b) = (records(&small.join(format!("{f}.jsonl"))), records(&grown.join(format!("{f}.jsonl"))));
        assert_eq!((a.len(), b.len()), (2, 4));
        assert_eq!(a[..], b[..2], "{f}: the first samples are the same");
    }
    let eval = |data: &Path, prefix: &Path, extra: &[&str]| {
        let mut args = vec!["babilong", "eval", "--model", s(&model), "--data", s(data), "-o", s(prefix)];
        args.extend_from_slice(extra);
        let o = rmt_fast(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        rmt_fast::babilong::eval::Results::read(&prefix.with_extension("json")).unwrap()
    };
    let old = eval(&small, &dir.join("old"), &[]);
    let new = eval(&grown, &dir.join("new"), &["--first", "2"]);
    assert!(new.predictions.iter().all(|p| p.index >= 2) && new.predictions.len() == 8);
    assert!(new.source.contains("from sample 2"), "{}", new.source);
    let merged = dir.join("merged");
    let o = rmt_fast(&["babilong", "merge", s(&dir.join("old.json")), s(&dir.join("new.json")), "-o", s(&merged)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = rmt_fast::babilong::eval::Results::read(&merged.with_extension("json")).unwrap();
    let whole = eval(&grown, &dir.join("whole"), &[]);
    assert_eq!((m.cells, m.predictions), (whole.cells, whole.predictions));
    assert_eq!(old.predictions.len(), 8);
    // a selection past the set's end is an error, not an empty table
    let o = rmt_fast(&["babilong", "eval", "--model", s(&model), "--data", s(&grown), "--first", "4"]);
    assert!(!o.status.success() && stderr(&o).contains("no sample is selected"), "{}", stderr(&o));
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

#[test]
fn score_counts_exactly_the_known_right_subset() {
    let dir = scratch_dir("babilong-score");
    // (task, target, output, question, right by the label-set metric?)
    let rows = [
        ("qa1", "kitchen", "The kitchen.", "Where is Mary? ", true),
        ("qa1", "kitchen", "Mary is in the kitchen", "Where is Mary? ", true),
        ("qa1", "kitchen", "In the kitchen. Then the office", "Where is Mary? ", true), // cut at the first '.'
        ("qa1", "kitchen", "kitchen or garden", "Where is Mary? ", false),              // two labels
        ("qa1", "kitchen", "office", "Where is Mary? ", false),
        ("qa4", "garden", "garden", "What is the garden north of?", false), // a label of the question is ignored
        ("qa4", "bedroom", "the bedroom", "What is the garden north of?", true),
        ("qa8", "apple,milk", "apple and milk", "What is Mary carrying? ", true),
        ("qa8", "apple,milk", "apple", "What is Mary carrying? ", false),
        ("qa5", "Fred", "fred gave it", "Who gave the milk? ", true),
    ];
    let lines: Vec<String> = rows
        .iter()
        .map(|(t, target, out, q, _)| {
            serde_json::json!({"task": t, "target": target, "output": out, "question": q, "length": 4000}).to_string()
        })
        .collect();
    let preds = dir.join("llm.jsonl");
    std::fs::write(&preds, lines.join("\n")).unwrap();
    let o = rmt_fast(&["babilong", "score", "--predictions", s(&preds), "-o", s(&dir.join("scores"))]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = rmt_fast::babilong::eval::Results::read(&dir.join("scores.json")).unwrap();
    for (i, row) in rows.iter().enumerate() {
        let p = r.predictions.iter().find(|p| p.index == i).unwrap();
        assert_eq!(p.correct, row.4, "row {i}: {row:?}");
    }
    let qa1 = r.cells.iter().find(|c| c.task == "qa1").unwrap();
    assert_eq!((qa1.n, qa1.correct, qa1.length), (5, 3, 4000));
    assert!((qa1.accuracy - 0.6).abs() < 1e-12);
    let (lo, hi) = rmt_fast::babilong::eval::wilson(3, 5);
    assert!((qa1.ci_low - lo).abs() < 1e-12 && (lo - 0.2307).abs() < 1e-3 && (hi - 0.8824).abs() < 1e-3);
    assert!(std::fs::read_to_string(dir.join("scores.md")).unwrap().contains("| qa1 | 60.0 (5) [23–88] |"));
    assert!(std::fs::read_to_string(dir.join("scores.csv")).unwrap().contains("qa8,4000,2,1,0.500000"));
    std::fs::write(&preds, "{\"task\": \"qa1\"}").unwrap();
    let o = rmt_fast(&["babilong", "score", "--predictions", s(&preds)]);
    assert!(!o.status.success() && stderr(&o).contains("llm.jsonl:1"), "{}", stderr(&o));
}

/// Evaluation agrees with an independent path (the context cut out of the twin into its own token file, answered
/// by `infer --ask`), scores exact match, and two shards merged equal one run; the results plot as SVG.
#[test]
fn eval_matches_infer_and_shards_merge_and_plots_draw() {
    let dir = scratch_dir("babilong-eval");
    let model = tiny_model(&dir);
    let data = dir.join("data");
    assert!(gen(&["--tasks", "qa1,qa2", "--lengths", "0k,1000", "--samples", "3", "--seed", "4", "-o", s(&data)])
        .status
        .success());

    // evaluates into PREFIX.{md,csv,json} and reads the results back
    let eval = |prefix: &Path, extra: &[&str]| {
        let mut args = vec![
            "babilong",
            "eval",
            "--model",
            s(&model),
            "--data",
            s(&data),
            "-o",
            s(prefix),
            "--max-new-tokens",
            "3",
        ];
        args.extend_from_slice(extra);
        let o = rmt_fast(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        rmt_fast::babilong::eval::Results::read(&prefix.with_extension("json")).unwrap()
    };
    let whole = dir.join("whole");
    let r = eval(&whole, &[]);
    assert_eq!(r.predictions.len(), 12);
    assert_eq!(r.cells.len(), 4);
    for c in &r.cells {
        let right = r
            .predictions
            .iter()
            .filter(|p| p.task == c.task && p.length == c.length && p.prediction == p.target)
            .count();
        assert_eq!((c.n, c.correct), (3, right));
    }
    // the first qa2 1000-token sample, answered by `infer` from its own token file
    let rec = &records(&data.join("qa2/1000.jsonl"))[0];
    let twin = TokenFile::open(data.join("qa2/1000.bin"), None).unwrap();
    let (off, ctx) =
        (rec["tokens"]["offset"].as_u64().unwrap() as usize, rec["tokens"]["context"].as_u64().unwrap() as usize);
    let mut context = Vec::new();
    twin.read_into(off..off + ctx, &mut context);
    let single = dir.join("single.bin");
    let mut w =
        rmt_fast::stream::tokens::TokenWriter::create(&single, rmt_fast::stream::tokens::TokenDtype::U16).unwrap();
    w.write(&context).unwrap();
    w.finish().unwrap();
    let out = rmt_fast(&[
        "infer",
        s(&single),
        "--model",
        s(&model),
        "--ask",
        rec["question"].as_str().unwrap(),
        "--json",
        "--max-new-tokens",
        "3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = r.predictions.iter().find(|p| p.task == "qa2" && p.length == 1000 && p.index == 0).unwrap();
    assert_eq!(v["answers"][0]["answer"].as_str().unwrap(), p.prediction);

    // several samples at a time: the same predictions, in the same order
    assert_eq!(eval(&dir.join("batched"), &["--batch", "3"]).predictions, r.predictions);

    let (a, b, merged) = (dir.join("a"), dir.join("b"), dir.join("merged"));
    for (shard, out) in [("0/2", &a), ("1/2", &b)] {
        eval(out, &["--shard", shard]);
    }
    let o =
        rmt_fast(&["babilong", "merge", s(&a.with_extension("json")), s(&b.with_extension("json")), "-o", s(&merged)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = rmt_fast::babilong::eval::Results::read(&merged.with_extension("json")).unwrap();
    assert_eq!((m.cells.clone(), m.predictions.clone()), (r.cells.clone(), r.predictions.clone()));
    // results of another sample set under the same indices are refused, not dropped as duplicates
    let other = dir.join("other.json");
    let mut o_res = rmt_fast::babilong::eval::Results::read(&a.with_extension("json")).unwrap();
    o_res.predictions[0].question = "Where is nobody? ".into();
    std::fs::write(&other, serde_json::to_string(&o_res).unwrap()).unwrap();
    let o = rmt_fast(&["babilong", "merge", s(&a.with_extension("json")), s(&other), "-o", s(&merged)]);
    assert!(!o.status.success() && stderr(&o).contains("disagree on"), "{}", stderr(&o));
    let o = rmt_fast(&["babilong", "eval", "--model", s(&model), "--data", s(&data), "--shard", "2/2"]);
    assert!(!o.status.success() && stderr(&o).contains("bad shard"));

    let heat = dir.join("heat.svg");
    assert!(rmt_fast(&["babilong", "plot", s(&whole.with_extension("json")), "-o", s(&heat)]).status.success());
    let svg = std::fs::read_to_string(&heat).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>") && svg.contains(">qa2<") && svg.contains(">1k<")
    );
    let lines = dir.join("lines.svg");
    assert!(rmt_fast(&[
        "babilong",
        "plot",
        s(&a.with_extension("json")),
        s(&b.with_extension("json")),
        "-o",
        s(&lines)
    ])
    .status
    .success());
    assert!(std::fs::read_to_string(&lines).unwrap().matches("<polyline").count() == 2);
    // the heatmap as PNG: 2 tasks × 2 lengths of 64×32 cells, the first cell in its accuracy's colour
    let png_path = dir.join("heat.png");
    assert!(rmt_fast(&["babilong", "plot", s(&whole.with_extension("json")), "-o", s(&png_path)]).status.success());
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png_path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut px = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut px).unwrap();
    assert_eq!((info.width, info.height), (60 + 2 * 64 + 10, 30 + 2 * 32 + 10));
    let first = r.cells.iter().find(|c| c.task == "qa1" && c.length == 0).unwrap();
    let at = (32 * info.width as usize + 60 + 3) * 3; // inside the first cell, left of its number
    assert_eq!(&px[at..at + 3], &rmt_fast::babilong::plot::colour_rgb(first.accuracy)[..]);
    let o = rmt_fast(&[
        "babilong",
        "plot",
        s(&a.with_extension("json")),
        s(&b.with_extension("json")),
        "-o",
        s(&dir.join("x.png")),
    ]);
    assert!(!o.status.success() && stderr(&o).contains("plot several as .svg"), "{}", stderr(&o));
    let o = rmt_fast(&["babilong", "plot", s(&whole.with_extension("json")), "-o", s(&dir.join("x.pdf"))]);
    assert!(!o.status.success() && stderr(&o).contains(".svg or .png"));
}

/// `babilong depth` puts each prediction in the band of its needle (the last supporting fact's token offset over
/// the context), leaves out cells the data does not hold, and refuses results of another set.
#[test]
fn depth_bands_follow_the_last_supporting_fact() {
    use rmt_fast::babilong::eval::{Prediction, Results};
    let dir = scratch_dir("babilong-depth");
    let data = dir.join("data");
    let o = gen(&["--tasks", "qa1,qa2", "--lengths", "2000,4000", "--samples", "12", "--seed", "3", "-o", s(&data)]);
    assert!(o.status.success(), "{}", stderr(&o));
    // predictions right on even indices, and one cell the data does not hold
    let mut predictions = Vec::new();
    let mut expected = std::collections::BTreeMap::new(); // (task, length, band) → (n, correct)
    for task in ["qa1", "qa2"] {
        for length in [2000, 4000] {
            for r in records(&data.join(task).join(format!("{length}.jsonl"))) {
                let index = r["index"].as_u64().unwrap() as usize;
                let last = r["supporting"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap()).max().unwrap();
                let at = r["fact_positions"][last as usize].as_u64().unwrap() as f64;
                let band = (4.0 * at / length as f64) as usize;
                let e = expected.entry((task, length, band)).or_insert((0, 0));
                *e = (e.0 + 1, e.1 + index.is_multiple_of(2) as usize);
                predictions.push(Prediction {
                    task: task.into(),
                    length,
                    index,
                    question: r["question"].as_str().unwrap().into(),
                    target: r["target"].as_str().unwrap().into(),
                    prediction: String::new(),
                    correct: index.is_multiple_of(2),
                });
            }
        }
    }
    assert!(expected.len() > 8, "needles in several bands: {expected:?}");
    let mut extra = predictions[0].clone();
    extra.length = 1000;
    predictions.push(extra);
    let write = |name: &str, p: &[Prediction]| {
        let path = dir.join(name);
        let results = Results::from_predictions("test".into(), p.to_vec());
        std::fs::write(&path, serde_json::to_string(&results).unwrap()).unwrap();
        path
    };
    let results = write("results.json", &predictions);
    let out = dir.join("depth");
    let o = rmt_fast(&["babilong", "depth", s(&results), "--data", s(&data), "--bands", "4", "-o", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("left out (not in the data): qa1 1k"), "{}", stderr(&o));
    let md = std::fs::read_to_string(out.with_extension("md")).unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), md);
    for ((task, length, band), (n, correct)) in &expected {
        let row = md.split(&format!("| {task}: depth |")).nth(1).unwrap().lines().nth(2 + band).unwrap();
        let column = if *length == 2000 { 1 } else { 2 };
        let cell = row.split('|').nth(1 + column).unwrap().trim();
        let pct = (100.0 * *correct as f64 / *n as f64).round();
        assert!(
            cell.starts_with(&format!("{pct} ({n}) [")),
            "{task} {length} band {band}: {cell} against {correct}/{n}"
        );
    }
    let svg = std::fs::read_to_string(out.with_extension("svg")).unwrap();
    assert_eq!(svg.matches("<rect x=").count(), 2 * 4 * 2, "a cell per task × band × length");
    assert!(svg.contains(">qa2 75–100 %<"));

    // results of another set: a question that differs, an index the set does not have, a set given twice
    let mut other = predictions.clone();
    other[1].question = "Where is nobody? ".into();
    let o = rmt_fast(&["babilong", "depth", s(&write("other.json", &other)), "--data", s(&data), "-o", s(&out)]);
    assert!(!o.status.success() && stderr(&o).contains("another set"), "{}", stderr(&o));
    let mut past = predictions.clone();
    past[1].index = 99;
    let o = rmt_fast(&["babilong", "depth", s(&write("past.json", &past)), "--data", s(&data), "-o", s(&out)]);
    assert!(!o.status.success() && stderr(&o).contains("is not in the data"), "{}", stderr(&o));
    let o = rmt_fast(&["babilong", "depth", s(&results), "--data", s(&data), s(&data), "-o", s(&out)]);
    assert!(!o.status.success() && stderr(&o).contains("two samples are"), "{}", stderr(&o));
}
