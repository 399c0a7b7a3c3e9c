//! The fast CPU kernels for the element-wise passes, next to the exact ones in `ops` (the oracle).
//!
//! The reference calls libm's `tanhf` per element and normalises in f64: on a GPT-2-small segment that is ~20 % of
//! the time, and on the small bundled shape ~50 %. Here `tanh` is built from a polynomial `exp` with no calls and
//! no branches, so the loops vectorise (AVX2 + FMA when the CPU has them, chosen at run time; SSE2 otherwise); the
//! attention softmax uses the same `exp`, and LayerNorm stays in f32 with two vectorised passes. Both agree with the reference within a few f32 ulps
//! (`tests` below; the whole step is compared in `tests/fast_cpu.rs`).

// The polynomial coefficients are Cephes' as published; clippy would round away digits f32 cannot hold anyway.
#![allow(clippy::excessive_precision)]

/// `exp(x)` for `x ≤ 0` (all this module needs), relative error ≤ 2 ulp: `x = n·ln2 + r`, a degree-6 polynomial
/// for `e^r` on |r| ≤ ln2/2 (Cephes' coefficients), `2^n` assembled from its exponent bits.
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    // 1.5 · 2²³: adding it rounds to an integer (ties to even) that lands in the low mantissa bits, so n is had
    // without a float → int conversion (Rust's saturating `as` would not vectorise)
    const SHIFTER: f32 = 12_582_912.0;
    let x = x.max(-87.0); // below, e^x leaves f32's normal range; tanh and GELU only need it to be tiny
    let shifted = x * std::f32::consts::LOG2_E + SHIFTER;
    let n = shifted - SHIFTER;
    // ln2 split into a part exact in f32 and the rest, so that r keeps its low bits
    let r = x - n * 0.693_359_375 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r
        + 5.000_000_1e-1;
    let er = p * r * r + r + 1.0;
    let exponent = shifted.to_bits().wrapping_sub(SHIFTER.to_bits()).wrapping_add(127); // n + 127, n ∈ [-126, 0]
    er * f32::from_bits(exponent << 23)
}

/// `tanh(x)` within 2 ulp: an odd polynomial near 0 (Cephes' `tanhf`), else `1 − 2 / (e^{2|x|} + 1)` with the sign
/// of `x`; both are computed and one selected, so there is no branch.
#[inline(always)]
fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let small = ((((-5.704_988_7e-3 * z + 2.063_908_9e-2) * z - 5.373_971_6e-2) * z + 1.333_144_2e-1) * z
        - 3.333_328_2e-1)
        * z
        * x
        + x;
    let e = exp_neg(-2.0 * a);
    let large = ((1.0 - e) / (1.0 + e)).copysign(x);
    if a < 0.625 {
        small
    } else {
        large
    }
}

const GELU_C: f32 = 0.797_884_6; // sqrt(2/pi)

/// GPT-2's `gelu_new` in place, as `ops::gelu_new` computes it, with the vectorisable `tanh`.
#[inline(always)]
fn gelu_body(x: &mut [f32]) {
    for v in x {
        let u = *v;
        *v = 0.5 * u * (1.0 + tanh(GELU_C * (u + 0.044715 * u * u * u)));
    }
}

/// `gelu_new` backward, `dx += dout · gelu'(x)`, with the same `tanh`: libm's `tanhf` made this pass and the
/// forward GELU ~18 % of a training step.
#[inline(always)]
fn gelu_backward_body(x: &[f32], dout: &[f32], dx: &mut [f32]) {
    for ((&u, &dy), d) in x.iter().zip(dout).zip(dx) {
        let t = tanh(GELU_C * (u + 0.044715 * u * u * u));
        let local = 0.5 * (1.0 + t) + 0.5 * u * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * 0.044715 * u * u);
        *d += dy * local;
    }
}

/// Softmax of a row in place (max-subtracted), with the polynomial `exp`.
#[inline(always)]
fn softmax_body(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    row.iter_mut().for_each(|v| *v = exp_neg(*v - max));
    let inv = 1.0 / sum8(row, |v| v);
    row.iter_mut().for_each(|v| *v *= inv);
}

/// LayerNorm of each `d`-wide row in f32: mean, then the variance of the centred values (two passes, no
/// cancellation), as torch.
#[inline(always)]
fn layer_norm_body(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean = sum8(row, |v| v) / d as f32;
        let var = sum8(row, |v| (v - mean) * (v - mean)) / d as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (((o, &v), &w), &b) in o.iter_mut().zip(row).zip(w).zip(b) {
            *o = (v - mean) * inv * w + b;
        }
    }
}

/// The sum of `f(v)` over `values` in eight interleaved lanes, value i into lane i % 8 (a fixed order, so the
/// result does not depend on the instruction set). Whole chunks of 8 go lane-wise, which vectorises; a loop over
/// `i % 8` did not, and kept each lane in memory (perf: a third of the bundled model's softmax time).
#[inline(always)]
fn sum8(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = values.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    for (lane, &v) in lanes.iter_mut().zip(tail) {
        *lane += f(v);
    }
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
}

