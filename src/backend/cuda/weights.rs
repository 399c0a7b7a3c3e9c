//! The model's weights on the device, in the storage precision, every matrix as `[out, in]` (the "col" operand
//! of the matmul kernels), uploaded once per engine and shared by its steps.

use super::device::Device;
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

/// RMT-R's retrieval block. v2 keeps `k_t` = W_kᵀ as a layer of its own: the query is folded through it so
/// keys are never computed (ENGINE-NOTES §8).
pub struct DeviceRetrieval<B> {
    pub q: DeviceLinear<B>,
    pub k: DeviceLinear<B>,
    pub v: DeviceLinear<B>,
    pub o: DeviceLinear<B>,
    pub v2: Option<DeviceRetrievalV2<B>>,
}

pub struct DeviceRetrievalV2<B> {
    pub ln_q: DeviceNorm<B>,
    pub ln_kv: DeviceNorm<B>,
    pub ln_mlp: DeviceNorm<B>,
    pub fc_1: DeviceLinear<B>,
    pub fc_2: DeviceLinear<B>,
    pub k_t: DeviceLinear<B>,
}

pub struct DeviceWeights<B> {
    pub wte: B,
    pub wpe: B,
    pub blocks: Vec<DeviceBlock<B>>,
    pub ln_f: DeviceNorm<B>,
    /// The untied LM head, `[vocab, d]`; `None`: tied to `wte`.
    pub lm_head: Option<B>,
    pub retrieval: Option<DeviceRetrieval<B>>,
}

/// `values` uploaded in the device's precision.
pub fn upload<D: Device>(dev: &D, values: &[f32]) -> Result<D::Buffer> {
    let bytes = dev.precision().encode(values);
    let mut buf = dev.alloc(bytes.len())?;
    dev.upload(&mut buf, 0, &bytes)?;
    Ok(buf)
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
    let w = match l.layout {
        Layout::OutIn => upload(dev, &l.w)?,
        Layout::InOut => upload(dev, &transposed(&l.w, l.n_in, l.n_out))?,
    };
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
            .map(|r| {
                let v2 =
                    r.v2.as_ref()
                        .map(|v2| {
                            // W_kᵀ: the same values read in the other layout, in and out swapped
                            let k_t = Linear {
                                w: r.k.w.clone(),
                                b: None,
                                n_in: r.k.n_out,
                                n_out: r.k.n_in,
                                layout: flip(r.k.layout),
                            };
                            Ok(DeviceRetrievalV2 {
                                ln_q: norm(dev, &v2.ln_q)?,
                                ln_kv: norm(dev, &v2.ln_kv)?,
                                ln_mlp: norm(dev, &v2.ln_mlp)?,
                                fc_1: linear(dev, &v2.fc_1)?,
                                fc_2: linear(dev, &v2.fc_2)?,
                                k_t: linear(dev, &k_t)?,
                            })
                        })
                        .transpose()?;
                Ok(DeviceRetrieval {
                    q: linear(dev, &r.q)?,
                    k: linear(dev, &r.k)?,
                    v: linear(dev, &r.v)?,
                    o: linear(dev, &r.o)?,
                    v2,
                })
            })
            .transpose()?;
        Ok(DeviceWeights {
            wte: upload(dev, &w.wte)?,
            wpe: upload(dev, &w.wpe)?,
            blocks,
            ln_f: norm(dev, &w.ln_f)?,
            lm_head: w.lm_head.as_deref().map(|h| upload(dev, h)).transpose()?,
            retrieval,
        })
    }
}

fn flip(layout: Layout) -> Layout {
    match layout {
        Layout::InOut => Layout::OutIn,
        Layout::OutIn => Layout::InOut,
    }
}
