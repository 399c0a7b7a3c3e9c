//! Forward ops that keep what their backward needs, and the backward ops (after llm.c's `train_gpt2.c`), in f32.

use crate::backend::cpu::fast::softmax;
use crate::backend::cpu::ops::{gemm_strided, Strided};
use crate::model::weights::{LayerNorm, Layout, Linear};

/// LayerNorm forward keeping the normalised rows' mean and 1/std.
pub fn layer_norm(x: &[f32], ln: &LayerNorm, eps: f32, out: &mut [f32], mean: &mut [f32], rstd: &mut [f32]) {
    let d = ln.w.len();
    for (t, (row, o)) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)).enumerate() {
        let m = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
        let var = row.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / d as f64;
        let r = 1.0 / (var + eps as f64).sqrt();
        for (((o, &v), &w), &b) in o.iter_mut().zip(row).zip(&ln.w).zip(&ln.b) {
            *o = ((v as f64 - m) * r) as f32 * w + b;
        }
        (mean[t], rstd[t]) = (m as f32, r as f32);
    }
}

/// LayerNorm backward: adds to `dx`, `grad.w`, `grad.b`.
pub fn layer_norm_backward(
    dout: &[f32],
    x: &[f32],
    mean: &[f32],
    rstd: &[f32],
    ln: &LayerNorm,
    grad: &mut LayerNorm,
    dx: &mut [f32],
) {
    let d = ln.w.len();
    for t in 0..x.len() / d {
        let (row, dy, dxr) = (&x[t * d..][..d], &dout[t * d..][..d], &mut dx[t * d..][..d]);
        let norm: Vec<f32> = row.iter().map(|&x| (x - mean[t]) * rstd[t]).collect();
        let (mut mean_dn, mut mean_dn_norm) = (0.0f32, 0.0f32);
        for ((&dy, &w), &n) in dy.iter().zip(&ln.w).zip(&norm) {
            mean_dn += dy * w;
            mean_dn_norm += dy * w * n;
        }
        mean_dn /= d as f32;
        mean_dn_norm /= d as f32;
        for (i, (&dy, &n)) in dy.iter().zip(&norm).enumerate() {
            grad.b[i] += dy;
            grad.w[i] += dy * n;
            dxr[i] += rstd[t] * (dy * ln.w[i] - mean_dn - n * mean_dn_norm);
        }
    }
}

/// Linear backward for `y = x·W + b` over `rows` rows: `dx += dy·Wᵀ`, `dW += xᵀ·dy`, `db += Σ dy`.
pub fn linear_backward(x: &[f32], rows: usize, lin: &Linear, dy: &[f32], dx: &mut [f32], grad: &mut Linear) {
    let (k, n) = (lin.n_in, lin.n_out);
    // Wᵀ and the gradient's layout follow how W is stored
    let (w_t, g_view) = match lin.layout {
        Layout::InOut => (Strided { offset: 0, rs: 1, cs: n }, Strided::rows(0, n)),
        Layout::OutIn => (Strided::rows(0, k), Strided { offset: 0, rs: 1, cs: k }),
    };
    gemm_strided((rows, k, n), dx, Strided::rows(0, k), true, dy, Strided::rows(0, n), &lin.w, w_t);
    gemm_strided(
        (k, n, rows),
        &mut grad.w,
        g_view,
        true,
        x,
        Strided { offset: 0, rs: 1, cs: k },
        dy,
        Strided::rows(0, n),
    );
    if let Some(b) = &mut grad.b {
        for row in dy.chunks_exact(n).take(rows) {
            b.iter_mut().zip(row).for_each(|(g, v)| *g += v);
        }
    }
}

