//! ARMT's associative memory in training: each block's read and write, kept for the backward, and their backward
//! passes (RMT-SPEC §3.1). The forward math is inference's ([`crate::backend::cpu::associative`]), so training
//! and inference cannot drift apart. Gradients flow through every segment's state (full BPTT), except through
//! the normaliser weights γ, which the authors detach.

use std::borrow::Cow;

use crate::backend::cpu::associative::{self as memory, dot, dpfp_backward, Read, Write};
use crate::backend::cpu::ops::{gemm_strided, matmul, MatRef, Strided};
use crate::model::weights::{Layout, Weights};
use crate::model::Model;

use super::ops::linear_backward;

/// One block's use of the associative memory in one segment.
pub(super) struct LayerMemory {
    /// The layer's state before the segment (`A`, `z`): what both the read and the write saw.
    a: Vec<f32>,
    z: Vec<f32>,
    /// The rows before the read (the query map's input).
    x_pre: Vec<f32>,
    read: Read,
    /// Absent in the question segment, which only reads.
    write: Option<Write>,
}

/// Layer `l`'s `(A, z)` in a flat state of all layers.
fn layer<'a>(model: &Model, state: &'a mut [f32], l: usize) -> (&'a mut [f32], &'a mut [f32]) {
    let (dk, d) = (model.config.memory.key_width(), model.config.n_embd);
    memory::layers(state, dk, d).nth(l).expect("a state per layer")
}

/// Block `l`'s read of `state` into the rows `x`.
pub(super) fn read(model: &Model, l: usize, state: &mut [f32], x: &mut [f32]) -> LayerMemory {
    let (a, z) = layer(model, state, l);
    let x_pre = x.to_vec();
    let read = memory::read(&model.weights.associative[l], a, z, x, model.config.n_embd);
    LayerMemory { a: a.to_vec(), z: z.to_vec(), x_pre, read, write: None }
}

/// Block `l`'s write of its output's memory rows `mem` into `state`.
pub(super) fn write(model: &Model, l: usize, state: &mut [f32], mem: &[f32], lm: &mut LayerMemory) {
    let (a, z) = layer(model, state, l);
    let w = &model.weights.associative[l];
    lm.write = Some(memory::write(w, &model.config.memory, a, z, mem, model.config.n_embd));
}

/// `x` (`[rows, cols]`) as the left operand `xᵀ` of a GEMM.
fn transposed(cols: usize) -> Strided {
    Strided { offset: 0, rs: 1, cs: cols }
}

