//! Session semantics (ENGINEERING.md §3.3), bit for bit: reading in pieces equals one pass, a snapshot restored
//! continues exactly as the uninterrupted session, asking leaves the state as it was, bad input changes nothing.

mod common;

use common::fixture;
use rmt_fast::state_file::{load_state, save_state};
use rmt_fast::store::{StoreConfig, StoreDtype};
use rmt_fast::{Config, Engine, Model, Session};

/// The fixture models (RMT, RMT-R v1, RMT-R v2, ARMT): segment_size 16, vocabulary 96 (GEN 94, EOS 95).
fn engines() -> Vec<Engine> {
    ["rmt", "rmt_r_v1", "rmt_r_v2", "armt"]
        .iter()
        .map(|n| Engine::cpu(Model::load(fixture(&format!("{n}.safetensors"))).unwrap()))
        .collect()
}

/// A deterministic stream of ordinary tokens (below GEN).
fn stream(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed * 97) >> 7) % 94).collect()
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
        for pieces in [&[117][..], &[1, 2, 3, 4, 5, 6, 7], &[16, 16, 16], &[15, 1, 31, 33, 9], &[0, 50, 0, 60]] {
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
        assert_eq!(resumed.ask(&[1, 2, 3], 10).unwrap(), uninterrupted.ask(&[1, 2, 3], 10).unwrap());
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
        assert_eq!(s.ask(&stream(45, 5), 10).unwrap(), first, "asking twice gives the same answer");
        s.read(&stream(30, 6)).unwrap();
        let mut fresh = engine.restore(before).unwrap();
        fresh.read(&stream(30, 6)).unwrap();
        assert_eq!(s.snapshot(), fresh.snapshot(), "reading after ask continues as if ask never ran");
    }
}

#[test]
fn rmt_r_store_grows_by_one_state_per_segment() {
    let engine = &engines()[2];
    let mut s = engine.session();
    s.read(&stream(16 * 5 + 3, 7)).unwrap();
    let cfg = &engine.model().config;
    assert_eq!(s.state().segments, 5);
    assert_eq!(s.state().store.rows(), 5 * cfg.memory.num_mem_tokens);
    assert_eq!(s.state().store.width(), cfg.n_embd);
    // the last stored state is the current memory
    let md = s.state().memory.len();
    let all = s.state().store.to_vec();
    assert_eq!(&all[all.len() - md..], &s.state().memory[..]);
}

#[test]
fn bad_tokens_are_rejected_and_change_nothing() {
    let engine = &engines()[0];
    let mut s = engine.session();
    s.read(&stream(20, 8)).unwrap();
    let before = s.snapshot();
    let err = s.read(&[1, 2, 96, 3]).unwrap_err().to_string();
    assert!(err.contains("token 96 at index 2") && err.contains("vocabulary (96)"), "{err}");
    assert!(s.ask(&[1, 500], 3).unwrap_err().to_string().contains("token 500 at index 1"));
    assert_eq!(s.snapshot(), before);
}

#[test]
fn answers_that_would_run_past_the_positions_are_refused() {
    let engine = &engines()[0]; // n_positions 64: read 4 + final segment ≤ 16 + new tokens
    let err = engine.session().ask(&[1, 2, 3], 60).unwrap_err().to_string();
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
    bad.store.truncate(bad.store.rows() - 1);
    assert!(rmt_r.restore(bad).unwrap_err().to_string().contains("store"));
    let mut bad = good.clone();
    bad.tail = vec![1; 16];
    assert!(rmt_r.restore(bad).unwrap_err().to_string().contains("tail"));
    let mut bad = good.clone();
    bad.tail = vec![200];
    assert!(rmt_r.restore(bad).unwrap_err().to_string().contains("vocabulary"));
    // an RMT-R state does not fit an RMT model
    assert!(rmt.restore(good.clone()).unwrap_err().to_string().contains("store"));
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

fn rmt_r_engines(store: StoreConfig) -> Vec<Engine> {
    ["rmt_r_v1", "rmt_r_v2"]
        .iter()
        .map(|n| Engine::cpu(Model::load(fixture(&format!("{n}.safetensors"))).unwrap()).with_store(store.clone()))
        .collect()
}

/// A store that lives in a spill file gives the same bits as one in RAM, through reads, asks, state files and
/// restores.
#[test]
fn spilled_stores_equal_stores_in_ram() {
    let dir = common::scratch_dir("spill");
    let tiny = StoreConfig { ram_budget: 700, spill_dir: dir.clone(), ..Default::default() };
    for (ram, spilled) in rmt_r_engines(StoreConfig::default()).into_iter().zip(rmt_r_engines(tiny)) {
        let (mut a, mut b) = (ram.session(), spilled.session());
        a.read(&stream(300, 11)).unwrap();
        b.read(&stream(300, 11)).unwrap();
        assert!(b.state().store.is_spilled() && !a.state().store.is_spilled());
        assert_eq!(a.snapshot(), b.snapshot());
        assert_eq!(a.ask(&[4, 5, 6], 10).unwrap(), b.ask(&[4, 5, 6], 10).unwrap());

        let path = dir.join("spilled.state");
        let fp = spilled.model().fingerprint();
        save_state(&path, b.state(), fp, spilled.model().config.n_embd).unwrap();
        let (state, meta) =
            load_state(&path, &StoreConfig { ram_budget: 700, spill_dir: dir.clone(), ..Default::default() }).unwrap();
        assert_eq!(meta.tokens_read, 300);
        assert!(state.store.is_spilled());
        let mut c = spilled.restore(state).unwrap();
        c.read(&stream(100, 12)).unwrap();
        a.read(&stream(100, 12)).unwrap();
        assert_eq!(a.snapshot(), c.snapshot());
    }
    assert_eq!(
        std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "bin"))
            .count(),
        0,
        "spill files are removed"
    );
}

