//! Model files: round trips in every dtype, stock HF names, and a clear error naming the problem for every kind of
//! bad file.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rmt_fast::{Config, Engine, Error, FileDtype, MemoryConfig, Model};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

fn tiny(kind: &str) -> Config {
    let extra = match kind {
        "rmt-r" => r#", "retrieval": "v2""#,
        "armt" => r#", "d_mem": 2"#,
        _ => "",
    };
    Config::from_json(&format!(
        r#"{{"n_layer": 2, "n_head": 2, "n_embd": 8, "vocab_size": 40, "n_positions": 48, "eos_token_id": 39,
            "gen_token_id": 38, "memory": {{"kind": "{kind}", "num_mem_tokens": 2, "segment_size": 8{extra}}}}}"#
    ))
    .unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rmt-fast-model-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A safetensors file as (name → (dtype, shape, bytes)) plus metadata, to edit and write back.
struct Edit {
    tensors: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
    metadata: HashMap<String, String>,
}

impl Edit {
    fn of(model: &Model) -> Self {
        let bytes = model.to_bytes(FileDtype::F32).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let tensors =
            st.tensors().into_iter().map(|(n, t)| (n, (t.dtype(), t.shape().to_vec(), t.data().to_vec()))).collect();
        Edit { tensors, metadata: meta.metadata().clone().unwrap_or_default() }
    }

    fn write(&self, path: &Path) {
        let views: Vec<(String, TensorView<'_>)> =
            self.tensors.iter().map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
        std::fs::write(path, safetensors::serialize(views, Some(self.metadata.clone())).unwrap()).unwrap();
    }

    /// Writes and loads, returning the error message.
    fn load_err(&self, name: &str) -> String {
        let path = scratch(name);
        self.write(&path);
        let err = Model::load(&path).expect_err("the bad file must not load");
        format!("{err}")
    }
}

#[test]
fn round_trip_f32_is_exact_and_bf16_f16_are_rounded() {
    for kind in ["rmt", "rmt-r"] {
        let model = Model::random(tiny(kind), 5).unwrap();
        let path = scratch(&format!("{kind}.safetensors"));
        model.save(&path, FileDtype::F32).unwrap();
        let back = Model::load(&path).unwrap();
        assert_eq!(back.config, model.config);
        assert_eq!(back.to_bytes(FileDtype::F32).unwrap(), model.to_bytes(FileDtype::F32).unwrap());
        for (dtype, round) in [
            (FileDtype::Bf16, (|x: f32| half::bf16::from_f32(x).to_f32()) as fn(f32) -> f32),
            (FileDtype::F16, |x: f32| half::f16::from_f32(x).to_f32()),
        ] {
            model.save(&path, dtype).unwrap();
            let back = Model::load(&path).unwrap();
            let want: Vec<f32> = model.weights.wte.iter().map(|&x| round(x)).collect();
            assert_eq!(back.weights.wte, want, "{dtype:?}");
            assert_ne!(back.weights.wte, model.weights.wte, "{dtype:?} must round");
        }
    }
}

#[test]
fn stock_hf_names_with_config_json_and_memory_settings_load() {
    let model = Model::random(tiny("rmt"), 6).unwrap();
    let mut e = Edit::of(&model);
    // a stock GPT2LMHeadModel file: `transformer.` prefix, causal-mask buffers, an untied head, no config metadata
    e.tensors = e
        .tensors
        .into_iter()
        .map(|(n, t)| if n == "memory" { (n, t) } else { (format!("transformer.{n}"), t) })
        .collect();
    e.tensors.insert("transformer.h.0.attn.bias".into(), (Dtype::F32, vec![1, 1, 2, 2], vec![0; 16]));
    let wte = e.tensors["transformer.wte.weight"].clone();
    e.tensors.insert("lm_head.weight".into(), wte);
    e.metadata.clear();
    let dir = scratch("hf");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    e.write(&path);

    let err = Model::load(&path).unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");
    std::fs::write(
        dir.join("config.json"),
        r#"{"n_layer": 2, "n_head": 2, "n_embd": 8, "vocab_size": 40, "n_positions": 48, "eos_token_id": 39,
            "gen_token_id": 38, "model_type": "gpt2", "activation_function": "gelu_new"}"#,
    )
    .unwrap();
    let err = Model::load(&path).unwrap_err().to_string();
    assert!(err.contains("memory settings"), "{err}");

    let memory: MemoryConfig = model.config.memory.clone();
    let loaded = Model::load_with(&path, Some(memory)).unwrap();
    assert_eq!(loaded.config.n_layer, 2);
    assert!(loaded.weights.lm_head.is_some());
    // the untied head holds the same values as wte, so answers are identical
    let stream: Vec<u32> = (0..21).map(|i| i % 37).collect();
    let a = Engine::cpu(model).session().ask(&stream, 4).unwrap();
    let b = Engine::cpu(loaded).session().ask(&stream, 4).unwrap();
    assert_eq!(a, b);
}

