//! The CUDA kernels (`cuda/*.cu`) and the CUDA step's orchestration, run on the CPU under the emulation of CUDA
//! (`cuda/emu`), against the CPU backend (ENGINEERING §6, rung 3), with the checks of `cuda_checks` (the GPU
//! runs the same ones in tests/cuda_gpu.rs). The write step runs as a captured graph replayed every segment,
//! as on the GPU.
//!
//! The emulated device hands kernels host memory with guard bytes around every buffer: a kernel that writes
//! outside its buffer fails the launch, as a divergent barrier or warp operation does.

mod common;
mod cuda_checks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cuda_checks::{compare_streams, i, tiny_model, Lab, PRECISIONS};
use rmt_cuda_emu::Arg;
use rmt_fast::backend::cuda::{CudaModel, CudaStep, Device, KernelArg, Precision};
use rmt_fast::{Config, Engine, Error, Model, Result};

const GUARD: usize = 64;
const GUARD_BYTE: u8 = 0xa5;

/// Host memory standing in for device memory, with guard bytes before and after; 16-byte aligned like
/// `cudaMalloc`'s (the kernels take 16-byte loads when they can).
struct EmuBuffer {
    words: Vec<u128>,
    registry: Arc<Mutex<HashMap<usize, usize>>>,
}

// SAFETY: the emulator runs one launch at a time; buffers are plain bytes
unsafe impl Sync for EmuBuffer {}

impl EmuBuffer {
    fn new(bytes: usize, registry: Arc<Mutex<HashMap<usize, usize>>>) -> Self {
        let fill = u128::from_ne_bytes([GUARD_BYTE; 16]);
        let mut buf = EmuBuffer { words: vec![fill; (bytes + 2 * GUARD).div_ceil(16)], registry };
        buf.data()[GUARD..GUARD + bytes].fill(0);
        buf
    }
    fn data(&mut self) -> &mut [u8] {
        // SAFETY: u128 words viewed as their bytes
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast(), self.words.len() * 16) }
    }
    fn bytes(&self) -> &[u8] {
        // SAFETY: as above
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast(), self.words.len() * 16) }
    }
    fn base(&self) -> usize {
        self.words.as_ptr() as usize + GUARD
    }
}

impl Drop for EmuBuffer {
    fn drop(&mut self) {
        self.registry.lock().unwrap().remove(&self.base());
    }
}

/// A launch as a graph records it: by value.
#[derive(Clone)]
struct Launch {
    name: String,
    grid: [u32; 3],
    block: [u32; 3],
    args: Vec<KernelArg>,
}

/// The CUDA [`Device`] of the emulator.
struct Emu {
    precision: Precision,
    /// Live buffers (address → length), whose guards are checked after every launch.
    live: Arc<Mutex<HashMap<usize, usize>>>,
    /// Launches being captured into a graph instead of run.
    recording: Mutex<Option<Vec<Launch>>>,
}

impl Emu {
    fn new(precision: Precision) -> Self {
        Emu { precision, live: Arc::default(), recording: Mutex::new(None) }
    }

    fn run(&self, l: &Launch) -> Result<()> {
        let args: Vec<Arg> = l
            .args
            .iter()
            .map(|a| match *a {
                KernelArg::Ptr(p) => Arg::Ptr(p),
                KernelArg::I32(i) => Arg::I32(i),
                KernelArg::F32(f) => Arg::F32(f),
            })
            .collect();
        let precision = match self.precision {
            Precision::Bf16 => rmt_cuda_emu::Precision::Bf16,
            Precision::F32 => rmt_cuda_emu::Precision::F32,
        };
        let name = &l.name;
        // SAFETY: pointers are addresses of live EmuBuffers; the guards below catch writes past them
        unsafe { rmt_cuda_emu::launch(precision, name, l.grid, l.block, &args) }.map_err(Error::Device)?;
        for (&base, &len) in self.live.lock().unwrap().iter() {
            // SAFETY: the registry holds exactly the live buffers, each with GUARD bytes either side
            let (before, after) = unsafe {
                (
                    std::slice::from_raw_parts((base - GUARD) as *const u8, GUARD),
                    std::slice::from_raw_parts((base + len) as *const u8, GUARD),
                )
            };
            if before.iter().chain(after).any(|&b| b != GUARD_BYTE) {
                return Err(Error::Device(format!("{name} wrote outside a buffer of {len} bytes")));
            }
        }
        Ok(())
    }
}

