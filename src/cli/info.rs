//! `rmt-fast info FILE`: what a model, state or token file holds.

use std::path::Path;

use anyhow::Context;
use rmt_fast::state_file::load_state;
use rmt_fast::stream::tokens::{TokenDtype, TokenFile};
use rmt_fast::Model;

/// The metadata keys and tensor dtypes of a safetensors file, from its header alone (8-byte length, then JSON);
/// `None` if the file is not safetensors.
fn safetensors_header(path: &Path) -> Option<(Vec<String>, Vec<String>)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut n = [0u8; 8];
    f.read_exact(&mut n).ok()?;
    let n = u64::from_le_bytes(n);
    if !(2..=100 << 20).contains(&n) || 8 + n > f.metadata().ok()?.len() {
        return None;
    }
    let mut head = vec![0u8; n as usize];
    f.read_exact(&mut head).ok()?;
    let json: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&head).ok()?;
    let keys =
        json.get("__metadata__").and_then(|m| m.as_object()).map(|m| m.keys().cloned().collect()).unwrap_or_default();
    let dtypes = json.values().filter_map(|t| t.get("dtype")?.as_str().map(String::from)).collect();
    Some((keys, dtypes))
}

/// The `rmt-fast-train` metadata of a checkpoint.
fn training_metadata(path: &Path) -> anyhow::Result<serde_json::Value> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let text = header.metadata().as_ref().and_then(|m| m.get("rmt-fast-train")).cloned().unwrap_or_default();
    Ok(serde_json::from_str(&text)?)
}

pub fn run(path: &Path, dtype: Option<TokenDtype>) -> anyhow::Result<()> {
    let size = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
    match safetensors_header(path) {
        Some((keys, _)) if keys.iter().any(|k| k == "rmt-fast-state") => {
            let (state, meta) = load_state(path, &Default::default())?;
            println!("{}: rmt-fast session state ({})", path.display(), super::human_bytes(size));
            println!("  tokens read  {}", meta.tokens_read);
            println!("  segments     {}", meta.segments);
            println!("  tail         {} tokens", state.tail.len());
            match state.memory.len() % meta.n_embd {
                0 => println!("  memory       {} × {}", state.memory.len() / meta.n_embd, meta.n_embd),
                _ => println!("  memory       {} values (ARMT's associative state)", state.memory.len()),
            }
            println!(
                "  store        {} × {} (RMT-R past memory states, {:?})",
                state.store.rows(),
                meta.n_embd,
                state.store.dtype()
            );
            println!("  model        fingerprint {}", meta.model);
        }
        Some((keys, _)) if keys.iter().any(|k| k == "rmt-fast-train") => {
            let meta = training_metadata(path)?;
            let (c, p) = (&meta["model"], &meta["progress"]);
            println!("{}: rmt-fast training checkpoint ({})", path.display(), super::human_bytes(size));
            println!(
                "  model        {} layers × {} wide, {} memory tokens, segments of {}",
                c["n_layer"], c["n_embd"], c["memory"]["num_mem_tokens"], c["memory"]["segment_size"]
            );
            println!(
                "  progress     stage {} step {} (optimizer step {})",
                p["stage"].as_u64().unwrap_or(0) + 1,
                p["step"],
                meta["adam_t"]
            );
            println!("  best         validation accuracy {} in this stage", p["best_accuracy"]);
        }
        Some((_, dtypes)) => {
            let model = Model::load(path)?;
            let c = &model.config;
            let mut kinds = dtypes;
            kinds.sort();
            kinds.dedup();
            println!("{}: rmt-fast model ({}, {})", path.display(), super::human_bytes(size), kinds.join("+"));
            println!(
                "  memory       {:?}, {} memory tokens, segments of {}{}",
                c.memory.kind,
                c.memory.num_mem_tokens,
                c.memory.segment_size,
                c.memory.retrieval.map_or(String::new(), |r| format!(", retrieval {r:?}"))
                    + &c.memory
                        .d_mem
                        .map_or(String::new(), |k| format!(", associative keys {k} → {}", c.memory.key_width()))
                    + if c.memory.write == rmt_fast::AssociativeWrite::Replacing { ", replacing write" } else { "" }
                    + &c.memory.decay.map_or(String::new(), |l| format!(", decay {l}"))
            );
            println!(
                "  backbone     GPT-2, {} layers × {} wide, {} heads, {} positions",
                c.n_layer, c.n_embd, c.n_head, c.n_positions
            );
            println!(
                "  vocabulary   {} (EOS {}, GEN {}), LM head {}",
                c.vocab_size,
                c.eos_token_id,
                c.gen_token_id,
                if model.weights.lm_head.is_some() { "untied" } else { "tied to wte" }
            );
            if let Some(t) = &c.question_template {
                println!("  questions    asked as {t:?}");
            }
            if let Some(n) = c.trained_segments {
                println!("  trained on   samples of up to {n} segments ({} tokens)", n * c.memory.segment_size as u64);
            }
            println!("  parameters   {}", model.parameter_count());
            println!("  fingerprint  {:016x}", model.fingerprint());
        }
        None => {
            let f = TokenFile::open(path, dtype)?;
            println!("{}: token file ({}), {:?}", path.display(), super::human_bytes(size), f.format());
            println!("  tokens       {}", f.len());
            println!("  segments     {} of 512 tokens (+ {} tail)", f.len() / 512, f.len() % 512);
        }
    }
    Ok(())
}
