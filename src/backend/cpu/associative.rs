//! ARMT's associative memory on the CPU, exact f32 (RMT-SPEC §3.1): the DPFP key map, the read that every block
//! does before it, and the delta-rule write of a segment's memory rows after it. Each returns what the training
//! backward needs (`train::associative`); inference drops it.
//!
//! The state of one layer is `A` (`dk × d`, row-major) then `z` (`dk`), both zero before the first segment. The
//! authors skip the read and use `v_old = 0`, `γ = 1` in the first segment; with a zero state the formulas below
//! give exactly that (the read adds `0 / ε`), so no segment is special.

use super::ops::{matmul, MatRef};
use crate::model::config::{AssociativeWrite, MemoryConfig, DPFP_NU};
use crate::model::weights::{Associative, Layout};

/// The ε of the read's and the write's denominators (the authors' 1e-5).
pub const EPS: f32 = 1e-5;

/// The layers' `(A, z)` views of a flat state of `n_layer · dk · (d + 1)` values.
pub fn layers(state: &mut [f32], dk: usize, d: usize) -> impl Iterator<Item = (&mut [f32], &mut [f32])> {
    state.chunks_exact_mut(dk * (d + 1)).map(move |l| l.split_at_mut(dk * d))
}

/// DPFP (ν = [`DPFP_NU`]) of each row of `u` (`dm` wide): `x = [relu(u), relu(−u)]`, then
/// `φ = [x ⊙ roll(x, 1), …, x ⊙ roll(x, ν)]` with torch's `roll` (`roll(x, j)[i] = x[i − j mod 2dm]`).
pub fn dpfp(u: &[f32], dm: usize, out: &mut [f32]) {
    let n = 2 * dm;
    let mut x = vec![0.0f32; n];
    for (row, phi) in u.chunks_exact(dm).zip(out.chunks_exact_mut(DPFP_NU * n)) {
        split_relu(row, &mut x);
        for (j, part) in phi.chunks_exact_mut(n).enumerate() {
            // x ⊙ roll(x, s) as two straight runs (no index wraps inside either, so both vectorise)
            let s = j + 1;
            let (wrapped, straight) = part.split_at_mut(s);
            straight.iter_mut().zip(&x[s..]).zip(&x[..n - s]).for_each(|((p, a), b)| *p = a * b);
            wrapped.iter_mut().zip(&x[..s]).zip(&x[n - s..]).for_each(|((p, a), b)| *p = a * b);
        }
    }
}

/// `[relu(u), relu(−u)]`.
fn split_relu(u: &[f32], x: &mut [f32]) {
    let (pos, neg) = x.split_at_mut(u.len());
    for ((p, q), &v) in pos.iter_mut().zip(neg.iter_mut()).zip(u) {
        (*p, *q) = (v.max(0.0), (-v).max(0.0));
    }
}

/// ∂/∂u of [`dpfp`] given ∂/∂φ (`du` is overwritten).
pub fn dpfp_backward(u: &[f32], dm: usize, dphi: &[f32], du: &mut [f32]) {
    let n = 2 * dm;
    let (mut x, mut dx) = (vec![0.0f32; n], vec![0.0f32; n]);
    for ((row, g), d_row) in u.chunks_exact(dm).zip(dphi.chunks_exact(DPFP_NU * n)).zip(du.chunks_exact_mut(dm)) {
        split_relu(row, &mut x);
        dx.fill(0.0);
        for (j, part) in g.chunks_exact(n).enumerate() {
            for (i, &gi) in part.iter().enumerate() {
                let back = (i + n - (j + 1)) % n;
                dx[i] += gi * x[back];
                dx[back] += gi * x[i];
            }
        }
        for (k, (d, &v)) in d_row.iter_mut().zip(row).enumerate() {
            // relu(u) passes u > 0, relu(−u) passes −u for u < 0; both are 0 at u = 0
            *d = if v > 0.0 {
                dx[k]
            } else if v < 0.0 {
                -dx[dm + k]
            } else {
                0.0
            };
        }
    }
}

/// `A` as the right-hand side of `q · A` (`dk → d`).
fn state_mat(a: &[f32], dk: usize, d: usize) -> MatRef<'_> {
    MatRef { w: a, n_in: dk, n_out: d, layout: Layout::InOut }
}

/// What a read leaves for the backward: the query map's output `u`, the keys `q = φ(u)`, the numerators `q·A`
/// and the denominators `q·z + ε`.
pub struct Read {
    pub(crate) u: Vec<f32>,
    pub(crate) q: Vec<f32>,
    pub(crate) num: Vec<f32>,
    pub(crate) den: Vec<f32>,
}