/// Back through block `l`'s write. `d_state` holds ∂/∂ the state after the segment; the write's terms through
/// `v_old` are added to layer `l`'s part (which then holds ∂/∂ the state before the write, the identity included),
/// and ∂/∂ the memory rows is added to `d_mem`.
pub(super) fn write_backward(
    model: &Model,
    l: usize,
    lm: &LayerMemory,
    g: &mut Weights,
    d_state: &mut [f32],
    d_mem: &mut [f32],
) {
    let Some(wr) = &lm.write else { return };
    let (w, gw) = (&model.weights.associative[l], &mut g.associative[l]);
    let (d, dk, dm) = (model.config.n_embd, lm.z.len(), w.w_mk.n_out);
    let m = wr.beta.len();
    let (da, dz) = layer(model, d_state, l);
    // e = v − v_old; A_new = A + Σ_j s_j β_j k_jᵀ e_j, z_new = z + Σ_j γ_j k_j (s and γ constants)
    let e: Vec<f32> = wr.v.iter().zip(&wr.v_old).map(|(v, o)| v - o).collect();
    let mut ge = vec![0.0; m * dk]; // G · e_j
    matmul(&e, m, MatRef { w: da, n_in: d, n_out: dk, layout: Layout::OutIn }, None, &mut ge, false);
    let mut kg = vec![0.0; m * d]; // k_jᵀ · G
    matmul(&wr.k, m, MatRef { w: da, n_in: dk, n_out: d, layout: Layout::InOut }, None, &mut kg, false);
    let (mut dk_rows, mut dv, mut d_pre_beta) = (vec![0.0; m * dk], vec![0.0; m * d], vec![0.0; m]);
    let (mut d_num, mut d_den) = (vec![0.0; m * d], vec![0.0; m]);
    for j in 0..m {
        let (k, beta, den) = (&wr.k[j * dk..][..dk], wr.beta[j], wr.den[j]);
        let b = wr.gain[j] * beta; // as the forward rounds it
        let ge_j = &ge[j * dk..][..dk];
        d_pre_beta[j] = dot(k, ge_j) * wr.gain[j] * beta * (1.0 - beta);
        let dk_j = &mut dk_rows[j * dk..][..dk];
        for ((o, &x), &zv) in dk_j.iter_mut().zip(ge_j).zip(dz.iter()) {
            *o = b * x + wr.gamma[j] * zv;
        }
        // de_j = β_j k_jᵀ G: the value's gradient, and minus the old value's
        let de: Vec<f32> = kg[j * d..][..d].iter().map(|x| b * x).collect();
        dv[j * d..][..d].copy_from_slice(&de);
        // v_old = (k·A) / den: ∂num = −de / den, ∂den = (de · v_old) / den
        let v_old = &wr.v_old[j * d..][..d];
        d_num[j * d..][..d].iter_mut().zip(&de).for_each(|(o, x)| *o = -x / den);
        d_den[j] = dot(&de, v_old) / den;
    }
    // the write saw the state scaled by the decay λ: k gets (λA)·∂num + ∂den·(λz); then λA and λz get their
    // v_old terms, and the state before the write λ times all of it
    let decay = model.config.memory.decay_factor();
    let seen = |x: &[f32]| -> Vec<f32> { x.iter().map(|v| v * decay).collect() };
    let (a_seen, z_seen) =
        if decay == 1.0 { (Cow::from(&lm.a), Cow::from(&lm.z)) } else { (seen(&lm.a).into(), seen(&lm.z).into()) };
    matmul(&d_num, m, MatRef { w: &a_seen, n_in: d, n_out: dk, layout: Layout::OutIn }, None, &mut dk_rows, true);
    for (j, dk_j) in dk_rows.chunks_exact_mut(dk).enumerate() {
        dk_j.iter_mut().zip(z_seen.iter()).for_each(|(o, zv)| *o += d_den[j] * zv);
    }
    gemm_strided((dk, d, m), da, Strided::rows(0, d), true, &wr.k, transposed(dk), &d_num, Strided::rows(0, d));
    for (j, k) in wr.k.chunks_exact(dk).enumerate() {
        dz.iter_mut().zip(k).for_each(|(o, kv)| *o += d_den[j] * kv);
    }
    if decay != 1.0 {
        da.iter_mut().chain(dz.iter_mut()).for_each(|x| *x *= decay);
    }
    let mut du = vec![0.0; m * dm];
    dpfp_backward(&wr.u, dm, &dk_rows, &mut du);
    linear_backward(&wr.mem, m, &w.w_mk, &du, d_mem, &mut gw.w_mk);
    linear_backward(&wr.mem, m, &w.w_mv, &dv, d_mem, &mut gw.w_mv);
    linear_backward(&wr.mem, m, &w.w_mb, &d_pre_beta, d_mem, &mut gw.w_mb);
}