impl Device for Emu {
    type Buffer = EmuBuffer;
    type Graph = Vec<Launch>;

    fn precision(&self) -> Precision {
        self.precision
    }

    fn alloc(&self, bytes: usize) -> Result<EmuBuffer> {
        let buf = EmuBuffer::new(bytes, Arc::clone(&self.live));
        self.live.lock().unwrap().insert(buf.base(), bytes);
        Ok(buf)
    }

    fn address(&self, buf: &EmuBuffer) -> u64 {
        buf.base() as u64
    }

    fn upload(&self, buf: &mut EmuBuffer, offset: usize, bytes: &[u8]) -> Result<()> {
        buf.data()[GUARD + offset..][..bytes.len()].copy_from_slice(bytes);
        Ok(())
    }

    fn download(&self, buf: &EmuBuffer, offset: usize, out: &mut [u8]) -> Result<()> {
        out.copy_from_slice(&buf.bytes()[GUARD + offset..][..out.len()]);
        Ok(())
    }

    fn copy(&self, (src, at): (&EmuBuffer, usize), (dst, to): (&mut EmuBuffer, usize), bytes: usize) -> Result<()> {
        dst.data()[GUARD + to..GUARD + to + bytes].copy_from_slice(&src.bytes()[GUARD + at..GUARD + at + bytes]);
        Ok(())
    }

    fn launch(&self, name: &str, grid: [u32; 3], block: [u32; 3], args: &[KernelArg]) -> Result<()> {
        let launch = Launch { name: name.to_string(), grid, block, args: args.to_vec() };
        match self.recording.lock().unwrap().as_mut() {
            Some(graph) => {
                graph.push(launch);
                Ok(())
            }
            None => self.run(&launch),
        }
    }

    fn capture(&self, launches: &mut dyn FnMut() -> Result<()>) -> Result<Vec<Launch>> {
        *self.recording.lock().unwrap() = Some(Vec::new());
        let recorded = launches();
        let graph = self.recording.lock().unwrap().take().expect("recording");
        recorded.map(|()| graph)
    }

    fn replay(&self, graph: &Vec<Launch>) -> Result<()> {
        graph.iter().try_for_each(|l| self.run(l))
    }
}

#[test]
fn layernorm_kernels_match_the_cpu() {
    PRECISIONS.into_iter().for_each(|p| cuda_checks::layernorm(Emu::new(p)));
}

#[test]
fn matmul_kernels_match_the_cpu() {
    PRECISIONS.into_iter().for_each(|p| cuda_checks::matmul_kernels(Emu::new(p)));
}

#[test]
fn attention_kernel_matches_the_cpu() {
    PRECISIONS.into_iter().for_each(|p| cuda_checks::attention(Emu::new(p)));
}

#[test]
fn retrieval_kernels_match_the_cpu() {
    PRECISIONS.into_iter().for_each(|p| cuda_checks::retrieval(Emu::new(p)));
}

#[test]
fn embed_kernels_match_the_cpu() {
    PRECISIONS.into_iter().for_each(|p| cuda_checks::embed(Emu::new(p)));
}

#[test]
fn associative_kernels_match_the_cpu() {
    PRECISIONS.into_iter().for_each(|p| cuda_checks::associative(Emu::new(p)));
}

/// A CUDA engine whose steps run under the emulator.
fn emulated_engine(model: &Model, p: Precision) -> Engine {
    let model = Arc::new(model.clone());
    let uploaded = CudaModel::new(Emu::new(p), Arc::clone(&model)).unwrap();
    Engine::with_steps(model, move || Box::new(CudaStep::new(Arc::clone(&uploaded))))
}

