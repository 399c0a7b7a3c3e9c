//! The training loop (RMT-SPEC §1.10): curriculum stages of growing segment counts, each a fresh AdamW run with
//! linear warmup/decay starting from the previous stage's best model; BABILong samples made on the fly from bAbI
//! facts and a haystack; validation by exact match; atomic checkpoints from which a killed run resumes exactly.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::look_back::{LookBack, LookBackConfig};
use super::optim::{clip_grad_norm, learning_rate, AdamState, AdamW};
use super::probes::{probes as memory_probes, ProbeConfig};
use super::qa1::{asks_the_latest_mover, check_tasks};
use super::{accumulate, Dropout, LookBackStep, TrainSample};
use crate::babilong::babi::{self, Sample, Split};
use crate::babilong::generate::generate;
use crate::babilong::haystack::Haystack;
use crate::babilong::sample::build;
use crate::error::{Error, Result};
use crate::model::weights::{serialize_tensors, write_atomically, FileDtype, Weights};
use crate::model::{AssociativeWrite, Config, MemoryKind, Model};
use crate::rng::Rng;
use crate::stream::tokenizer::Tokenizer;
use crate::Engine;

/// The form of the questions in training samples, recorded in trained models (see
/// [`Config::format_question`]).
pub const QUESTION_TEMPLATE: &str = "{question} ";

/// One curriculum stage.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Samples are 1 … `segments` segments long (uniformly, as `--vary_n_segments`), and of random length within
    /// their last segment.
    pub segments: usize,
    /// Optimizer steps.
    pub steps: u64,
    /// Samples per step.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Warmup steps (then linear decay towards 0 at 2 × steps, as the authors schedule it).
    pub warmup: u64,
    /// Ends the stage after this many steps, with the learning-rate schedule still planned for `steps`: how a
    /// recipe replays a stage that was stopped by hand at its best validation. Absent: the stage runs all `steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_after: Option<u64>,
    /// Backpropagates through the last `k2` segments of each sample only (the authors' BPTT unroll length, whose
    /// −1, full BPTT, is the default): longer samples for the cost of a forward pass over their first segments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k2: Option<std::num::NonZeroUsize>,
    /// The share of samples made one segment long (the rest drawn as `segments` says): keeps answering from within
    /// a segment trained while the stages grow, which the uniform draw alone (one sample in `segments`) lets fade.
    /// Absent: the uniform draw only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_share: Option<f64>,
    /// The share of samples whose facts lie in their last `k2` segments (all of them, or those `late_facts`
    /// names), after background and the others. Truncated BPTT trains a write only when its fact falls in the
    /// window, so with facts spread over a long sample the writes into a memory that a long stream has aged are
    /// almost never trained, and late facts fail to replace early ones; these samples train those writes. Needs
    /// `k2`. Absent: facts anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_share: Option<f64>,
    /// Which facts of a `late_share` sample go in its last `k2` segments. Absent: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_facts: Option<LateFacts>,
}

/// Which facts of a late sample (see [`Stage::late_share`]) lie in its last `k2` segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LateFacts {
    /// All of them, after background alone: writes into a memory that background has aged.
    All,
    /// The facts from the last supporting one on; the earlier ones spread over the segments before. The answer's
    /// write then lands in a memory that a long stream has aged and that holds the facts it must replace (qa1's
    /// earlier rooms of the asked person), the write that fails in a long stream.
    FromSupport,
}

impl LateFacts {
    /// How many of the story's first facts go before the window (none for a sample that names no supporting fact).
    fn before_window(self, s: &Sample) -> usize {
        match self {
            LateFacts::All => 0,
            LateFacts::FromSupport => s.supporting.iter().max().copied().unwrap_or(0),
        }
    }
}

impl Stage {
    /// What a config can get wrong in a stage, said before any file is read.
    fn check(&self) -> std::result::Result<(), String> {
        if self.segments == 0 {
            return Err("samples need at least one segment (`segments` is 0)".into());
        }
        for (name, share) in [("short_share", self.short_share), ("late_share", self.late_share)] {
            match share {
                Some(p) if !(0.0..=1.0).contains(&p) => return Err(format!("{name} is a fraction (0 … 1), not {p}")),
                _ => {}
            }
        }
        if self.late_share.is_some() && self.k2.is_none() {
            return Err("late_share puts the facts in the last `k2` segments: the stage needs a `k2`".into());
        }
        if self.late_facts.is_some() && self.late_share.is_none() {
            return Err("late_facts says which facts of a late sample go late: the stage needs a `late_share`".into());
        }
        Ok(())
    }

    /// The steps this stage runs: `steps`, or fewer with `stop_after`.
    pub fn run_steps(&self) -> u64 {
        self.stop_after.map_or(self.steps, |s| s.min(self.steps))
    }
}

/// Where the model starts.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[serde(deny_unknown_fields)]
pub enum Start {
    /// A random model of this config, seeded by the run's seed.
    Init(Config),
    /// A model file.
    From(PathBuf),
    /// A random model of this config whose GPT-2 weights (embeddings, blocks, `ln_f`, LM head) come from a model
    /// file of the same GPT-2 shape, of any memory kind: an ARMT started from a trained RMT's backbone. The memory
    /// parameters stay as initialised.
    Backbone {
        /// The new model's config.
        init: Config,
        /// The model file whose backbone is copied.
        from: PathBuf,
    },
    /// A model file carried to segments of another size ([`Model::with_segment_size`]): all its weights, with the
    /// position embeddings interpolated to the new segment.
    Resize {
        /// The model file.
        from: PathBuf,
        /// The new segment size, in tokens.
        segment_size: usize,
    },
}

