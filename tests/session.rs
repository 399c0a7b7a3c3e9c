//! Session semantics (ENGINEERING.md §3.3), bit for bit: reading in pieces equals one pass, a snapshot restored
//! continues exactly as the uninterrupted session, asking leaves the state as it was, bad input changes nothing.

mod common;

use common::fixture;
use rmt_fast::{Config, Engine, Model, Session};

/// The three fixture models (RMT, RMT-R v1, RMT-R v2): segment_size 16, vocabulary 96 (GEN 94, EOS 95).
fn engines() -> Vec<Engine> {
    ["rmt", "rmt_r_v1", "rmt_r_v2"]
        .iter()
        .map(|n| Engine::cpu(Model::load(fixture(&format!("{n}.safetensors"))).unwrap()))
        .collect()
}

/// A deterministic stream of ordinary tokens (below GEN).
fn stream(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed * 97) >> 7) % 94)
        .collect()
}

fn read_in(engine: &Engine, tokens: &[u32], pieces: &[usize]) -> Session {
    let mut s = engine.session();
    let mut at = 0usize;
    for &p in pieces.iter().chain(std::iter::once(&usize::MAX)) {
        let end = at.saturating_add(p).min(tokens.len());
        s.read(&tokens[at..end]).unwrap();
        at = end;
    }
    s
}

#[test]
fn read_in_pieces_then_ask_equals_one_pass() {
    let question = [5, 17, 33, 2];
    for engine in engines() {
        let context = stream(117, 1); // 7 full segments + a tail of 5
        let mut whole = context.clone();
        whole.extend_from_slice(&question);
        // one pass: the whole prompt goes through ask's left-aligned split
        let one_pass = engine.session().ask(&whole, 10).unwrap();
        for pieces in [
            &[117][..],
            &[1, 2, 3, 4, 5, 6, 7],
            &[16, 16, 16],
            &[15, 1, 31, 33, 9],
            &[0, 50, 0, 60],
        ] {
            let mut s = read_in(&engine, &context, pieces);
            assert_eq!(s.state().segments, 7);
            assert_eq!(s.state().tail.len(), 5);
            assert_eq!(s.ask(&question, 10).unwrap(), one_pass, "pieces {pieces:?}");
        }
        // reading the question too, then asking nothing, is the same pass
        let mut s = read_in(&engine, &whole, &[40]);
        assert_eq!(s.ask(&[], 10).unwrap(), one_pass);
    }
}

#[test]
fn snapshot_restore_continue_equals_no_interruption() {
    for engine in engines() {
        let (a, b) = (stream(70, 2), stream(90, 3));
        let mut uninterrupted = engine.session();
        uninterrupted.read(&a).unwrap();
        uninterrupted.read(&b).unwrap();

        let mut first = engine.session();
        first.read(&a).unwrap();
        let saved = first.snapshot();
        drop(first);
        let mut resumed = engine.restore(saved).unwrap();
        resumed.read(&b).unwrap();

        assert_eq!(resumed.snapshot(), uninterrupted.snapshot());
        assert_eq!(
            resumed.ask(&[1, 2, 3], 10).unwrap(),
            uninterrupted.ask(&[1, 2, 3], 10).unwrap()
        );
    }
}

#[test]
fn asking_leaves_the_state_alone() {
    for engine in engines() {
        let mut s = engine.session();
        s.read(&stream(60, 4)).unwrap();
        let before = s.snapshot();
        // a long question makes ask process several segments with write memory (and RMT-R stores)
        let first = s.ask(&stream(45, 5), 10).unwrap();
        assert_eq!(s.snapshot(), before);
        assert_eq!(
            s.ask(&stream(45, 5), 10).unwrap(),
            first,
            "asking twice gives the same answer"
        );
        s.read(&stream(30, 6)).unwrap();
        let mut fresh = engine.restore(before).unwrap();
        fresh.read(&stream(30, 6)).unwrap();
        assert_eq!(
            s.snapshot(),
            fresh.snapshot(),
            "reading after ask continues as if ask never ran"
        );
    }
}

#[test]
fn rmt_r_store_grows_by_one_state_per_segment() {
    let engine = &engines()[2];
    let mut s = engine.session();
    s.read(&stream(16 * 5 + 3, 7)).unwrap();
    let cfg = &engine.model().config;
    assert_eq!(s.state().segments, 5);
    assert_eq!(
        s.state().store.len(),
        5 * cfg.memory.num_mem_tokens * cfg.n_embd
    );
    // the last stored state is the current memory
    let md = s.state().memory.len();
    assert_eq!(
        &s.state().store[s.state().store.len() - md..],
        &s.state().memory[..]
    );
}

#[test]
fn bad_tokens_are_rejected_and_change_nothing() {
    let engine = &engines()[0];
    let mut s = engine.session();
    s.read(&stream(20, 8)).unwrap();
    let before = s.snapshot();
    let err = s.read(&[1, 2, 96, 3]).unwrap_err().to_string();
    assert!(
        err.contains("token 96 at index 2") && err.contains("vocabulary (96)"),
        "{err}"
    );
    assert!(s
        .ask(&[1, 500], 3)
        .unwrap_err()
        .to_string()
        .contains("token 500 at index 1"));
    assert_eq!(s.snapshot(), before);
}

#[test]
fn answers_that_would_run_past_the_positions_are_refused() {
    let engine = &engines()[0]; // n_positions 64: read 4 + final segment ≤ 16 + new tokens
    let err = engine
        .session()
        .ask(&[1, 2, 3], 60)
        .unwrap_err()
        .to_string();
    assert!(err.contains("positions"), "{err}");
    assert!(engine.session().ask(&[1, 2, 3], 40).is_ok());
}

#[test]
fn restore_checks_the_state_against_the_model() {
    let engines = engines();
    let (rmt, rmt_r) = (&engines[0], &engines[2]);
    let mut s = rmt_r.session();
    s.read(&stream(40, 9)).unwrap();
    let good = s.snapshot();

    let mut bad = good.clone();
    bad.store.truncate(bad.store.len() - 1);
    assert!(rmt_r
        .restore(bad)
        .unwrap_err()
        .to_string()
        .contains("store"));
    let mut bad = good.clone();
    bad.tail = vec![1; 16];
    assert!(rmt_r.restore(bad).unwrap_err().to_string().contains("tail"));
    let mut bad = good.clone();
    bad.tail = vec![200];
    assert!(rmt_r
        .restore(bad)
        .unwrap_err()
        .to_string()
        .contains("vocabulary"));
    // an RMT-R state does not fit an RMT model
    assert!(rmt
        .restore(good.clone())
        .unwrap_err()
        .to_string()
        .contains("store"));
    assert!(rmt_r.restore(good).is_ok());
}

#[test]
fn max_new_tokens_bounds_the_answer() {
    let cfg = Config::from_json(
        r#"{"n_layer": 1, "n_head": 2, "n_embd": 8, "vocab_size": 32, "n_positions": 40, "eos_token_id": 31,
            "gen_token_id": 30, "memory": {"kind": "rmt", "num_mem_tokens": 2, "segment_size": 8}}"#,
    )
    .unwrap();
    let engine = Engine::cpu(Model::random(cfg, 1).unwrap());
    let mut s = engine.session();
    for k in [0, 1, 4] {
        let a = s.ask(&[1, 2, 3], k).unwrap();
        assert!(a.tokens.len() + a.stopped_at_eos as usize <= k);
        assert_eq!(a.logits.len(), a.tokens.len() + a.stopped_at_eos as usize);
    }
}