#[test]
fn emulated_rmt_stream_matches_the_cpu() {
    let model = tiny_model(r#"{"kind": "rmt", "num_mem_tokens": 4, "segment_size": 16}"#, 1);
    compare_streams(&model, 4, 1, PRECISIONS.map(|p| (p, emulated_engine(&model, p))));
}

/// ARMT: the associative state after every segment (every layer's, written by the memory rows), and the answer,
/// read with the state.
#[test]
fn emulated_armt_stream_matches_the_cpu() {
    let model = cuda_checks::tiny_armt(3);
    compare_streams(&model, 4, 3, PRECISIONS.map(|p| (p, emulated_engine(&model, p))));
}

/// ARMT with a decay of its state (`memory.decay`), which the write kernels apply as the CPU does.
#[test]
fn emulated_decayed_armt_stream_matches_the_cpu() {
    let plain = cuda_checks::tiny_armt(3);
    let model = cuda_checks::decayed(plain.clone());
    // on the CPU the decay moves the state far beyond the checks' tolerances: a kernel that dropped it would fail
    let tokens = cuda_checks::stream(4 * 16, 3);
    let state = |m: &Model| {
        let mut s = Engine::cpu_reference(m.clone()).session();
        s.read(&tokens).unwrap();
        s.state().memory.clone()
    };
    let e = common::rel_err(&state(&model), &state(&plain));
    assert!(e > 0.1, "the decay changes the state by only {e:.1e}");
    compare_streams(&model, 4, 3, PRECISIONS.map(|p| (p, emulated_engine(&model, p))));
}

#[test]
fn emulated_rmt_r_streams_match_the_cpu() {
    for retrieval in ["v1", "v2"] {
        let mem =
            format!(r#"{{"kind": "rmt-r", "num_mem_tokens": 4, "segment_size": 12, "retrieval": "{retrieval}"}}"#);
        let model = tiny_model(&mem, 2);
        compare_streams(&model, 4, 2, PRECISIONS.map(|p| (p, emulated_engine(&model, p))));
    }
}

/// Segments of 138 rows: the step splits attention's keys in 128s and merges them (a few query blocks leave SMs
/// idle), in the write step and in the answer's decode steps.
#[test]
fn emulated_split_attention_stream_matches_the_cpu() {
    let model = cuda_checks::scaled_model(
        r#"{"n_layer": 2, "n_head": 2, "n_embd": 64, "vocab_size": 120, "n_positions": 160,
            "eos_token_id": 119, "gen_token_id": 118,
            "memory": {"kind": "rmt", "num_mem_tokens": 4, "segment_size": 130}}"#,
        5,
    );
    compare_streams(&model, 2, 5, PRECISIONS.map(|p| (p, emulated_engine(&model, p))));
}

/// A model 128 wide: the MLP's projection (K = 512) splits K in 2 shares that residual_layernorm adds up, in the
/// write step and in the answer's decode steps. Unscaled weights: the ×3 of the other tests takes this width's bf16
/// rounding just past 1e-2 (memory after one segment 1.02e-2, the same with K unsplit).
#[test]
fn emulated_split_k_stream_matches_the_cpu() {
    let model = Model::random(
        Config::from_json(
            r#"{"n_layer": 2, "n_head": 2, "n_embd": 128, "vocab_size": 120, "n_positions": 48,
            "eos_token_id": 119, "gen_token_id": 118,
            "memory": {"kind": "rmt", "num_mem_tokens": 4, "segment_size": 16}}"#,
        )
        .unwrap(),
        7,
    )
    .unwrap();
    compare_streams(&model, 3, 8, PRECISIONS.map(|p| (p, emulated_engine(&model, p))));
}

/// `segments` segments of 16 (and 3 tokens more) read in one call on the emulated GPU (f32) and on the CPU
/// reference: the same segments and tail, and memory within 1e-5. Returns both sessions.
fn chained_read_matches_the_cpu(model: &Model, segments: usize) -> (rmt_fast::Session, rmt_fast::Session) {
    let tokens = cuda_checks::stream(segments * 16 + 3, 6);
    let (mut gpu, mut cpu) =
        (emulated_engine(model, Precision::F32).session(), Engine::cpu_reference(model.clone()).session());
    gpu.read(&tokens).unwrap();
    cpu.read(&tokens).unwrap();
    assert_eq!((gpu.state().segments, &gpu.state().tail), (segments as u64, &cpu.state().tail));
    let e = common::rel_err(&gpu.state().memory, &cpu.state().memory);
    assert!(e <= 1e-5, "memory after {segments} chained segments: {e:.3e}");
    (gpu, cpu)
}