/// A training run, as read from `train.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The model to train.
    pub model: Start,
    /// ARMT: the write rule to train with, set on the starting model (a model trained with the authors' rule can go
    /// on with the replacing write); absent: the model's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<AssociativeWrite>,
    /// ARMT: the decay λ to train with (`memory.decay`), set on the starting model; absent: the model's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decay: Option<f32>,
    /// Seed of the initialisation and of every sample.
    #[serde(default)]
    pub seed: u64,
    /// bAbI tasks, e.g. `["qa1"]`.
    pub tasks: Vec<String>,
    /// bAbI directory whose train files give the facts; absent: the built-in generators.
    #[serde(default)]
    pub babi: Option<PathBuf>,
    /// Background books for training; empty: synthetic prose.
    #[serde(default)]
    pub haystack: Vec<PathBuf>,
    /// Held-out books for validation; empty: synthetic prose.
    #[serde(default)]
    pub valid_haystack: Vec<PathBuf>,
    /// Curriculum stages, in order.
    pub stages: Vec<Stage>,
    /// AdamW settings.
    #[serde(default)]
    pub optimizer: AdamW,
    /// Global gradient-norm clip.
    #[serde(default = "clip")]
    pub clip: f32,
    /// Dropout probability at GPT-2's sites (0: none; GPT-2 used 0.1).
    #[serde(default)]
    pub dropout: f32,
    /// Tokens left for question, GEN, answer and EOS in each sample's last segment (§1.8).
    #[serde(default = "qa_margin")]
    pub qa_margin: usize,
    /// Validate every this many steps.
    pub valid_every: u64,
    /// Validation samples (bAbI test facts) at the stage's longest length.
    pub valid_samples: usize,
    /// Write a checkpoint every this many steps.
    #[serde(default = "checkpoint_every")]
    pub checkpoint_every: u64,
    /// Training-only look-back heads (see [`super::look_back`]); absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub look_back: Option<LookBackConfig>,
    /// Training-only memory probes, qa1–qa3 (see [`super::probes`]); absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<ProbeConfig>,
    /// qa1: the fraction of training samples drawn among the questions about someone other than the story's latest
    /// mover ([`super::qa1::asks_the_latest_mover`]); absent: drawn as they come (about half are about the latest
    /// mover, which a memory that keeps only the latest place answers). Validation is never filtered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_questions: Option<f64>,
}

fn clip() -> f32 {
    1.0
}
fn qa_margin() -> usize {
    20
}
fn checkpoint_every() -> u64 {
    50
}

/// Where a run is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Current stage (0-based).
    pub stage: usize,
    /// Steps done in it.
    pub step: u64,
    /// Best validation accuracy in it so far (−1 before the first validation).
    pub best_accuracy: f64,
}

/// One logged step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// Stage (0-based).
    pub stage: usize,
    /// Step within the stage (1-based).
    pub step: u64,
    /// Batch loss.
    pub loss: f32,
    /// Gradient norm before clipping.
    pub grad_norm: f32,
    /// Learning rate used.
    pub lr: f32,
    /// The look-back heads' loss (weighted, added to `loss` in the objective), when they are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub look_back_loss: Option<f32>,
    /// The probes' loss (weighted, added to `loss` in the objective), when they are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_loss: Option<f32>,
    /// Validation accuracy, on validation steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_accuracy: Option<f64>,
    /// Each task's validation accuracy (on its share of the samples), on validation steps of runs with several
    /// tasks: a mixed run's total hides the task that lags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_by_task: Option<BTreeMap<String, f64>>,
}

