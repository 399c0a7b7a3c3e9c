//! The model's weights on the device, in the storage precision, every matrix as `[out, in]` (the "col" operand
//! of the matmul kernels), uploaded once per engine and shared by its steps.

use super::device::Device;
use crate::backend::cpu::ops::{matmul, MatRef};
use crate::error::Result;
use crate::model::weights::{LayerNorm, Layout, Linear};
use crate::model::Model;

/// A linear layer on the device.
pub struct DeviceLinear<B> {
    pub w: B,
    pub b: Option<B>,
    pub n_in: usize,
    pub n_out: usize,
}

/// A LayerNorm on the device.
pub struct DeviceNorm<B> {
    pub w: B,
    pub b: B,
}

pub struct DeviceBlock<B> {
    pub ln_1: DeviceNorm<B>,
    pub c_attn: DeviceLinear<B>,
    pub attn_proj: DeviceLinear<B>,
    pub ln_2: DeviceNorm<B>,
    pub c_fc: DeviceLinear<B>,
    pub mlp_proj: DeviceLinear<B>,
}

/// RMT-R's retrieval block.
pub enum DeviceRetrieval<B> {
    /// gelu keys and values, computed once per stored state.
    V1 { q: DeviceLinear<B>, k: DeviceLinear<B>, v: DeviceLinear<B>, o: DeviceLinear<B> },
    /// Keys and values are never formed (ENGINE-NOTES §8), so each pair of maps folds into one at upload:
    /// `qk` = W_kᵀ ∘ q_proj turns `ln_q(cur)` into the query against `ln_kv(state)` (q·b_k is the same for every
    /// state and cancels in the softmax), and `vo` = o ∘ v_proj maps the weighted sum of `ln_kv(state)` to the
    /// block's output (the weights sum to 1, so b_v passes through).
    V2 {
        ln_q: DeviceNorm<B>,
        ln_kv: DeviceNorm<B>,
        ln_mlp: DeviceNorm<B>,
        fc_1: DeviceLinear<B>,
        fc_2: DeviceLinear<B>,
        qk: DeviceLinear<B>,
        vo: DeviceLinear<B>,
    },
}

/// One layer's ARMT associative memory, in f32 whatever the storage type (`associative.cu` computes in f32 like the
/// CPU reference; the maps are small next to the blocks): every map `[out, in]`.
pub struct DeviceAssociative<B> {
    pub wq: B,
    pub wk: B,
    pub wv: B,
    pub wb: B,
    /// β's bias (one value).
    pub bb: B,
}

pub struct DeviceWeights<B> {
    pub wte: B,
    pub wpe: B,
    pub blocks: Vec<DeviceBlock<B>>,
    pub ln_f: DeviceNorm<B>,
    /// The untied LM head, `[vocab, d]`; `None`: tied to `wte`.
    pub lm_head: Option<B>,
    pub retrieval: Option<DeviceRetrieval<B>>,
    /// ARMT: one per block; empty for the other kinds.
    pub associative: Vec<DeviceAssociative<B>>,
}

/// `values` uploaded in the device's precision.
pub fn upload<D: Device>(dev: &D, values: &[f32]) -> Result<D::Buffer> {
    let bytes = dev.precision().encode(values);
    let mut buf = dev.alloc(bytes.len())?;
    dev.upload(&mut buf, 0, &bytes)?;
    Ok(buf)
}

/// `values` uploaded as f32.
pub fn upload_f32<D: Device>(dev: &D, values: &[f32]) -> Result<D::Buffer> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut buf = dev.alloc(bytes.len())?;
    dev.upload(&mut buf, 0, &bytes)?;
    Ok(buf)
}

/// `l`'s weights as `[out, in]`.
fn out_in(l: &Linear) -> Vec<f32> {
    match l.layout {
        Layout::OutIn => l.w.clone(),
        Layout::InOut => transposed(&l.w, l.n_in, l.n_out),
    }
}

/// `w` (`[rows, cols]`) transposed.
fn transposed(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = w[r * cols + c];
        }
    }
    t
}

fn linear<D: Device>(dev: &D, l: &Linear) -> Result<DeviceLinear<D::Buffer>> {
    let w = upload(dev, &out_in(l))?;
    let b = l.b.as_deref().map(|b| upload(dev, b)).transpose()?;
    Ok(DeviceLinear { w, b, n_in: l.n_in, n_out: l.n_out })
}