/// A bf16 store halves the bytes and moves answers by a bounded amount: answer logits within 1e-3 normalised
/// error of the f32 store's after 30 segments; a bf16 state restores bit for bit.
#[test]
fn bf16_store_is_close_to_f32_and_restores_exactly() {
    let bf16 = StoreConfig { dtype: StoreDtype::Bf16, ..Default::default() };
    for (f, b) in rmt_r_engines(StoreConfig::default()).into_iter().zip(rmt_r_engines(bf16)) {
        let (mut x, mut y) = (f.session(), b.session());
        x.read(&stream(480, 13)).unwrap();
        y.read(&stream(480, 13)).unwrap();
        assert_eq!(y.state().store.encoded().len() * 2, x.state().store.encoded().len());
        let (ax, ay) = (x.ask(&[7, 8], 1).unwrap(), y.ask(&[7, 8], 1).unwrap());
        let e = common::rel_err(&ay.logits[0], &ax.logits[0]);
        eprintln!("bf16 store vs f32 store, answer logits after 30 segments: {e:.2e}");
        assert!(e > 0.0 && e <= 1e-3, "{e:.3e}");

        let dir = common::scratch_dir("bf16-store");
        let path = dir.join("s.state");
        save_state(&path, y.state(), b.model().fingerprint(), b.model().config.n_embd).unwrap();
        let (state, _) = load_state(&path, &StoreConfig::default()).unwrap();
        assert_eq!(state.store.dtype(), StoreDtype::Bf16, "the file's dtype wins");
        let mut z = b.restore(state).unwrap();
        z.read(&stream(50, 14)).unwrap();
        y.read(&stream(50, 14)).unwrap();
        assert_eq!(z.snapshot(), y.snapshot());
    }
}

/// Throughput mode: three streams read as a batch (one stacked step per segment; ARMT's one after the other) end
/// with the memory and RMT-R store of three separate sessions, within 1e-5 (the stacked GEMM may round
/// differently), and answer alike.
#[test]
fn batched_streams_equal_separate_sessions() {
    for engine in engines() {
        let streams: Vec<Vec<u32>> = (0..3).map(|k| stream(16 * 5 + 7, 40 + k)).collect();
        let mut batch = engine.batch(3);
        for piece in [0..20, 20..50, 50..87] {
            let chunks: Vec<&[u32]> = streams.iter().map(|s| &s[piece.clone()]).collect();
            batch.read(&chunks).unwrap();
        }
        for (s, tokens) in batch.sessions().iter_mut().zip(&streams) {
            let mut alone = engine.session();
            alone.read(tokens).unwrap();
            let (a, b) = (s.state(), alone.state());
            assert_eq!(
                (a.segments, &a.tail, a.tokens_read, a.tokens_hash),
                (b.segments, &b.tail, b.tokens_read, b.tokens_hash)
            );
            assert!(common::rel_err(&a.memory, &b.memory) <= 1e-5);
            let (mut sa, mut sb) = (Vec::new(), Vec::new());
            a.store.read(0..a.store.rows(), &mut sa);
            b.store.read(0..b.store.rows(), &mut sb);
            assert_eq!(sa.len(), sb.len());
            assert!(sa.is_empty() || common::rel_err(&sa, &sb) <= 1e-5);
            assert_eq!(s.ask(&[3, 4], 4).unwrap().tokens, alone.ask(&[3, 4], 4).unwrap().tokens);
        }
        // out of lockstep: an error, nothing read
        let before = batch.sessions()[0].state().tokens_read;
        assert!(batch.read(&[&[1, 2], &[1], &[1, 2]]).unwrap_err().to_string().contains("equal length"));
        assert!(batch.read(&[&[1, 2]]).is_err());
        assert_eq!(batch.sessions()[0].state().tokens_read, before);
    }
}