/// Plain RMT read in one call runs as a device-side chain: 70 segments span two uploads of token ids (64
/// segments each); the memory after them agrees with the CPU reference.
#[test]
fn emulated_rmt_chain_matches_the_cpu() {
    chained_read_matches_the_cpu(&tiny_model(r#"{"kind": "rmt", "num_mem_tokens": 4, "segment_size": 16}"#, 4), 70);
}

/// ARMT read in one call runs as a device-side chain too: 66 segments span two uploads of token ids, the state
/// stays on the device; the state after them and the answer agree with the CPU reference.
#[test]
fn emulated_armt_chain_matches_the_cpu() {
    let (mut gpu, mut cpu) = chained_read_matches_the_cpu(&cuda_checks::tiny_armt(4), 66);
    let question = cuda_checks::stream(5, 8);
    assert_eq!(gpu.ask(&question, 3).unwrap().tokens, cpu.ask(&question, 3).unwrap().tokens, "the answer");
}

/// RMT-R read in one call runs as a device-side chain after its first segment: 70 segments span two uploads of
/// token ids. With an f32 and a bf16 store, the memory, every stored state and the answer (which retrieves over
/// the device's cache the chain built) agree with the CPU reference.
#[test]
fn emulated_rmt_r_chain_matches_the_cpu() {
    use rmt_fast::store::{StoreConfig, StoreDtype};
    let model = tiny_model(r#"{"kind": "rmt-r", "num_mem_tokens": 4, "segment_size": 12, "retrieval": "v2"}"#, 4);
    let tokens = cuda_checks::stream(70 * 12 + 3, 6);
    for dtype in [StoreDtype::F32, StoreDtype::Bf16] {
        let store = StoreConfig { dtype, ..StoreConfig::default() };
        let gpu = emulated_engine(&model, Precision::F32).with_store(store.clone());
        let cpu = Engine::cpu_reference(model.clone()).with_store(store);
        let (mut g, mut c) = (gpu.session(), cpu.session());
        g.read(&tokens).unwrap();
        c.read(&tokens).unwrap();
        assert_eq!((g.state().segments, &g.state().tail), (70, &c.state().tail));
        let e = common::rel_err(&g.state().memory, &c.state().memory);
        assert!(e <= 1e-5, "{dtype:?} store: memory after 70 chained segments: {e:.3e}");
        assert_eq!(g.state().store.rows(), c.state().store.rows());
        if dtype == StoreDtype::F32 {
            let e = common::rel_err(&g.state().store.to_vec(), &c.state().store.to_vec());
            assert!(e <= 1e-5, "f32 store: stored states: {e:.3e}");
        } else {
            // values within 1e-7 of each other can round to neighbouring bf16 values: one ulp, and rarely
            let bits = |s: &rmt_fast::Session| -> Vec<i32> {
                s.state().store.encoded().chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]) as i32).collect()
            };
            let (gb, cb) = (bits(&g), bits(&c));
            let off = gb.iter().zip(&cb).filter(|(a, b)| a != b).count();
            assert!(gb.iter().zip(&cb).all(|(a, b)| (a - b).abs() <= 1), "bf16 store: a state off by more than 1 ulp");
            assert!(off * 100 <= gb.len(), "bf16 store: {off} of {} stored values differ", gb.len());
            eprintln!("bf16 store: {off} of {} stored values one ulp apart, the rest bit-identical", gb.len());
        }
        let question = cuda_checks::stream(5, 8);
        let (x, y) = (c.ask(&question, 3).unwrap(), g.ask(&question, 3).unwrap());
        assert_eq!(y.tokens, x.tokens, "{dtype:?} store: the answer");
        let e = common::rel_err(&y.logits[0], &x.logits[0]);
        assert!(e <= 1e-5, "{dtype:?} store: logits of the answer: {e:.3e}");
    }
}

/// Two ARMT streams stacked in one step, each reading and writing its own state, against separate CPU sessions.
#[test]
fn emulated_batched_armt_streams_match_separate_sessions() {
    let model = cuda_checks::tiny_armt(5);
    cuda_checks::batched_streams(&model, emulated_engine(&model, Precision::F32));
}