/// Back through block `l`'s read: `dx` holds ∂/∂ the rows after the read and leaves as ∂/∂ the rows before it;
/// the read's terms are added to layer `l`'s part of `d_state`.
pub(super) fn read_backward(
    model: &Model,
    l: usize,
    lm: &LayerMemory,
    g: &mut Weights,
    d_state: &mut [f32],
    dx: &mut [f32],
) {
    let (w, gw) = (&model.weights.associative[l], &mut g.associative[l]);
    let (d, dk, dm) = (model.config.n_embd, lm.z.len(), w.w_mq.n_out);
    let r = &lm.read;
    let rows = r.den.len();
    let (da, dz) = layer(model, d_state, l);
    // x += num / den with num = q·A, den = q·z + ε
    let mut d_num = vec![0.0; rows * d];
    let mut d_den = vec![0.0; rows];
    for t in 0..rows {
        let (g_row, num, den) = (&dx[t * d..][..d], &r.num[t * d..][..d], r.den[t]);
        d_num[t * d..][..d].iter_mut().zip(g_row).for_each(|(o, gv)| *o = gv / den);
        d_den[t] = -dot(g_row, num) / (den * den);
    }
    gemm_strided((dk, d, rows), da, Strided::rows(0, d), true, &r.q, transposed(dk), &d_num, Strided::rows(0, d));
    for (t, q) in r.q.chunks_exact(dk).enumerate() {
        dz.iter_mut().zip(q).for_each(|(o, qv)| *o += d_den[t] * qv);
    }
    let mut dq = vec![0.0; rows * dk];
    matmul(&d_num, rows, MatRef { w: &lm.a, n_in: d, n_out: dk, layout: Layout::OutIn }, None, &mut dq, false);
    for (t, dq_t) in dq.chunks_exact_mut(dk).enumerate() {
        dq_t.iter_mut().zip(&lm.z).for_each(|(o, zv)| *o += d_den[t] * zv);
    }
    let mut du = vec![0.0; rows * dm];
    dpfp_backward(&r.u, dm, &dq, &mut du);
    linear_backward(&lm.x_pre, rows, &w.w_mq, &du, dx, &mut gw.w_mq);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::Config;

    /// One layer, d = 8, d_mem = 2 (keys of 12), every associative weight normal(0, 1).
    fn model() -> Model {
        let cfg = Config::from_json(
            r#"{"n_layer": 1, "n_head": 2, "n_embd": 8, "vocab_size": 16, "n_positions": 16, "eos_token_id": 15,
                "gen_token_id": 14, "memory": {"kind": "armt", "num_mem_tokens": 3, "segment_size": 8, "d_mem": 2}}"#,
        )
        .unwrap();
        let mut model = Model::random(cfg, 1).unwrap();
        let mut rng = Rng::new(2);
        for t in model.weights.associative.iter_mut().flat_map(|a| [&mut a.w_mq, &mut a.w_mk, &mut a.w_mv, &mut a.w_mb])
        {
            t.w.iter_mut().chain(t.b.iter_mut().flatten()).for_each(|w| *w = rng.normal() as f32);
        }
        model
    }

    fn pick<'a>(m: &'a mut Model, name: &str) -> &'a mut crate::model::weights::Linear {
        let a = &mut m.weights.associative[0];
        match name {
            "W_mk" => &mut a.w_mk,
            "W_mv" => &mut a.w_mv,
            _ => &mut a.w_mb,
        }
    }

    fn normal(rng: &mut Rng, n: usize, scale: f64) -> Vec<f32> {
        (0..n).map(|_| (scale * rng.normal()) as f32).collect()
    }

    /// Central differences of `f` at every element of `x` against `analytic` (f32 forward: ε = 1e-2, error
    /// within 1e-2 relative + 2e-3 absolute; measured well inside).
    fn check(what: &str, x: &[f32], analytic: &[f32], f: impl Fn(&[f32]) -> f64) {
        for i in 0..x.len() {
            let (mut up, mut down) = (x.to_vec(), x.to_vec());
            up[i] += 1e-2;
            down[i] -= 1e-2;
            let fd = (f(&up) - f(&down)) / 2e-2;
            let a = analytic[i] as f64;
            assert!((fd - a).abs() <= 1e-2 * a.abs() + 2e-3, "{what}[{i}]: finite difference {fd:.5}, backward {a:.5}");
        }
    }

    /// The read `x += φ(x·W_mqᵀ)·A / (φ(x·W_mqᵀ)·z + ε)`: ∂/∂x, ∂/∂A, ∂/∂z and ∂/∂W_mq of `Σ r ⊙ x_after`.
    #[test]
    fn read_backward_matches_finite_differences() {
        let model = model();
        let (d, dk, rows) = (8, 12, 3);
        let mut rng = Rng::new(3);
        let x = normal(&mut rng, rows * d, 1.0);
        let mut state = normal(&mut rng, dk * d, 1.0);
        state.extend((0..dk).map(|_| 0.5 + rng.uniform() as f32)); // z > 0, as sums of keys are
        let r = normal(&mut rng, rows * d, 1.0);
        let loss = |m: &Model, x: &[f32], state: &[f32]| {
            let (mut x, mut state) = (x.to_vec(), state.to_vec());
            read(m, 0, &mut state, &mut x);
            x.iter().zip(&r).map(|(a, b)| (a * b) as f64).sum::<f64>()
        };
        let (mut xa, mut sa) = (x.clone(), state.clone());
        let lm = read(&model, 0, &mut sa, &mut xa);
        let (mut g, mut d_state, mut dx) = (model.weights.zeros_like(), vec![0.0; state.len()], r.clone());
        read_backward(&model, 0, &lm, &mut g, &mut d_state, &mut dx);
        check("x", &x, &dx, |x| loss(&model, x, &state));
        check("state", &state, &d_state, |s| loss(&model, &x, s));
        let w = &model.weights.associative[0].w_mq.w;
        check("W_mq", w, &g.associative[0].w_mq.w, |w| {
            let mut m = model.clone();
            m.weights.associative[0].w_mq.w = w.to_vec();
            loss(&m, &x, &state)
        });
    }

    /// The delta-rule write: ∂/∂ the memory rows, the state before it (through `v_old` and the identity) and the
    /// key, value and strength maps. Every γ is clipped to 0, so the detached γ has no derivative to miss and the
    /// check is exact.
    #[test]
    fn write_backward_matches_finite_differences() {
        let gamma_clipped = |w: &Write| w.gamma.iter().all(|&g| g == 0.0);
        check_write(&model(), gamma_clipped, &["mem", "A", "z", "W_mk", "W_mv", "W_mb"]);
    }

    /// The write with a decay λ = 0.9: the state is scaled before the write, so ∂/∂ the state before it is λ times
    /// the undecayed write's, through `v_old` and the identity alike.
    #[test]
    fn decayed_write_backward_matches_finite_differences() {
        let gamma_clipped = |w: &Write| w.gamma.iter().all(|&g| g == 0.0);
        let mut model = model();
        model.config.memory.decay = Some(0.9);
        check_write(&model, gamma_clipped, &["mem", "A", "z", "W_mk", "W_mv", "W_mb"]);
    }

    /// The replacing write scales each row's delta by the detached gain `s = max(1, k·z / ‖k‖²)`. `s` depends
    /// on the keys and `z` only, so the derivatives through the values, the strengths and `A` are exact: those
    /// against central differences, with every gain above 1. The rest (through `k` and `z`, where finite
    /// differences would also see `s` move) is checked against PyTorch's detach in `tests/armt.rs`.
    #[test]
    fn replacing_write_backward_matches_finite_differences() {
        let mut model = model();
        model.config.memory.write = crate::AssociativeWrite::Replacing;
        check_write(&model, |w: &Write| w.gain.iter().all(|&s| s > 1.5), &["A", "W_mv", "W_mb"]);
    }

    /// A write of 3 memory rows into a state whose `z` is large (≥ 40: every γ clipped to 0, every replacing
    /// gain above 1), the forward's record checked by `record`; then the backward of `Σ R ⊙ (A_new, z_new)`
    /// against central differences for each of `names`: the memory rows, `A`, `z`, or a map.
    fn check_write(model: &Model, record: impl Fn(&Write) -> bool, names: &[&str]) {
        let (d, dk, m) = (8, 12, 3);
        let mut rng = Rng::new(4);
        let mem = normal(&mut rng, m * d, 1.0);
        let mut state = normal(&mut rng, dk * d, 1.0);
        state.extend((0..dk).map(|_| 40.0 + rng.uniform() as f32));
        let r = normal(&mut rng, state.len(), 1.0);
        let loss = |m: &Model, mem: &[f32], state: &[f32]| {
            let mut state = state.to_vec();
            let mut lm = read(m, 0, &mut state, &mut vec![0.0; d]);
            write(m, 0, &mut state, mem, &mut lm);
            state.iter().zip(&r).map(|(a, b)| (a * b) as f64).sum::<f64>()
        };
        let mut sa = state.clone();
        let mut lm = read(model, 0, &mut sa, &mut vec![0.0; d]);
        write(model, 0, &mut sa, &mem, &mut lm);
        assert!(record(lm.write.as_ref().unwrap()), "the write's record is not the case this test is for");
        let (mut g, mut d_state, mut d_mem) = (model.weights.zeros_like(), r.clone(), vec![0.0; m * d]);
        write_backward(model, 0, &lm, &mut g, &mut d_state, &mut d_mem);
        let (a, z) = state.split_at(dk * d);
        let (da, dz) = d_state.split_at(dk * d);
        for &name in names {
            match name {
                "mem" => check(name, &mem, &d_mem, |x| loss(model, x, &state)),
                "A" => check(name, a, da, |x| loss(model, &mem, &[x, z].concat())),
                "z" => check(name, z, dz, |x| loss(model, &mem, &[a, x].concat())),
                _ => {
                    let ga = &g.associative[0];
                    let grad = match name {
                        "W_mk" => &ga.w_mk,
                        "W_mv" => &ga.w_mv,
                        _ => &ga.w_mb,
                    };
                    let w = pick(&mut model.clone(), name).w.clone();
                    check(name, &w, &grad.w, |w| {
                        let mut m = model.clone();
                        pick(&mut m, name).w = w.to_vec();
                        loss(&m, &mem, &state)
                    });
                }
            }
        }
    }
}
