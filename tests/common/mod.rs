//! Shared helpers for the integration tests: fixture loading and the normalised error metric.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;

use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Tensors dumped by `scripts/rmt_reference.py fixtures`.
pub struct Expected {
    bytes: Vec<u8>,
}

impl Expected {
    pub fn load(name: &str) -> Self {
        Expected { bytes: std::fs::read(fixture(name)).expect("fixture present") }
    }

    fn view(&self, name: &str) -> (Dtype, Vec<usize>, Vec<u8>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("fixture tensor {name}"));
        (t.dtype(), t.shape().to_vec(), t.data().to_vec())
    }

    pub fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let (dtype, shape, data) = self.view(name);
        assert_eq!(dtype, Dtype::F32, "{name}");
        (shape, data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())
    }

    pub fn tokens(&self, name: &str) -> Vec<u32> {
        let (dtype, _, data) = self.view(name);
        assert_eq!(dtype, Dtype::I64, "{name}");
        data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32).collect()
    }

    pub fn has(&self, name: &str) -> bool {
        SafeTensors::deserialize(&self.bytes).unwrap().tensor(name).is_ok()
    }
}

/// ‖a − b‖₂ / ‖b‖₂, the normalised error every parity check states its tolerance in.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// Runs the `rmt-fast` binary.
pub fn rmt_fast(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_rmt-fast")).args(args).output().expect("binary runs")
}

/// A fresh scratch directory for one test.
pub fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rmt-fast-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// stderr of a finished command, for assertions.
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The shared data directory beside the repository (`../shared/data`).
pub fn shared_data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(rel)
}

/// `rmt-fast init` of a random model with the given config JSON into `dir/m.safetensors`.
pub fn init_model(dir: &std::path::Path, config_json: &str, seed: u64) -> PathBuf {
    let (cfg, model) = (dir.join("cfg.json"), dir.join("m.safetensors"));
    std::fs::write(&cfg, config_json).unwrap();
    let o = rmt_fast(&[
        "init",
        "--config",
        cfg.to_str().unwrap(),
        "--seed",
        &seed.to_string(),
        "-o",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    model
}