#[test]
fn truncated_file() {
    let bytes = Model::random(tiny("rmt"), 1).unwrap().to_bytes(FileDtype::F32).unwrap();
    let path = scratch("truncated.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let err = Model::load(&path).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    assert!(err.to_string().contains("truncated.safetensors"), "{err}");
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(Model::load(&path).unwrap_err(), Error::Format { .. }));
}

#[test]
fn missing_file() {
    let err = Model::load(scratch("does-not-exist.safetensors")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("does-not-exist"), "{err}");
}

#[test]
fn wrong_shape() {
    let mut e = Edit::of(&Model::random(tiny("rmt"), 1).unwrap());
    e.tensors.insert("h.1.ln_2.weight".into(), (Dtype::F32, vec![9], vec![0; 36]));
    let err = e.load_err("shape.safetensors");
    assert!(err.contains("h.1.ln_2.weight") && err.contains("[9]") && err.contains("[8]"), "{err}");
}

#[test]
fn wrong_dtype() {
    let mut e = Edit::of(&Model::random(tiny("rmt"), 1).unwrap());
    let (_, shape, bytes) = e.tensors["wpe.weight"].clone();
    e.tensors.insert("wpe.weight".into(), (Dtype::I32, shape, bytes));
    let err = e.load_err("dtype.safetensors");
    assert!(err.contains("wpe.weight") && err.contains("I32") && err.contains("not supported"), "{err}");
}

#[test]
fn missing_tensor() {
    let mut e = Edit::of(&Model::random(tiny("rmt-r"), 1).unwrap());
    e.tensors.remove("retrieval.ln_kv.bias");
    let err = e.load_err("missing.safetensors");
    assert!(err.contains("retrieval.ln_kv.bias") && err.contains("missing"), "{err}");
}

#[test]
fn unexpected_tensor() {
    let mut e = Edit::of(&Model::random(tiny("rmt"), 1).unwrap());
    e.tensors.insert("retrieval.q_proj.weight".into(), (Dtype::F32, vec![8, 8], vec![0; 256]));
    let err = e.load_err("extra.safetensors");
    assert!(err.contains("retrieval.q_proj.weight") && err.contains("not expected"), "{err}");
}

#[test]
fn bad_config() {
    let model = Model::random(tiny("rmt"), 1).unwrap();
    let mut e = Edit::of(&model);
    e.metadata.insert("config".into(), "{not json".into());
    assert!(e.load_err("json.safetensors").contains("model config"));

    let cfg = model.config.to_json().replace(r#""n_head":2"#, r#""n_head":3"#);
    e.metadata.insert("config".into(), cfg);
    let err = e.load_err("heads.safetensors");
    assert!(err.contains("not a multiple of n_head 3"), "{err}");

    // a config that disagrees with the tensors: one more layer than the file has
    let cfg = model.config.to_json().replace(r#""n_layer":2"#, r#""n_layer":3"#);
    e.metadata.insert("config".into(), cfg);
    let err = e.load_err("layers.safetensors");
    assert!(err.contains("h.2.ln_1.weight") && err.contains("missing"), "{err}");

    let cfg = model.config.to_json().replace(r#""gen_token_id":38"#, r#""gen_token_id":38,"question_template":"Q: ""#);
    e.metadata.insert("config".into(), cfg);
    assert!(e.load_err("template.safetensors").contains("question_template must contain {question}"));

    // RMT-R without a retrieval version, and a segment longer than the positions
    let cfg = model.config.to_json().replace(r#""kind":"rmt""#, r#""kind":"rmt-r""#);
    e.metadata.insert("config".into(), cfg);
    assert!(e.load_err("kind.safetensors").contains("needs memory.retrieval"));
    let cfg = model.config.to_json().replace(r#""segment_size":8"#, r#""segment_size":60"#);
    e.metadata.insert("config".into(), cfg);
    assert!(e.load_err("span.safetensors").contains("n_positions is 48"));

    // ARMT's write rule on an RMT, and a rule that does not exist
    let cfg = model.config.to_json().replace(r#""segment_size":8"#, r#""segment_size":8,"write":"replacing""#);
    e.metadata.insert("config".into(), cfg);
    assert!(e.load_err("write.safetensors").contains("memory.write is only for memory.kind armt"));
    let cfg = model.config.to_json().replace(r#""segment_size":8"#, r#""segment_size":8,"write":"overwrite""#);
    e.metadata.insert("config".into(), cfg);
    assert!(e.load_err("rule.safetensors").contains("unknown variant `overwrite`"));

    // ARMT's decay on an RMT, and a decay that would grow the state
    let cfg = model.config.to_json().replace(r#""segment_size":8"#, r#""segment_size":8,"decay":0.99"#);
    e.metadata.insert("config".into(), cfg);
    assert!(e.load_err("decay.safetensors").contains("memory.decay is only for memory.kind armt"));
    let armt = Model::random(tiny("armt"), 1).unwrap();
    let mut e = Edit::of(&armt);
    let cfg = armt.config.to_json().replace(r#""segment_size":8"#, r#""segment_size":8,"decay":1.5"#);
    e.metadata.insert("config".into(), cfg);
    assert!(e.load_err("growth.safetensors").contains("memory.decay must be in (0, 1]; it is 1.5"));
}
