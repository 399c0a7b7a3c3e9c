//! Append-only rows of f32 values stored as f32 or bf16: in RAM up to a budget, then in a memory-mapped file.
//! RMT-R keeps every past memory state (16·d values a segment, ≈ 1 GB in f32 per stream at 11M tokens); this is
//! where they live, so a long stream never needs more RAM than the budget.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;

use memmap2::MmapMut;

use crate::error::{Error, Result};

/// Element type of stored rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StoreDtype {
    /// Exact.
    #[default]
    F32,
    /// Half the bytes; values rounded to bfloat16 (8-bit mantissa) when stored.
    Bf16,
}

impl StoreDtype {
    fn width(self) -> usize {
        match self {
            StoreDtype::F32 => 4,
            StoreDtype::Bf16 => 2,
        }
    }
}

impl std::str::FromStr for StoreDtype {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(StoreDtype::F32),
            "bf16" => Ok(StoreDtype::Bf16),
            _ => Err(format!("unknown store dtype `{s}` (f32 or bf16)")),
        }
    }
}

/// How RMT-R stores are kept.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Element type.
    pub dtype: StoreDtype,
    /// Bytes kept in RAM per store before spilling to a file.
    pub ram_budget: usize,
    /// Directory for spill files (deleted when the store is dropped).
    pub spill_dir: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { dtype: StoreDtype::F32, ram_budget: 2 << 30, spill_dir: std::env::temp_dir() }
    }
}

/// A spill file and its mapping.
struct Spill {
    path: PathBuf,
    file: File,
    map: MmapMut,
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Rows of `width` values, appended in order.
pub struct RowStore {
    width: usize,
    config: StoreConfig,
    bytes: usize,
    ram: Vec<u8>,
    spill: Option<Spill>,
}

impl std::fmt::Debug for RowStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowStore")
            .field("rows", &self.rows())
            .field("dtype", &self.config.dtype)
            .field("spilled", &self.spill.is_some())
            .finish()
    }
}

impl Clone for RowStore {
    fn clone(&self) -> Self {
        let mut out = RowStore::new(self.width, self.config.clone());
        out.push_encoded(self.encoded()).expect("copying a store");
        out
    }
}

impl PartialEq for RowStore {
    /// Same width, dtype and stored bits (RAM or file alike).
    fn eq(&self, other: &Self) -> bool {
        self.width == other.width && self.config.dtype == other.config.dtype && self.encoded() == other.encoded()
    }
}