fn mix(seed: u64, parts: &[u64]) -> u64 {
    parts.iter().fold(Rng::new(seed).next_u64(), |h, &p| Rng::new(h ^ p.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64())
}

/// The bAbI samples a run draws facts from: per task, train (or generated) and test (or generated with another
/// seed).
struct Facts {
    train: Vec<Vec<Sample>>,
    valid: Vec<Vec<Sample>>,
    /// With `hard_questions`: per task, the indices of the train samples not about the latest mover.
    hard: Vec<Vec<usize>>,
}

impl Facts {
    fn load(cfg: &TrainConfig) -> Result<Self> {
        let tasks = cfg.tasks.iter().map(|t| babi::task_number(t)).collect::<Result<Vec<_>>>()?;
        if tasks.is_empty() {
            return Err(Error::Input("train: give at least one task".into()));
        }
        // checked before any file is read
        if let Some(h) = cfg.hard_questions {
            check_tasks("hard questions", &cfg.tasks)?;
            if !(0.0..=1.0).contains(&h) {
                return Err(Error::Input(format!("hard_questions is a fraction (0 … 1), not {h}")));
            }
        }
        let mut f = Facts { train: Vec::new(), valid: Vec::new(), hard: Vec::new() };
        for &t in &tasks {
            match &cfg.babi {
                Some(dir) => {
                    f.train.push(babi::load(dir, t, Split::Train)?);
                    f.valid.push(babi::load(dir, t, Split::Test)?);
                }
                None => {
                    f.train.push(generate(t, 10_000, &mut Rng::new(mix(cfg.seed, &[t as u64, 1])))?);
                    f.valid.push(generate(t, 1_000, &mut Rng::new(mix(cfg.seed, &[t as u64, 2])))?);
                }
            }
        }
        if cfg.hard_questions.is_some() {
            for task in &f.train {
                let mut hard = Vec::new();
                for (i, s) in task.iter().enumerate() {
                    if !asks_the_latest_mover(s)? {
                        hard.push(i);
                    }
                }
                if hard.is_empty() {
                    return Err(Error::Input("hard_questions: every train question is about the latest mover".into()));
                }
                f.hard.push(hard);
            }
        }
        Ok(f)
    }

    /// A train sample: a task, then a sample of it; with `hard_questions` (the fraction h), with probability h one
    /// not about the latest mover.
    fn draw(&self, hard_questions: Option<f64>, rng: &mut Rng) -> &Sample {
        let t = rng.below(self.train.len() as u64) as usize;
        let task = &self.train[t];
        let s = &task[rng.below(task.len() as u64) as usize];
        // the extra draws happen only with the option on, so runs without it keep their data bit for bit
        if hard_questions.is_some_and(|h| rng.uniform() < h) {
            let hard = &self.hard[t];
            return &task[hard[rng.below(hard.len() as u64) as usize]];
        }
        s
    }
}

/// One sample of `n_seg` segments: a context of uniformly random length that ends in the `n_seg`-th segment and
/// leaves `qa_margin` tokens for the question and answer, then the question and GEN. The question lands anywhere in
/// the last segment, as it does when a stream of any length is read: with learned positions, a model trained only
/// on full segments cannot answer at other offsets. With `late = Some((w, which))`, `which` facts go into the last
/// `w` segments and the segments before hold background and the other facts. With `probes`, the memory of a sample
/// of a probed task is asked after every segment but the last.
#[allow(clippy::too_many_arguments)]
fn make_sample(
    model: &Model,
    s: &Sample,
    n_seg: usize,
    late: Option<(usize, LateFacts)>,
    margin: usize,
    hay: &Haystack,
    seed: u64,
    probes: Option<&ProbeConfig>,
) -> Result<TrainSample> {
    let seg = model.config.memory.segment_size;
    let longest = (n_seg * seg).saturating_sub(margin);
    let shortest = ((n_seg - 1) * seg).min(longest);
    let length = shortest + Rng::new(seed ^ 0x1e9).below((longest - shortest + 1) as u64) as usize;
    let mut prompt = Vec::with_capacity(length + 16);
    let mut sampler = hay.sampler(seed);
    let (background, early) = match late {
        Some((w, which)) if n_seg > w => ((n_seg - w) * seg, which.before_window(s)),
        _ => (0, 0),
    };
    // the segments before the window: the story's first `early` facts in background (a story too long for them
    // keeps all its facts in the window), or background alone
    let mut fact_at = Vec::new();
    if early > 0 {
        let first = Sample { facts: s.facts[..early].to_vec(), ..s.clone() };
        let mut emit = |t: &[u32]| {
            prompt.extend_from_slice(t);
            Ok(())
        };
        // its own generator, so that the other samples keep their data
        if let Ok(l) = build(&first, background, false, &mut sampler, &mut Rng::new(seed ^ 0xea7), &mut emit) {
            fact_at = l.fact_positions;
        }
    }
    while prompt.len() < background {
        let sentence = sampler.next_sentence()?;
        let take = sentence.len().min(background - prompt.len()); // cut to end exactly where the window begins
        prompt.extend_from_slice(&sentence[..take]);
    }
    let rest = Sample { facts: s.facts[fact_at.len()..].to_vec(), ..s.clone() };
    let mut rng = Rng::new(seed ^ 0x5eed);
    // a sample's facts may not fit a short length: fall back to the facts alone (the "0k" sample)
    let layout = match build(&rest, length - background, false, &mut sampler, &mut rng, &mut |t| {
        prompt.extend_from_slice(t);
        Ok(())
    }) {
        Ok(l) => l,
        Err(_) => {
            prompt.truncate(background);
            build(&rest, 0, false, &mut sampler, &mut rng, &mut |t| {
                prompt.extend_from_slice(t);
                Ok(())
            })?
        }
    };
    fact_at.extend(layout.fact_positions.iter().map(|&f| background + f));
    prompt.extend(&layout.question);
    prompt.push(model.config.gen_token_id);
    let probes = match probes {
        Some(p) if p.probes_task(s.task) => {
            let (gen, len) = (model.config.gen_token_id, prompt.len());
            memory_probes(s, &fact_at, len, seg, gen, p, seed)?
        }
        _ => Vec::new(),
    };
    Ok(TrainSample { prompt, answer: layout.target, probes })
}

/// The batch of step `step` of stage `stage`: a function of the seed alone, so a resumed run sees the same data.
fn batch(
    model: &Model,
    cfg: &TrainConfig,
    facts: &Facts,
    hay: &Haystack,
    stage: usize,
    step: u64,
) -> Result<Vec<TrainSample>> {
    let st = &cfg.stages[stage];
    (0..st.batch)
        .into_par_iter()
        .map(|b| {
            let mut rng = Rng::new(mix(cfg.seed, &[stage as u64, step, b as u64, 3]));
            let s = facts.draw(cfg.hard_questions, &mut rng);
            let n_seg = match st.short_share {
                Some(p) if rng.uniform() < p => 1,
                _ => 1 + rng.below(st.segments as u64) as usize,
            };
            // drawn only with a share set, so that runs without one keep their data
            let late = match st.late_share {
                Some(p) if rng.uniform() < p => st.k2.map(|k| (k.get(), st.late_facts.unwrap_or(LateFacts::All))),
                _ => None,
            };
            make_sample(model, s, n_seg, late, cfg.qa_margin, hay, rng.next_u64(), cfg.probes.as_ref())
        })
        .collect()
}

/// `model` with the GPT-2 weights of `donor` (see [`Start::Backbone`]).
fn with_backbone(mut model: Model, donor: &Model) -> Result<Model> {
    let (a, b) = (&model.config, &donor.config);
    let shape = |c: &crate::model::Config| (c.n_layer, c.n_head, c.n_embd, c.vocab_size, c.n_positions);
    if shape(a) != shape(b) {
        return Err(Error::Input(format!(
            "the backbone's GPT-2 shape (layers, heads, width, vocabulary, positions) is {:?}; the model's is {:?}",
            shape(b),
            shape(a)
        )));
    }
    let (w, d) = (&mut model.weights, &donor.weights);
    (w.wte, w.wpe, w.blocks, w.ln_f, w.lm_head) =
        (d.wte.clone(), d.wpe.clone(), d.blocks.clone(), d.ln_f.clone(), d.lm_head.clone());
    Ok(model)
}

/// Exact-match accuracy on the validation samples at `n_seg` segments: over all of them, and per task (the samples
/// take the tasks in turn, so each has its share).
pub fn validate(
    model: &Model,
    cfg: &TrainConfig,
    facts_valid: &[Vec<Sample>],
    hay: &Haystack,
    n_seg: usize,
) -> Result<(f64, Vec<f64>)> {
    let engine = Engine::cpu(model.clone());
    let tok = Tokenizer::gpt2();
    let samples: Vec<(TrainSample, String)> = (0..cfg.valid_samples)
        .map(|i| {
            let task = &facts_valid[i % facts_valid.len()];
            let s = &task[(i / facts_valid.len()) % task.len()];
            let sample = make_sample(model, s, n_seg, None, cfg.qa_margin, hay, mix(cfg.seed, &[i as u64, 4]), None)?;
            Ok((sample, s.answer.clone()))
        })
        .collect::<Result<_>>()?;
    let right: Vec<bool> = samples
        .par_iter()
        .map(|(s, target)| {
            let p = &s.prompt[..s.prompt.len() - 1]; // ask appends GEN itself
            let a = engine.session().ask(p, 10)?;
            Ok(tok.decode(&a.tokens)?.trim() == target)
        })
        .collect::<Result<_>>()?;
    Ok(accuracy_by_task(&right, facts_valid.len()))
}

/// The share right of all the answers, and of each task's when sample `i` is of task `i % n_tasks`.
fn accuracy_by_task(right: &[bool], n_tasks: usize) -> (f64, Vec<f64>) {
    let share = |hits: &mut dyn Iterator<Item = &bool>| {
        let (n, r) = hits.fold((0, 0), |(n, r), &h| (n + 1, r + h as usize));
        r as f64 / n.max(1) as f64
    };
    let by_task = (0..n_tasks).map(|t| share(&mut right.iter().skip(t).step_by(n_tasks))).collect();
    (share(&mut right.iter()), by_task)
}

/// One batch's losses (answer; look-back, when the heads are on; probes) and gradients (model; heads).
struct BatchGradient {
    loss: f64,
    look_back_loss: f64,
    probe_loss: f64,
    model: Weights,
    heads: Option<LookBack>,
}

/// Averages per-sample gradients weighted by their label counts: the loss is the mean over every answer token of
/// the batch (RMT-SPEC §1.6); the look-back and probe losses are the means over samples of each sample's. The batch
/// is cut into one contiguous run of samples per thread, each accumulating into its own buffers in order, and the
/// buffers are summed in order: the result depends on the thread count only, never on scheduling, so a resumed run
/// is bit-identical.
fn batch_gradient(
    model: &Model,
    heads: Option<(&LookBack, &LookBackConfig)>,
    samples: &[TrainSample],
    (dropout, k2): (Option<Dropout>, Option<usize>),
) -> Result<BatchGradient> {
    let total: usize = samples.iter().map(|s| s.answer.len() + 1).sum();
    let per_thread = samples.len().div_ceil(rayon::current_num_threads()).max(1);
    let parts: Vec<BatchGradient> = samples
        .par_chunks(per_thread)
        .enumerate()
        .map(|(c, chunk)| {
            let mut part = BatchGradient {
                loss: 0.0,
                look_back_loss: 0.0,
                probe_loss: 0.0,
                model: model.weights.zeros_like(),
                heads: heads.map(|(h, _)| h.zeros_like()),
            };
            let (mut loss, mut aux_loss, mut probe_loss) = (0.0f64, 0.0f64, 0.0f64);
            for (j, s) in chunk.iter().enumerate() {
                let i = c * per_thread + j;
                let d = dropout.map(|d| Dropout { p: d.p, seed: mix(d.seed, &[i as u64]) });
                let w = (s.answer.len() + 1) as f32 / total as f32;
                let share = 1.0 / samples.len() as f32;
                let aux = heads.zip(part.heads.as_mut()).map(|((heads, lb), grads)| LookBackStep {
                    heads,
                    weight: lb.weight,
                    lm_head: lb.lm_head,
                    share,
                    grads,
                });
                let l = accumulate(model, s, (d, k2), (w, share), &mut part.model, aux)?;
                loss += l.answer as f64 * w as f64;
                aux_loss += l.look_back as f64 * share as f64;
                probe_loss += l.probes as f64 * share as f64;
            }
            (part.loss, part.look_back_loss, part.probe_loss) = (loss, aux_loss, probe_loss);
            Ok(part)
        })
        .collect::<Result<_>>()?;
    let mut parts = parts.into_iter();
    let mut sum = parts.next().expect("a batch has samples");
    for mut p in parts {
        sum.loss += p.loss;
        sum.look_back_loss += p.look_back_loss;
        sum.probe_loss += p.probe_loss;
        let acc = sum.model.tensors_mut().into_iter().chain(head_tensors(&mut sum.heads));
        for (acc, x) in acc.zip(p.model.tensors_mut().into_iter().chain(head_tensors(&mut p.heads))) {
            acc.par_iter_mut().zip(x.par_iter()).for_each(|(a, b)| *a += b);
        }
    }
    Ok(sum)
}

/// The look-back heads of a run and their optimizer moments.
type Heads = (LookBack, AdamState<LookBack>);

/// The heads' tensors, if any.
fn head_tensors(h: &mut Option<LookBack>) -> Vec<&mut Vec<f32>> {
    h.as_mut().map_or(Vec::new(), |h| h.tensors_mut())
}

/// A checkpoint: weights, optimizer moments, progress, and the look-back heads with their moments.
fn save_checkpoint(
    path: &Path,
    model: &Model,
    adam: &AdamState,
    heads: Option<&Heads>,
    progress: &Progress,
) -> Result<()> {
    let mut tensors = model.weights.named(&model.config);
    let (m, v) = (adam.m.named(&model.config), adam.v.named(&model.config));
    tensors.extend(m.into_iter().map(|(n, s, x)| (format!("adam.m.{n}"), s, x)));
    tensors.extend(v.into_iter().map(|(n, s, x)| (format!("adam.v.{n}"), s, x)));
    if let Some((h, a)) = heads {
        tensors.extend(h.named());
        tensors.extend(a.m.named().into_iter().map(|(n, s, x)| (format!("adam.m.{n}"), s, x)));
        tensors.extend(a.v.named().into_iter().map(|(n, s, x)| (format!("adam.v.{n}"), s, x)));
    }
    let meta = serde_json::json!({"model": model.config, "progress": progress, "adam_t": adam.t});
    let bytes =
        serialize_tensors(&tensors, FileDtype::F32, HashMap::from([("rmt-fast-train".to_string(), meta.to_string())]))?;
    write_atomically(path, &bytes)
}

/// Loads a checkpoint; `heads` (the run's look-back config) says whether it must hold look-back heads, and how
/// many.
fn load_checkpoint(path: &Path, heads: Option<&LookBackConfig>) -> Result<(Model, AdamState, Option<Heads>, Progress)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |m: String| Error::Input(format!("{}: not a training checkpoint: {m}", path.display()));
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let meta: serde_json::Value = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("rmt-fast-train"))
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| bad("no rmt-fast-train metadata".into()))?;
    let config: Config = serde_json::from_value(meta["model"].clone()).map_err(|e| bad(e.to_string()))?;
    let progress: Progress = serde_json::from_value(meta["progress"].clone()).map_err(|e| bad(e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let read = |name: String, t: &mut Vec<f32>| -> Result<()> {
        let view = st.tensor(&name).map_err(|_| bad(format!("tensor {name} missing")))?;
        let vals: Vec<f32> = view.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        if vals.len() != t.len() {
            return Err(bad(format!("tensor {name} has {} values, expected {}", vals.len(), t.len())));
        }
        *t = vals;
        Ok(())
    };
    let mut model = Model::random(config, 0)?;
    let mut adam = AdamState::new(&model.weights);
    adam.t = meta["adam_t"].as_u64().unwrap_or(0);
    let names: Vec<String> = model.weights.named(&model.config).into_iter().map(|(n, _, _)| n).collect();
    for (prefix, w) in [("", &mut model.weights), ("adam.m.", &mut adam.m), ("adam.v.", &mut adam.v)] {
        for (t, n) in w.tensors_mut().into_iter().zip(&names) {
            read(format!("{prefix}{n}"), t)?;
        }
    }
    let saved_heads = st.names().iter().filter(|n| n.starts_with("look_back.") && n.ends_with(".weight")).count();
    if saved_heads != heads.map_or(0, |h| h.heads) {
        return Err(Error::Input(format!(
            "{}: the checkpoint has {saved_heads} look-back heads, the config {}: resume with the config the run \
             started with",
            path.display(),
            heads.map_or(0, |h| h.heads)
        )));
    }
    let heads = match heads {
        None => None,
        Some(_) => {
            let mut h = LookBack::new(saved_heads, model.config.n_embd, 0);
            let mut a = AdamState::new(&h);
            a.t = adam.t;
            let names: Vec<String> = h.named().into_iter().map(|(n, _, _)| n).collect();
            for (prefix, w) in [("", &mut h), ("adam.m.", &mut a.m), ("adam.v.", &mut a.v)] {
                for (t, n) in w.tensors_mut().into_iter().zip(&names) {
                    read(format!("{prefix}{n}"), t)?;
                }
            }
            Some((h, a))
        }
    };
    Ok((model, adam, heads, progress))
}

/// Keeps the log lines up to the checkpoint a run resumes from (a killed run may have logged steps past it).
fn truncate_log(path: &Path, at: &Progress) -> Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<StepLog>(l)
                .is_ok_and(|e| e.stage < at.stage || (e.stage == at.stage && e.step <= at.step))
        })
        .collect();
    let body = kept.iter().map(|l| format!("{l}\n")).collect::<String>();
    std::fs::write(path, body).map_err(|e| Error::io(path, e))
}