/// Compiles `$body` twice, once for AVX2 + FMA and once for the baseline, and picks at run time. Rust never fuses
/// `a * b + c` on its own, so both builds give the same bits.
macro_rules! dispatch {
    ($name:ident ( $($arg:ident : $ty:ty),* ) => $body:ident) => {
        pub fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has just been checked for the features `avx2` is compiled with.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

dispatch!(gelu_new(x: &mut [f32]) => gelu_body);
dispatch!(gelu_backward(x: &[f32], dout: &[f32], dx: &mut [f32]) => gelu_backward_body);
dispatch!(softmax(row: &mut [f32]) => softmax_body);
dispatch!(layer_norm_rows(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) => layer_norm_body);

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> f32 {
        (a - b).abs() / (b.abs().max(f32::MIN_POSITIVE) * f32::EPSILON)
    }

    #[test]
    fn tanh_is_within_two_ulp_of_libm() {
        let mut worst = 0.0f32;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4; // −20 … 20, both branches and the saturation
            let (got, want) = (tanh(x), (x as f64).tanh() as f32);
            worst = worst.max(ulps(got, want));
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(-100.0), -1.0);
    }

    #[test]
    fn sum8_adds_value_i_into_lane_i_mod_8() {
        for n in [0, 1, 7, 8, 9, 23, 160] {
            let values: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013).collect();
            let mut lanes = [0.0f32; 8];
            values.iter().enumerate().for_each(|(i, v)| lanes[i % 8] += v * v);
            let want =
                ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
            assert_eq!(sum8(&values, |v| v * v).to_bits(), want.to_bits(), "{n} values");
        }
    }

    #[test]
    fn gelu_backward_matches_the_derivative_in_f64() {
        let mut rng = crate::rng::Rng::new(5);
        let x: Vec<f32> = (0..4000).map(|_| 4.0 * rng.normal() as f32).collect();
        let dout: Vec<f32> = (0..4000).map(|_| rng.normal() as f32).collect();
        let mut dx = vec![0.5f32; 4000]; // the pass accumulates
        gelu_backward(&x, &dout, &mut dx);
        let c = (2.0 / std::f64::consts::PI).sqrt();
        for ((&u, &dy), &got) in x.iter().zip(&dout).zip(&dx) {
            let u = u as f64;
            let t = (c * (u + 0.044715 * u.powi(3))).tanh();
            let local = 0.5 * (1.0 + t) + 0.5 * u * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * u * u);
            let want = 0.5 + dy as f64 * local;
            // f32 cancels in 1 ± t where |t| → 1: allow what 4 ulp of t (2 from tanh, 2 from rounding) move it by
            let dlocal_dt = 0.5 + (u * t * c * (1.0 + 3.0 * 0.044715 * u * u)).abs();
            let tol =
                (dy as f64).abs() * dlocal_dt * 4.0 * f32::EPSILON as f64 + 2.0 * f32::EPSILON as f64 * want.abs();
            assert!((got as f64 - want).abs() <= tol, "{got} vs {want} at x = {u}");
        }
    }

    #[test]
    fn exp_is_within_two_ulp() {
        for i in 0..=86_990 {
            let x = -(i as f32) * 1e-3;
            let want = (x as f64).exp() as f32;
            assert!(ulps(exp_neg(x), want) <= 2.0, "exp({x}) = {} vs {want}", exp_neg(x));
        }
    }

    #[test]
    fn gelu_softmax_and_layer_norm_match_the_reference() {
        let mut rng = crate::rng::Rng::new(3);
        let (rows, d) = (7, 96);
        let x: Vec<f32> = (0..rows * d).map(|_| 3.0 * rng.normal() as f32 + 0.5).collect();
        let (mut fast, mut exact) = (x.clone(), x.clone());
        gelu_new(&mut fast);
        crate::backend::cpu::ops::gelu_new(&mut exact);
        for (f, e) in fast.iter().zip(&exact) {
            assert!((f - e).abs() <= 4.0 * f32::EPSILON * e.abs().max(1.0), "{f} vs {e}");
        }
        let (mut fast, mut exact) = (x[..50].to_vec(), x[..50].to_vec());
        softmax(&mut fast);
        crate::backend::cpu::ops::softmax(&mut exact);
        for (f, e) in fast.iter().zip(&exact) {
            assert!((f - e).abs() <= 8.0 * f32::EPSILON * e, "{f} vs {e}");
        }
        let ln = crate::model::weights::LayerNorm {
            w: (0..d).map(|_| 1.0 + rng.normal() as f32 * 0.1).collect(),
            b: (0..d).map(|_| rng.normal() as f32 * 0.1).collect(),
        };
        let (mut fast, mut exact) = (vec![0.0; rows * d], vec![0.0; rows * d]);
        layer_norm_rows(&x, &ln.w, &ln.b, 1e-5, &mut fast);
        crate::backend::cpu::ops::layer_norm(&x, &ln, 1e-5, &mut exact);
        for (f, e) in fast.iter().zip(&exact) {
            assert!((f - e).abs() <= 1e-6 * e.abs().max(1.0), "{f} vs {e}");
        }
    }
}