fn norm<D: Device>(dev: &D, n: &LayerNorm) -> Result<DeviceNorm<D::Buffer>> {
    Ok(DeviceNorm { w: upload(dev, &n.w)?, b: upload(dev, &n.b)? })
}

impl<B> DeviceWeights<B> {
    /// Uploads `model`'s weights to `dev`.
    pub fn new<D: Device<Buffer = B>>(dev: &D, model: &Model) -> Result<Self> {
        let w = &model.weights;
        let blocks = w
            .blocks
            .iter()
            .map(|b| {
                Ok(DeviceBlock {
                    ln_1: norm(dev, &b.ln_1)?,
                    c_attn: linear(dev, &b.c_attn)?,
                    attn_proj: linear(dev, &b.attn_proj)?,
                    ln_2: norm(dev, &b.ln_2)?,
                    c_fc: linear(dev, &b.c_fc)?,
                    mlp_proj: linear(dev, &b.mlp_proj)?,
                })
            })
            .collect::<Result<_>>()?;
        let retrieval = w
            .retrieval
            .as_ref()
            .map(|r| match &r.v2 {
                None => Ok(DeviceRetrieval::V1 {
                    q: linear(dev, &r.q)?,
                    k: linear(dev, &r.k)?,
                    v: linear(dev, &r.v)?,
                    o: linear(dev, &r.o)?,
                }),
                Some(v2) => {
                    // W_kᵀ: the same values read in the other layout, in and out swapped
                    let k_t = MatRef { w: &r.k.w, n_in: r.k.n_out, n_out: r.k.n_in, layout: flip(r.k.layout) };
                    Ok(DeviceRetrieval::V2 {
                        ln_q: norm(dev, &v2.ln_q)?,
                        ln_kv: norm(dev, &v2.ln_kv)?,
                        ln_mlp: norm(dev, &v2.ln_mlp)?,
                        fc_1: linear(dev, &v2.fc_1)?,
                        fc_2: linear(dev, &v2.fc_2)?,
                        qk: linear(dev, &composed(&r.q, k_t, None))?,
                        vo: linear(dev, &composed(&r.v, r.o.mat(), r.o.b.as_deref()))?,
                    })
                }
            })
            .transpose()?;
        let associative = w
            .associative
            .iter()
            .map(|a| {
                let bias = a.w_mb.b.as_deref().unwrap_or(&[0.0]);
                Ok(DeviceAssociative {
                    wq: upload_f32(dev, &out_in(&a.w_mq))?,
                    wk: upload_f32(dev, &out_in(&a.w_mk))?,
                    wv: upload_f32(dev, &out_in(&a.w_mv))?,
                    wb: upload_f32(dev, &out_in(&a.w_mb))?,
                    bb: upload_f32(dev, bias)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(DeviceWeights {
            wte: upload(dev, &w.wte)?,
            wpe: upload(dev, &w.wpe)?,
            blocks,
            ln_f: norm(dev, &w.ln_f)?,
            lm_head: w.lm_head.as_deref().map(|h| upload(dev, h)).transpose()?,
            retrieval,
            associative,
        })
    }
}

/// `second(first(x))` as one layer, in f32: W = W_first · W_second (`[in, out]`) and b = b_first · W_second +
/// b_second.
fn composed(first: &Linear, second: MatRef<'_>, second_bias: Option<&[f32]>) -> Linear {
    let (n_in, n_mid, n_out) = (first.n_in, first.n_out, second.n_out);
    let first_in_out = match first.layout {
        Layout::InOut => first.w.clone(),
        Layout::OutIn => transposed(&first.w, n_mid, n_in),
    };
    let mut w = vec![0.0; n_in * n_out];
    matmul(&first_in_out, n_in, second, None, &mut w, false);
    let b = match (&first.b, second_bias) {
        (None, None) => None,
        (Some(b1), b2) => {
            let mut b = vec![0.0; n_out];
            matmul(b1, 1, second, b2, &mut b, false);
            Some(b)
        }
        (None, Some(b2)) => Some(b2.to_vec()),
    };
    Linear { w, b, n_in, n_out, layout: Layout::InOut }
}

fn flip(layout: Layout) -> Layout {
    match layout {
        Layout::InOut => Layout::OutIn,
        Layout::OutIn => Layout::InOut,
    }
}