#[test]
fn emulated_batched_streams_match_separate_sessions() {
    let model = tiny_model(r#"{"kind": "rmt", "num_mem_tokens": 4, "segment_size": 16}"#, 3);
    cuda_checks::batched_streams(&model, emulated_engine(&model, Precision::F32));
}

/// The checks can fail: each rule a kernel can break is reported, and so is a wrong argument list.
#[test]
fn the_emulator_reports_broken_kernels() {
    let lab = Lab { dev: Emu::new(Precision::F32) };
    let x = lab.zeros(64);
    let launch = |name: &str, args: &[KernelArg]| lab.dev.launch(name, [1, 1, 1], [64, 1, 1], args);
    let err = |name: &str, args: &[KernelArg]| launch(name, args).unwrap_err().to_string();
    launch("write_past_end", &[lab.p(&x), i(63)]).unwrap(); // the last element is inside
    assert!(err("divergent_barrier", &[lab.p(&x)]).contains("divergent"));
    assert!(err("divergent_shuffle", &[lab.p(&x)]).contains("divergent"));
    assert!(err("layernorm", &[lab.p(&x)]).contains("do not match"));
    assert!(err("no_such_kernel", &[]).contains("no kernel named"));
    let words = lab.zeros(256);
    let warp = |name: &str| lab.dev.launch(name, [1, 1, 1], [32, 1, 1], &[lab.p(&words)]);
    assert!(warp("misaligned_ldmatrix").unwrap_err().to_string().contains("not 16-byte aligned"));
    // a cp.async read back without its wait finds the old contents; with the wait, the copy
    let src = lab.f32(&[1.0, 2.0, 3.0, 4.0]);
    for (wait, want) in [(0, [0.0; 4]), (1, [1.0, 2.0, 3.0, 4.0])] {
        lab.run("cp_async_roundtrip", [1, 1, 1], [32, 1, 1], &[lab.p(&words), lab.p(&src), i(wait)]);
        assert_eq!(lab.read_f32(&words, 4), want, "cp.async read back with wait = {wait}");
    }
    // last: the guard bytes it overwrites stay overwritten, and every later launch would report them
    assert!(err("write_past_end", &[lab.p(&x), i(64)]).contains("wrote outside"));
}

/// The emulated ldmatrix against the PTX ISA's statement of it: register j of lane t holds row t/4, columns
/// 2(t%4) and 2(t%4)+1 of matrix j (lower column in the low half); `.trans` the same of the transposed matrix.
#[test]
fn emulated_ldmatrix_follows_the_ptx_layout() {
    let lab = Lab { dev: Emu::new(Precision::F32) };
    let words = lab.zeros(256);
    lab.run("ldmatrix_layout", [1, 1, 1], [32, 1, 1], &[lab.p(&words)]);
    let got: Vec<u32> = lab.read_f32(&words, 256).iter().map(|v| v.to_bits()).collect();
    let element = |j: u32, i: u32, c: u32| 256 * j + 8 * i + c;
    for t in 0..32u32 {
        for j in 0..4u32 {
            let (r, c) = (t / 4, 2 * (t % 4));
            assert_eq!(
                got[(4 * t + j) as usize],
                element(j, r, c) | element(j, r, c + 1) << 16,
                "lane {t}, matrix {j}"
            );
            let want_t = element(j, c, r) | element(j, c + 1, r) << 16;
            assert_eq!(got[(128 + 4 * t + j) as usize], want_t, "lane {t}, matrix {j}, transposed");
        }
    }
}

/// A model the kernels are not written for is refused up front, not computed wrong.
#[test]
fn unsupported_head_size_is_a_config_error() {
    let cfg = rmt_fast::Config::from_json(
        r#"{"n_layer": 1, "n_head": 4, "n_embd": 64, "vocab_size": 50, "n_positions": 32,
            "eos_token_id": 49, "gen_token_id": 48,
            "memory": {"kind": "rmt", "num_mem_tokens": 2, "segment_size": 8}}"#,
    )
    .unwrap();
    let model = Arc::new(Model::random(cfg, 1).unwrap());
    match CudaModel::new(Emu::new(Precision::F32), model) {
        Err(Error::Config(msg)) => assert!(msg.contains("head sizes 32 or 64"), "{msg}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("head size 16 accepted"),
    }
}

/// RMT's device-side chain refuses an ARMT step: its links would write with the state as memory rows.
#[test]
fn rmt_chain_refuses_an_armt_step() {
    use rmt_fast::backend::Step;
    let model = Arc::new(cuda_checks::tiny_armt(1));
    let mut step = CudaStep::new(CudaModel::new(Emu::new(Precision::F32), Arc::clone(&model)).unwrap());
    let mut state = vec![0.0; model.config.associative_state_len()];
    let err = step.write_chain(&mut state, &[0; 16], 16).unwrap_err();
    assert!(err.to_string().contains("write_associative_chain"), "{err}");
}
