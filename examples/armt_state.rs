//! How an ARMT's associative state grows along a stream: reads the context of one BABILong sample segment by
//! segment and prints, per layer, the Frobenius norms of `A` and `z` after 1, 2, 4, … segments (RMT-SPEC §3.1).
//!
//!     cargo run --release --example armt_state -- models/candidates/armt-run3.safetensors DIR/qa1/64k.jsonl [INDEX]
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
    for (i, chunk) in tokens.chunks_exact(seg).enumerate() {
        session.read(chunk)?;
        let n = i + 1;
        if n.is_power_of_two() || n == tokens.len() / seg {
            let layers: Vec<String> = session
                .state()
                .memory
                .chunks_exact(dk * (d + 1))
                .map(|l| format!("|A| {:.1e} |z| {:.1e}", norm(&l[..dk * d]), norm(&l[dk * d..])))
                .collect();
            println!("{n:5} segments: {}", layers.join("; "));
        }
    }
    Ok(())
}
