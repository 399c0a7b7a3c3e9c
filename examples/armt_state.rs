//! How an ARMT's associative state grows along a stream: reads the context of one BABILong sample segment by
//! segment and prints, per layer, after 1, 2, 4, … segments (RMT-SPEC §3.1): the Frobenius norms of `A` and `z`,
//! of that segment's write `ΔA`, and the cosine between it and the segment before's write. Writes that pile up
//! in one direction (cosine near +1) grow `A` linearly; writes that turn from one segment to the next (cosine
//! near −1) come from rows that have changed, or from a delta rule that overshoots (the write's gain along its
//! key above 2; bench/results/2026-11-27-qa1-armt-long measures that gain).
//!
//!     cargo run --release --example armt_state -- models/default.safetensors DIR/qa1/64k.jsonl [INDEX]
//!
//! DIR is a `rmt-fast babilong gen` directory; INDEX picks the sample (default 0).

use rmt_fast::stream::tokenizer::Tokenizer;
use rmt_fast::{Engine, Model};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, samples, rest @ ..] = args.as_slice() else {
        return Err("usage: armt_state MODEL SAMPLES.jsonl [INDEX]".into());
    };
    let index: usize = rest.first().map_or(Ok(0), |i| i.parse())?;
    let model = Model::load(model)?;
    let cfg = model.config.clone();
    let (d, dk, seg) = (cfg.n_embd, cfg.memory.key_width(), cfg.memory.segment_size);
    if dk == 0 {
        return Err("not an ARMT model".into());
    }
    let line = std::fs::read_to_string(samples)?.lines().nth(index).ok_or("no such sample")?.to_string();
    let sample: serde_json::Value = serde_json::from_str(&line)?;
    let tokens = Tokenizer::gpt2().encode(sample["input"].as_str().ok_or("no `input`")?);
    let mut session = Engine::cpu(model).session();
    let norm = |x: &[f32]| x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    let layer_len = dk * (d + 1);
    let mut before = session.state().memory.clone();
    let mut last_write = vec![0.0f32; before.len()];
    for (i, chunk) in tokens.chunks_exact(seg).enumerate() {
        session.read(chunk)?;
        let after = session.state().memory.clone();
        let write: Vec<f32> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        let n = i + 1;
        if n.is_power_of_two() || n == tokens.len() / seg {
            let layers: Vec<String> = (0..after.len() / layer_len)
                .map(|l| {
                    let a = |x: &[f32]| x[l * layer_len..][..dk * d].to_vec();
                    let (w, w0) = (a(&write), a(&last_write));
                    let dot: f64 = w.iter().zip(&w0).map(|(&x, &y)| x as f64 * y as f64).sum();
                    let cos = dot / (norm(&w) * norm(&w0)).max(f64::MIN_POSITIVE);
                    let z = &after[l * layer_len + dk * d..][..dk];
                    format!("|A| {:.1e} |z| {:.1e} |dA| {:.1e} cos {cos:+.2}", norm(&a(&after)), norm(z), norm(&w))
                })
                .collect();
            println!("{n:5} segments: {}", layers.join("; "));
        }
        (before, last_write) = (after, write);
    }
    Ok(())
}
