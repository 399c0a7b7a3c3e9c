//! Model shapes the benchmarks share.

use rmt_fast::Config;

/// A GPT-2 of `layers` × `width` (`heads` heads, GPT-2's vocabulary) with `mem` memory tokens and segments of
/// `seg`; `kind` is `rmt`, `rmt-r` (retrieval v2) or `armt` (`d_mem` 32).
pub fn shape(layers: usize, width: usize, heads: usize, kind: &str, mem: usize, seg: usize) -> Config {
    let extra = match kind {
        "rmt-r" => r#", "retrieval": "v2""#,
        "armt" => r#", "d_mem": 32"#,
        _ => "",
    };
    Config::from_json(&format!(
        r#"{{"n_layer": {layers}, "n_head": {heads}, "n_embd": {width}, "vocab_size": 50257, "n_positions": 1024,
            "memory": {{"kind": "{kind}", "num_mem_tokens": {mem}, "segment_size": {seg}{extra}}}}}"#
    ))
    .unwrap()
}