/// Holds `out/.lock` for the run: a second run into the same directory (a resume started while the first is still
/// writing its last checkpoint) would interleave their checkpoints and logs. A lock found held is tried again for
/// a second before giving up: a process that spawns a child while a run ends (a test harness, an embedding program)
/// lends the child the run's lock until the child's exec closes it, so a run that follows at once can find it held.
fn lock_output(out: &Path) -> Result<std::fs::File> {
    let path = out.join(".lock");
    let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
    for _ in 0..20 {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => std::thread::sleep(std::time::Duration::from_millis(50)),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
    }
    Err(Error::Input(format!(
        "another training run is writing to {}; wait for it to stop (it saves a checkpoint on Ctrl-C)",
        out.display()
    )))
}

/// Runs (or resumes) training into `out`: `checkpoint.safetensors`, `model_best.safetensors` and `log.jsonl`.
/// `on_step` sees every logged step and returns whether to go on; when it says stop, a checkpoint is written and
/// the run returns (resume continues it exactly). Returns the last stage's best validation accuracy.
pub fn train(cfg: &TrainConfig, out: &Path, resume: bool, mut on_step: impl FnMut(&StepLog) -> bool) -> Result<f64> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let _lock = lock_output(out)?;
    if let Some(p) = &cfg.probes {
        p.check(&cfg.tasks)?;
    }
    for (i, st) in cfg.stages.iter().enumerate() {
        st.check().map_err(|m| Error::Input(format!("stage {}: {m}", i + 1)))?;
    }
    let facts = Facts::load(cfg)?;
    let hay = if cfg.haystack.is_empty() { Haystack::Synthetic } else { Haystack::books(&cfg.haystack)? };
    let valid_hay =
        if cfg.valid_haystack.is_empty() { Haystack::Synthetic } else { Haystack::books(&cfg.valid_haystack)? };
    let (ckpt, best_path, log_path) =
        (out.join("checkpoint.safetensors"), out.join("model_best.safetensors"), out.join("log.jsonl"));
    let (mut model, mut adam, mut heads, mut progress) = if resume {
        let c = load_checkpoint(&ckpt, cfg.look_back.as_ref())?;
        truncate_log(&log_path, &c.3)?;
        c
    } else {
        let mut model = match &cfg.model {
            Start::Init(c) => Model::random(c.clone(), cfg.seed)?,
            Start::From(p) => Model::load(p)?,
            Start::Backbone { init, from } => {
                with_backbone(Model::random(init.clone(), cfg.seed)?, &Model::load(from)?)?
            }
            Start::Resize { from, segment_size } => Model::load(from)?.with_segment_size(*segment_size)?,
        };
        if let Some(write) = cfg.write {
            if model.config.memory.kind != MemoryKind::Armt {
                return Err(Error::Config(
                    "`write` sets an ARMT's write rule; the model to train is not an ARMT".into(),
                ));
            }
            model.config.memory.write = write;
        }
        if let Some(decay) = cfg.decay {
            model.config.memory.decay = Some(decay);
            model.config.validate()?;
        }
        // samples carry bAbI's questions as written ("Where is Mary? "): plain-text questions get the same form
        model.config.question_template = Some(QUESTION_TEMPLATE.into());
        // the parent's training length does not carry over: a run on shorter samples retrains the memory for them
        // (qa5's first model, from a parent trained to 4,096 segments, broke at 1,000 after stages of 256)
        model.config.trained_segments = None;
        let adam = AdamState::new(&model.weights);
        let heads = cfg.look_back.as_ref().map(|lb| {
            let h = LookBack::new(lb.heads, model.config.n_embd, cfg.seed);
            let a = AdamState::new(&h);
            (h, a)
        });
        std::fs::write(&log_path, "").map_err(|e| Error::io(&log_path, e))?;
        (model, adam, heads, Progress { stage: 0, step: 0, best_accuracy: -1.0 })
    };
    if progress.stage >= cfg.stages.len() {
        return Err(Error::Input(format!("the run in {} has finished all {} stages", out.display(), cfg.stages.len())));
    }
    let mut final_best = progress.best_accuracy;
    let mut log =
        std::fs::OpenOptions::new().append(true).create(true).open(&log_path).map_err(|e| Error::io(&log_path, e))?;
    while progress.stage < cfg.stages.len() {
        let st = cfg.stages[progress.stage].clone();
        // what `infer` warns past: the longest samples of this run so far (a resumed run kept it in its checkpoint)
        let longest = model.config.trained_segments.unwrap_or(0).max(st.segments as u64);
        model.config.trained_segments = Some(longest);
        let end = st.run_steps();
        while progress.step < end {
            let samples = batch(&model, cfg, &facts, &hay, progress.stage, progress.step)?;
            let dropout = (cfg.dropout > 0.0)
                .then(|| Dropout { p: cfg.dropout, seed: mix(cfg.seed, &[progress.stage as u64, progress.step, 5]) });
            let look_back = heads.as_ref().zip(cfg.look_back.as_ref()).map(|((h, _), lb)| (h, lb));
            let mut g = batch_gradient(&model, look_back, &samples, (dropout, st.k2.map(|k| k.get())))?;
            let grads = g.model.tensors_mut().into_iter().chain(head_tensors(&mut g.heads)).collect();
            let grad_norm = clip_grad_norm(grads, cfg.clip);
            let lr = learning_rate(progress.step, st.lr, st.warmup, 2 * st.steps);
            cfg.optimizer.step(&model.config, &mut model.weights, &mut g.model, &mut adam, lr);
            if let (Some((h, a)), Some(gh)) = (heads.as_mut(), g.heads.as_mut()) {
                cfg.optimizer.step(&model.config, h, gh, a, lr);
            }
            progress.step += 1;
            let mut entry = StepLog {
                stage: progress.stage,
                step: progress.step,
                loss: g.loss as f32,
                grad_norm,
                lr,
                look_back_loss: heads.as_ref().map(|_| g.look_back_loss as f32),
                probe_loss: cfg.probes.as_ref().map(|_| g.probe_loss as f32),
                valid_accuracy: None,
                valid_by_task: None,
            };
            if progress.step % cfg.valid_every == 0 || progress.step == end {
                let (acc, by_task) = validate(&model, cfg, &facts.valid, &valid_hay, st.segments)?;
                entry.valid_accuracy = Some(acc);
                if by_task.len() > 1 {
                    entry.valid_by_task = Some(cfg.tasks.iter().cloned().zip(by_task).collect());
                }
                if acc > progress.best_accuracy {
                    progress.best_accuracy = acc;
                    model.save(&best_path, FileDtype::F32)?;
                }
            }
            use std::io::Write;
            writeln!(log, "{}", serde_json::to_string(&entry).expect("serialises"))
                .map_err(|e| Error::io(&log_path, e))?;
            let go_on = on_step(&entry);
            if !go_on || progress.step % cfg.checkpoint_every == 0 || progress.step == end {
                save_checkpoint(&ckpt, &model, &adam, heads.as_ref(), &progress)?;
            }
            if !go_on {
                return Ok(progress.best_accuracy);
            }
        }
        final_best = progress.best_accuracy;
        // the next stage starts from this stage's best model, with a fresh optimizer (as the authors' curriculum)
        progress = Progress { stage: progress.stage + 1, step: 0, best_accuracy: -1.0 };
        if best_path.exists() {
            model = Model::load(&best_path)?;
        }
        adam = AdamState::new(&model.weights);
        // the heads go on as they are (model_best does not keep them), with fresh moments as well
        if let Some((h, a)) = heads.as_mut() {
            *a = AdamState::new(h);
        }
        save_checkpoint(&ckpt, &model, &adam, heads.as_ref(), &progress)?;
    }
    Ok(final_best)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two-segment samples end anywhere in their second segment: the shortest and the longest quarter are both hit,
    /// and none is longer than two segments.
    /// Validation samples take the tasks in turn: the per-task shares count each task's samples only.
    #[test]
    fn validation_accuracy_splits_by_task() {
        let right = [true, false, true, true, false, false, true];
        let (all, by_task) = accuracy_by_task(&right, 3);
        assert_eq!(all, 4.0 / 7.0);
        assert_eq!(by_task, [1.0, 0.0, 0.5]); // samples 0, 3, 6; 1, 4; 2, 5
        assert_eq!(accuracy_by_task(&[], 2), (0.0, vec![0.0, 0.0]));
    }

    /// The backbone's GPT-2 weights replace the random ones; the memory parameters stay as initialised.
    #[test]
    fn a_backbone_gives_its_gpt2_weights_only() {
        let rmt = Config::from_json(
            r#"{"n_layer": 1, "n_head": 2, "n_embd": 8, "vocab_size": 32, "n_positions": 24, "eos_token_id": 31,
                "gen_token_id": 30, "memory": {"kind": "rmt", "num_mem_tokens": 2, "segment_size": 8}}"#,
        )
        .unwrap();
        let mut armt = rmt.clone();
        (armt.memory.kind, armt.memory.d_mem) = (crate::MemoryKind::Armt, Some(2));
        let (donor, fresh) = (Model::random(rmt, 1).unwrap(), Model::random(armt, 2).unwrap());
        let m = with_backbone(fresh.clone(), &donor).unwrap();
        assert_eq!((&m.weights.wte, &m.weights.wpe), (&donor.weights.wte, &donor.weights.wpe));
        assert_eq!(m.weights.blocks[0].c_attn.w, donor.weights.blocks[0].c_attn.w);
        assert_eq!((&m.weights.ln_f.w, &m.weights.memory), (&donor.weights.ln_f.w, &fresh.weights.memory));
        assert_eq!(m.weights.associative[0].w_mq.w, fresh.weights.associative[0].w_mq.w);
    }

    /// A one-layer RMT with segments of 64 tokens, for sample making.
    fn tiny_rmt() -> Model {
        let cfg = Config::from_json(
            r#"{"n_layer": 1, "n_head": 1, "n_embd": 8, "vocab_size": 50257, "n_positions": 80,
                "memory": {"kind": "rmt", "num_mem_tokens": 2, "segment_size": 64}}"#,
        )
        .unwrap();
        Model::random(cfg, 0).unwrap()
    }

    #[test]
    fn samples_end_anywhere_in_their_last_segment() {
        let model = tiny_rmt();
        let facts = generate(1, 50, &mut Rng::new(1)).unwrap();
        let lengths: Vec<usize> = (0..200)
            .map(|i| {
                let s = make_sample(&model, &facts[i % 50], 2, None, 16, &Haystack::Synthetic, i as u64, None).unwrap();
                s.prompt.len()
            })
            .collect();
        assert!(lengths.iter().all(|&l| l <= 128), "{lengths:?}");
        assert!(lengths.iter().any(|&l| l < 64 + 24), "no short sample: {lengths:?}");
        assert!(lengths.iter().any(|&l| l > 128 - 24), "no long sample: {lengths:?}");
    }

    /// In a mixed run, probes ask the memory in the samples of their tasks (one per segment but the last, for each
    /// person or object placed by then) and leave the others without: by default qa1's alone.
    #[test]
    fn probes_ask_only_the_samples_of_their_tasks() {
        let model = tiny_rmt();
        let probed = |probes: &ProbeConfig, task: usize| {
            let facts = generate(task, 20, &mut Rng::new(1)).unwrap();
            let sample =
                |i: usize| make_sample(&model, &facts[i], 4, None, 16, &Haystack::Synthetic, i as u64, Some(probes));
            (0..20).filter(|&i| !sample(i).unwrap().probes.is_empty()).count()
        };
        let qa1: ProbeConfig = serde_json::from_str(r#"{"weight": 1.0, "every_person": true}"#).unwrap();
        assert_eq!((probed(&qa1, 1) > 10, probed(&qa1, 2), probed(&qa1, 4)), (true, 0, 0));
        let qa1_qa2 = ProbeConfig { tasks: vec!["qa1".into(), "qa2".into()], ..qa1 };
        assert_eq!((probed(&qa1_qa2, 1) > 10, probed(&qa1_qa2, 2) > 10, probed(&qa1_qa2, 4)), (true, true, 0));
    }

    fn qa1_config(extra: &str) -> TrainConfig {
        serde_json::from_str(&format!(
            r#"{{"model": {{"from": "unused.safetensors"}}, "tasks": ["qa1"], {extra}
                "stages": [{{"segments": 1, "steps": 1, "batch": 1, "lr": 1e-3, "warmup": 0}}],
                "valid_every": 1, "valid_samples": 1}}"#
        ))
        .unwrap()
    }

    /// `hard_questions` draws that fraction of samples among the questions not about the latest mover: absent, the
    /// data's own share is about the latest mover (about half); at 1, none; at 0.5, half the data's share.
    #[test]
    fn hard_questions_are_drawn_at_their_fraction() {
        let latest_share = |extra: &str| {
            let cfg = qa1_config(extra);
            let facts = Facts::load(&cfg).unwrap();
            let mut rng = Rng::new(9);
            let n = 2000;
            let latest = (0..n).filter(|_| asks_the_latest_mover(facts.draw(cfg.hard_questions, &mut rng)).unwrap());
            latest.count() as f64 / n as f64
        };
        let natural = latest_share("");
        assert!((0.35..0.65).contains(&natural), "{natural}");
        assert_eq!(latest_share(r#""hard_questions": 1.0,"#), 0.0);
        let half = latest_share(r#""hard_questions": 0.5,"#);
        assert!((half - natural / 2.0).abs() < 0.05, "{half} against {natural} / 2");
        let bad = |extra: &str| Facts::load(&qa1_config(extra)).err().unwrap().to_string();
        assert!(bad(r#""hard_questions": 1.5,"#).contains("fraction"));
        let mut qa2 = qa1_config(r#""hard_questions": 0.5,"#);
        qa2.tasks.push("qa2".into());
        assert!(Facts::load(&qa2).err().unwrap().to_string().contains("hard questions are defined for qa1"));
    }

    /// A one-layer RMT of 256-token segments: long enough for every qa1 story, so that a one-segment sample never
    /// falls back past its segment.
    fn rmt_of_long_segments() -> Model {
        let cfg = Config::from_json(
            r#"{"n_layer": 1, "n_head": 1, "n_embd": 8, "vocab_size": 50257, "n_positions": 260,
                "memory": {"kind": "rmt", "num_mem_tokens": 2, "segment_size": 256}}"#,
        );
        Model::random(cfg.unwrap(), 0).unwrap()
    }

    /// The samples of the first `steps` steps of a qa1 stage of 8 segments, with `extra` fields, of the built-in
    /// generator's stories.
    fn stage_samples(model: &Model, batch_size: usize, steps: u64, extra: &str) -> Vec<TrainSample> {
        stage_samples_of(qa1_config(""), model, batch_size, steps, extra)
    }

    /// [`stage_samples`] of `cfg`'s stories.
    fn stage_samples_of(
        mut cfg: TrainConfig,
        model: &Model,
        batch_size: usize,
        steps: u64,
        extra: &str,
    ) -> Vec<TrainSample> {
        cfg.stages[0] = serde_json::from_str(&format!(
            r#"{{"segments": 8, "steps": 1, "batch": {batch_size}, "lr": 1e-3, "warmup": 0 {extra}}}"#
        ))
        .unwrap();
        let facts = Facts::load(&cfg).unwrap();
        (0..steps).flat_map(|step| batch(model, &cfg, &facts, &Haystack::Synthetic, 0, step).unwrap()).collect()
    }

    /// `short_share` makes that share of a stage's samples one segment long, on top of the uniform draw's 1 in
    /// `segments`; out of 0 … 1 it is refused, as is a stage of 0 segments.
    #[test]
    fn short_share_draws_one_segment_samples_at_its_share() {
        let model = rmt_of_long_segments();
        let one_segment_share = |share: &str| {
            let samples = stage_samples(&model, 100, 10, share);
            samples.iter().filter(|s| s.prompt.len() <= 256).count() as f64 / samples.len() as f64
        };
        let uniform = one_segment_share("");
        assert!((0.08..0.17).contains(&uniform), "{uniform}");
        let half = one_segment_share(r#", "short_share": 0.5"#);
        assert!((half - (0.5 + 0.5 / 8.0)).abs() < 0.05, "{half}");
        let stage = |p: f64| Stage { short_share: Some(p), ..qa1_config("").stages[0].clone() };
        assert!(stage(1.5).check().unwrap_err().contains("fraction"));
        assert!(stage(1.0).check().is_ok());
        let empty = Stage { segments: 0, ..stage(0.5) };
        assert!(empty.check().unwrap_err().contains("at least one segment"));
    }

    /// `late_share` puts all of a sample's facts in its last `k2` segments, the segments before background alone;
    /// without it, facts spread over the whole sample. Out of 0 … 1, or without `k2`, it is refused.
    #[test]
    fn late_share_puts_the_facts_in_the_backpropagated_segments() {
        let model = rmt_of_long_segments();
        let tok = Tokenizer::gpt2();
        // of the samples over three segments long, the share with a fact before their last two
        let early_facts = |share: &str| {
            let samples = stage_samples(&model, 50, 4, &format!(r#", "k2": 2 {share}"#));
            let long: Vec<&TrainSample> = samples.iter().filter(|s| s.prompt.len() > 3 * 256).collect();
            assert!(long.len() > 50, "{}", long.len());
            let early = long.iter().filter(|s| {
                let before = tok.decode(&s.prompt[..(s.prompt.len().div_ceil(256) - 2) * 256]).unwrap();
                // qa1's people, whom the synthetic background never names
                ["Mary", "John", "Sandra", "Daniel"].iter().any(|p| before.contains(p))
            });
            early.count() as f64 / long.len() as f64
        };
        assert!(early_facts("") > 0.8, "{}", early_facts(""));
        assert_eq!(early_facts(r#", "late_share": 1.0"#), 0.0);
        let stage = |p: f64, k2: usize| Stage {
            late_share: Some(p),
            k2: std::num::NonZeroUsize::new(k2),
            ..qa1_config("").stages[0].clone()
        };
        assert!(stage(0.5, 2).check().is_ok());
        assert!(stage(-0.1, 2).check().unwrap_err().contains("late_share is a fraction"));
        assert!(stage(0.5, 0).check().unwrap_err().contains("needs a `k2`"));
    }

    /// With `late_facts` "from_support", a late sample's facts before its last supporting one spread over the
    /// segments before the window, and the answer's fact is in the window: for qa1, the asked person's last move is
    /// the last sentence naming them. So for the real files and the built-in generators alike (both name the
    /// supporting facts). Without a `late_share`, `late_facts` is refused.
    #[test]
    fn late_facts_from_support_writes_the_answer_into_a_memory_that_holds_the_earlier_facts() {
        let model = rmt_of_long_segments();
        let tok = Tokenizer::gpt2();
        let babi = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/babi/tasks_1-20_v1-2/en-10k");
        let late = r#", "k2": 2, "late_share": 1.0, "late_facts": "from_support""#;
        for source in [format!(r#""babi": "{babi}","#), String::new()] {
            let samples = stage_samples_of(qa1_config(&source), &model, 50, 4, late);
            let long: Vec<&TrainSample> = samples.iter().filter(|s| s.prompt.len() > 3 * 256).collect();
            assert!(long.len() > 50, "{source}: {}", long.len());
            let (mut early, mut answered_late) = (0, 0);
            for s in &long {
                let split = (s.prompt.len().div_ceil(256) - 2) * 256;
                let (before, window) =
                    (tok.decode(&s.prompt[..split]).unwrap(), tok.decode(&s.prompt[split..]).unwrap());
                early += ["Mary", "John", "Sandra", "Daniel"].iter().any(|p| before.contains(p)) as usize;
                let (story, question) = window.rsplit_once("Where is ").unwrap();
                let who = question.split('?').next().unwrap();
                let last_move = story.split('.').rfind(|f| f.contains(who)).unwrap_or("");
                answered_late += last_move.trim_end().ends_with(tok.decode(&s.answer).unwrap().as_str()) as usize;
            }
            assert_eq!(answered_late, long.len(), "{source}");
            // the stories whose answer is their first fact have nothing to put early
            assert!(early as f64 > 0.5 * long.len() as f64, "{source}: {early} of {}", long.len());
        }
        let stage = Stage { late_facts: Some(LateFacts::FromSupport), ..qa1_config("").stages[0].clone() };
        assert!(stage.check().unwrap_err().contains("needs a `late_share`"));
    }
}