static SPILL_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl RowStore {
    /// An empty store of `width`-wide rows.
    pub fn new(width: usize, config: StoreConfig) -> Self {
        RowStore { width, config, bytes: 0, ram: Vec::new(), spill: None }
    }

    /// Rows stored.
    pub fn rows(&self) -> usize {
        self.bytes / (self.width * self.config.dtype.width())
    }

    /// Row width.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Element type.
    pub fn dtype(&self) -> StoreDtype {
        self.config.dtype
    }

    /// Whether the rows live in a spill file.
    pub fn is_spilled(&self) -> bool {
        self.spill.is_some()
    }

    /// The stored bytes (little-endian f32 or bf16, row-major).
    pub fn encoded(&self) -> &[u8] {
        match &self.spill {
            Some(s) => &s.map[..self.bytes],
            None => &self.ram[..self.bytes],
        }
    }

    /// Appends rows (`values.len()` a multiple of the width), rounding to the store's dtype.
    pub fn push(&mut self, values: &[f32]) -> Result<()> {
        assert_eq!(values.len() % self.width, 0, "whole rows only");
        let encoded: Vec<u8> = match self.config.dtype {
            StoreDtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            StoreDtype::Bf16 => values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
        };
        self.push_encoded(&encoded)
    }

    /// Appends rows already in the store's encoding.
    pub fn push_encoded(&mut self, bytes: &[u8]) -> Result<()> {
        assert_eq!(bytes.len() % (self.width * self.config.dtype.width()), 0, "whole rows only");
        let end = self.bytes + bytes.len();
        if self.spill.is_none() && end > self.config.ram_budget {
            self.spill_to_file(end)?;
        }
        match &mut self.spill {
            Some(s) => {
                if end > s.map.len() {
                    let cap = end.max(s.map.len() * 2);
                    s.file.set_len(cap as u64).map_err(|e| Error::io(&s.path, e))?;
                    // SAFETY: the file is private to this store (unique name, deleted on drop) and only this
                    // mapping writes it.
                    s.map = unsafe { MmapMut::map_mut(&s.file) }.map_err(|e| Error::io(&s.path, e))?;
                }
                s.map[self.bytes..end].copy_from_slice(bytes);
            }
            None => self.ram.extend_from_slice(bytes),
        }
        self.bytes = end;
        Ok(())
    }

    fn spill_to_file(&mut self, need: usize) -> Result<()> {
        let n = SPILL_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.config.spill_dir.join(format!("rmt-fast-store-{}-{n}.bin", std::process::id()));
        let file =
            OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(|e| Error::io(&path, e))?;
        let cap = need.max(2 * self.config.ram_budget).max(1 << 20);
        file.set_len(cap as u64).map_err(|e| Error::io(&path, e))?;
        // SAFETY: as in push_encoded: a private file mapped once.
        let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(|e| Error::io(&path, e))?;
        map[..self.bytes].copy_from_slice(&self.ram[..self.bytes]);
        self.ram = Vec::new();
        self.spill = Some(Spill { path, file, map });
        Ok(())
    }

    /// Keeps the first `rows` rows.
    pub fn truncate(&mut self, rows: usize) {
        self.bytes = self.bytes.min(rows * self.width * self.config.dtype.width());
        if self.spill.is_none() {
            self.ram.truncate(self.bytes);
        }
    }

    /// Appends rows `range` as f32 to `out`.
    pub fn read(&self, range: std::ops::Range<usize>, out: &mut Vec<f32>) {
        let w = self.width * self.config.dtype.width();
        let bytes = &self.encoded()[range.start * w..range.end * w];
        match self.config.dtype {
            StoreDtype::F32 => out.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()))),
            StoreDtype::Bf16 => {
                out.extend(bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()))
            }
        }
    }

    /// All rows as f32.
    pub fn to_vec(&self) -> Vec<f32> {
        let mut v = Vec::with_capacity(self.rows() * self.width);
        self.read(0..self.rows(), &mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.37 + seed).sin()).collect()
    }

    #[test]
    fn spills_past_the_budget_and_reads_back_the_same() {
        for dtype in [StoreDtype::F32, StoreDtype::Bf16] {
            let cfg = |budget| StoreConfig { dtype, ram_budget: budget, spill_dir: std::env::temp_dir() };
            let (mut ram, mut spilled) = (RowStore::new(8, cfg(usize::MAX)), RowStore::new(8, cfg(100)));
            for k in 0..50 {
                let v = values(8 * (k % 3 + 1), k as f32);
                ram.push(&v).unwrap();
                spilled.push(&v).unwrap();
            }
            assert!(spilled.is_spilled() && !ram.is_spilled());
            assert_eq!(spilled, ram);
            assert_eq!(spilled.to_vec(), ram.to_vec());
            let path = spilled.spill.as_ref().unwrap().path.clone();
            spilled.truncate(10);
            ram.truncate(10);
            assert_eq!(spilled.rows(), 10);
            assert_eq!(spilled, ram);
            let copy = spilled.clone();
            assert_eq!(copy, ram);
            drop(spilled);
            assert!(!path.exists(), "the spill file is removed with its store");
        }
    }

    #[test]
    fn bf16_rounds_f32_is_exact() {
        let v = values(16, 0.5);
        let mut f = RowStore::new(4, StoreConfig::default());
        f.push(&v).unwrap();
        assert_eq!(f.to_vec(), v);
        let mut b = RowStore::new(4, StoreConfig { dtype: StoreDtype::Bf16, ..Default::default() });
        b.push(&v).unwrap();
        let back = b.to_vec();
        assert!(back.iter().zip(&v).all(|(x, y)| (x - y).abs() <= y.abs() / 128.0 + 1e-30));
        assert_ne!(back, v);
        assert_eq!(b.encoded().len(), 32);
    }
}