/// The read before a block: `x += (q·A) / (q·z + ε)` with `q = φ(x·W_mqᵀ)`, for every row of `x`.
pub fn read(w: &Associative, a: &[f32], z: &[f32], x: &mut [f32], d: usize) -> Read {
    let (rows, dm, dk) = (x.len() / d, w.w_mq.n_out, z.len());
    let mut u = vec![0.0; rows * dm];
    matmul(x, rows, w.w_mq.mat(), None, &mut u, false);
    let mut q = vec![0.0; rows * dk];
    dpfp(&u, dm, &mut q);
    let mut num = vec![0.0; rows * d];
    matmul(&q, rows, state_mat(a, dk, d), None, &mut num, false);
    let den: Vec<f32> = q.chunks_exact(dk).map(|qr| dot(qr, z) + EPS).collect();
    for ((xr, nr), &dn) in x.chunks_exact_mut(d).zip(num.chunks_exact(d)).zip(&den) {
        xr.iter_mut().zip(nr).for_each(|(xv, nv)| *xv += nv / dn);
    }
    Read { u, q, num, den }
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// What a write leaves for the backward: the memory rows `M`, the key map's output `u`, the keys `k = φ(u)`, the
/// values `v = M·W_mvᵀ`, the strengths `β`, the normaliser weights `γ`, the gains `s`, `den = k·z + ε` and
/// `v_old = k·A / den`.
pub struct Write {
    pub(crate) mem: Vec<f32>,
    pub(crate) u: Vec<f32>,
    pub(crate) k: Vec<f32>,
    pub(crate) v: Vec<f32>,
    pub(crate) beta: Vec<f32>,
    pub(crate) gamma: Vec<f32>,
    pub(crate) gain: Vec<f32>,
    pub(crate) den: Vec<f32>,
    pub(crate) v_old: Vec<f32>,
}

/// The delta-rule write after a block, from the memory rows `mem` of its output:
/// `A += Σ_j s_j β_j k_jᵀ (v_j − v_old_j)`, `z += Σ_j γ_j k_j`, with `γ = clip(1 − k·z / (‖k‖² + ε), 0, 1)` and
/// the gain `s` of the config's write rule (1 for the authors' rule; see [`AssociativeWrite`]). No gradient flows
/// through γ (the authors' `.detach()`) or `s`. All rows see the state before the write, scaled first by the
/// config's decay λ when it has one ([`MemoryConfig::decay`]).
pub fn write(w: &Associative, cfg: &MemoryConfig, a: &mut [f32], z: &mut [f32], mem: &[f32], d: usize) -> Write {
    let (m, dm, dk) = (mem.len() / d, w.w_mk.n_out, z.len());
    let (rule, decay) = (cfg.write, cfg.decay_factor());
    if decay != 1.0 {
        a.iter_mut().chain(z.iter_mut()).for_each(|x| *x *= decay);
    }
    let mut u = vec![0.0; m * dm];
    matmul(mem, m, w.w_mk.mat(), None, &mut u, false);
    let mut k = vec![0.0; m * dk];
    dpfp(&u, dm, &mut k);
    let mut v = vec![0.0; m * d];
    matmul(mem, m, w.w_mv.mat(), None, &mut v, false);
    let mut beta = vec![0.0; m];
    matmul(mem, m, w.w_mb.mat(), w.w_mb.b.as_deref(), &mut beta, false);
    beta.iter_mut().for_each(|b| *b = 1.0 / (1.0 + (-*b).exp()));
    let mut v_old = vec![0.0; m * d];
    matmul(&k, m, state_mat(a, dk, d), None, &mut v_old, false);
    let (mut den, mut gamma, mut gain) = (vec![0.0; m], vec![0.0; m], vec![1.0; m]);
    for (j, kr) in k.chunks_exact(dk).enumerate() {
        let kz = dot(kr, z);
        let coverage = kz / (dot(kr, kr) + EPS);
        den[j] = kz + EPS;
        gamma[j] = (1.0 - coverage).clamp(0.0, 1.0);
        if rule == AssociativeWrite::Replacing {
            gain[j] = coverage.max(1.0);
        }
        v_old[j * d..][..d].iter_mut().for_each(|x| *x /= den[j]);
    }
    // row by row in this order, each product rounded before its add: the arithmetic of the recorded training runs
    // (a GEMM would sum in another order and change their logs' low digits)
    let mut e = vec![0.0; d];
    for j in 0..m {
        // the authors' rule multiplies by a gain of exactly 1: bit for bit their arithmetic
        let (kr, b) = (&k[j * dk..][..dk], gain[j] * beta[j]);
        e.iter_mut().zip(&v[j * d..][..d]).zip(&v_old[j * d..][..d]).for_each(|((ev, x), o)| *ev = b * (x - o));
        for (ar, &kv) in a.chunks_exact_mut(d).zip(kr) {
            ar.iter_mut().zip(&e).for_each(|(av, ev)| *av += kv * ev);
        }
        z.iter_mut().zip(kr).for_each(|(zv, kv)| *zv += gamma[j] * kv);
    }
    Write { mem: mem.to_vec(), u, k, v, beta, gamma, gain, den, v_old }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DPFP's backward against central differences in f64 terms of the f32 function.
    #[test]
    fn dpfp_backward_matches_finite_differences() {
        let dm = 3;
        let u = [0.7f32, -0.4, 0.2, -1.1, 0.5, 0.9];
        let n = DPFP_NU * 2 * dm;
        let g: Vec<f32> = (0..2 * n).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect();
        let f = |u: &[f32]| {
            let mut out = vec![0.0; 2 * n];
            dpfp(u, dm, &mut out);
            out.iter().zip(&g).map(|(a, b)| (a * b) as f64).sum::<f64>()
        };
        let mut du = vec![0.0; u.len()];
        dpfp_backward(&u, dm, &g, &mut du);
        for i in 0..u.len() {
            let (mut up, mut dn) = (u, u);
            up[i] += 1e-3;
            dn[i] -= 1e-3;
            let fd = (f(&up) - f(&dn)) / 2e-3;
            assert!((fd - du[i] as f64).abs() < 1e-3, "u[{i}]: finite difference {fd}, backward {}", du[i]);
        }
    }

    /// The key map as the authors write it: φ(x) for x = (1, −2) has x' = (1, 0, 0, 2).
    #[test]
    fn dpfp_follows_torch_roll() {
        let mut out = vec![0.0; DPFP_NU * 4];
        dpfp(&[1.0, -2.0], 2, &mut out);
        // roll 1: (2, 1, 0, 0); roll 2: (0, 2, 1, 0); roll 3: (0, 0, 2, 1)
        assert_eq!(out, [2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0]);
    }
}