/// Causal self-attention of `t` rows from a fresh start (training segments), keeping the probabilities
/// (`[head, t, t]`) for the backward pass; `drop` scales the probabilities (dropout) before they weigh the values.
pub fn attention(qkv: &[f32], t: usize, n_head: usize, out: &mut [f32], probs: &mut [f32], drop: Option<&[f32]>) {
    let d = qkv.len() / t / 3;
    let hd = d / n_head;
    let scale = 1.0 / (hd as f32).sqrt();
    for h in 0..n_head {
        let p = &mut probs[h * t * t..][..t * t];
        let (q, k) = (Strided { offset: h * hd, rs: 3 * d, cs: 1 }, Strided { offset: d + h * hd, rs: 1, cs: 3 * d });
        gemm_strided((t, t, hd), p, Strided::rows(0, t), false, qkv, q, qkv, k);
        for (i, row) in p.chunks_exact_mut(t).enumerate() {
            row[..=i].iter_mut().for_each(|s| *s *= scale);
            softmax(&mut row[..=i]);
            row[i + 1..].fill(0.0);
        }
        let v = Strided { offset: 2 * d + h * hd, rs: 3 * d, cs: 1 };
        let dropped: Vec<f32>;
        let weights: &[f32] = match drop {
            Some(mask) => {
                dropped = p.iter().zip(&mask[h * t * t..][..t * t]).map(|(a, b)| a * b).collect();
                &dropped
            }
            None => p,
        };
        gemm_strided(
            (t, hd, t),
            out,
            Strided { offset: h * hd, rs: d, cs: 1 },
            false,
            weights,
            Strided::rows(0, t),
            qkv,
            v,
        );
    }
}

/// Attention backward: `dqkv += ∂/∂qkv` of the output given `dout`, through the same dropout mask.
pub fn attention_backward(
    qkv: &[f32],
    probs: &[f32],
    drop: Option<&[f32]>,
    t: usize,
    n_head: usize,
    dout: &[f32],
    dqkv: &mut [f32],
) {
    let d = qkv.len() / t / 3;
    let hd = d / n_head;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut dp = vec![0.0f32; t * t];
    for h in 0..n_head {
        let p = &probs[h * t * t..][..t * t];
        let mask = drop.map(|m| &m[h * t * t..][..t * t]);
        let o = Strided { offset: h * hd, rs: d, cs: 1 };
        // with dropout the values were weighed by P' = P ⊙ mask: dV = P'ᵀ·dO, dP = (dO·Vᵀ) ⊙ mask
        let v_t = Strided { offset: 2 * d + h * hd, rs: 1, cs: 3 * d };
        gemm_strided((t, t, hd), &mut dp, Strided::rows(0, t), false, dout, o, qkv, v_t);
        let dropped: Vec<f32>;
        let weights: &[f32] = match mask {
            Some(m) => {
                dp.iter_mut().zip(m).for_each(|(g, s)| *g *= s);
                dropped = p.iter().zip(m).map(|(a, b)| a * b).collect();
                &dropped
            }
            None => p,
        };
        let dv = Strided { offset: 2 * d + h * hd, rs: 3 * d, cs: 1 };
        gemm_strided((t, hd, t), dqkv, dv, true, weights, Strided { offset: 0, rs: 1, cs: t }, dout, o);
        // dS = P ⊙ (dP − Σ_j dP·P), scaled
        for i in 0..t {
            let (pr, dr) = (&p[i * t..][..t], &mut dp[i * t..][..t]);
            let dot: f32 = pr[..=i].iter().zip(&dr[..=i]).map(|(a, b)| a * b).sum();
            for j in 0..t {
                dr[j] = if j <= i { pr[j] * (dr[j] - dot) * scale } else { 0.0 };
            }
        }
        // dQ = dS·K ; dK = dSᵀ·Q
        let (q, k) = (Strided { offset: h * hd, rs: 3 * d, cs: 1 }, Strided { offset: d + h * hd, rs: 3 * d, cs: 1 });
        gemm_strided((t, hd, t), dqkv, q, true, &dp, Strided::rows(0, t), qkv, k);
        gemm_strided((t, hd, t), dqkv, k, true, &dp, Strided { offset: 0, rs: 1, cs: t }, qkv, q);
    }
}

/// A dropout mask: each entry 0 with probability `p`, else 1 / (1 − p) (inverted dropout, as torch).
pub fn dropout_mask(n: usize, p: f32, seed: u64) -> Vec<f32> {
    let mut rng = crate::rng::Rng::new(seed);
    let keep = 1.0 / (1.0 - p);
    (0..n).map(|_| if rng.uniform() < p as f64 { 0.0 } else { keep }).collect()
}
