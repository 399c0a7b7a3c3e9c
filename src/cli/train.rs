//! `rmt-fast train`: curriculum training from a JSON config, with progress, validation and exact resume.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use rmt_fast::train::trainer::{train, StepLog, TrainConfig};

pub fn run(config: &Path, out: &Path, resume: bool, threads: Option<usize>) -> anyhow::Result<u8> {
    super::set_threads(threads)?;
    let text = std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let cfg: TrainConfig =
        serde_json::from_str(&text).with_context(|| format!("{}: not a training config", config.display()))?;
    anyhow::ensure!(!cfg.stages.is_empty(), "{}: give at least one stage", config.display());
    anyhow::ensure!(
        cfg.valid_every > 0 && cfg.checkpoint_every > 0,
        "valid_every and checkpoint_every must be at least 1"
    );
    let total: u64 = cfg.stages.iter().map(|s| s.run_steps()).sum();
    let quiet = !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let pb = super::progress(total, "steps", quiet);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing the signal handler")?;
    }
    let t0 = std::time::Instant::now();
    // samples/s is the current stage's: its samples cost what its segments cost (a 16-segment sample ≈ 8 of 2)
    let (mut done, mut last_acc, mut last_by_task) = (0u64, None, String::new());
    let (mut stage, mut stage_t0, mut samples, mut step_t0) = (usize::MAX, t0, 0usize, t0);
    let best = train(&cfg, out, resume, |e| {
        done += 1;
        if e.stage != stage {
            (stage, stage_t0, samples) = (e.stage, step_t0, 0); // the stage began with this step
        }
        step_t0 = std::time::Instant::now();
        samples += cfg.stages[e.stage].batch;
        last_acc = e.valid_accuracy.or(last_acc);
        if let Some(by_task) = &e.valid_by_task {
            let each: Vec<String> = by_task.iter().map(|(t, a)| format!("{t} {:.1}", 100.0 * a)).collect();
            last_by_task = format!(" ({})", each.join(", "));
        }
        pb.inc(1);
        pb.set_message(format!("stage {} loss {:.4}", e.stage + 1, e.loss));
        let line = format!(
            "stage {} step {} loss {:.4} grad-norm {:.3} lr {:.2e}{} {:.1} samples/s",
            e.stage + 1,
            e.step,
            e.loss,
            e.grad_norm,
            e.lr,
            last_acc.map_or(String::new(), |a| format!(" valid {:.1} %{last_by_task}", 100.0 * a)),
            samples as f64 / stage_t0.elapsed().as_secs_f64()
        );
        if quiet {
            eprintln!("{line}");
        } else {
            pb.println(line);
        }
        !stop.load(Ordering::Relaxed)
    })?;
    pb.finish_and_clear();
    if stop.load(Ordering::Relaxed) {
        eprintln!("interrupted: checkpoint saved in {}; continue with --resume", out.display());
        return Ok(super::infer::INTERRUPTED);
    }
    eprintln!(
        "done: {done} steps in {:.1} s; best validation accuracy of the last stage {:.1} %; model {}",
        t0.elapsed().as_secs_f64(),
        100.0 * best,
        out.join("model_best.safetensors").display()
    );
    Ok(0)
}

/// `rmt-fast train-curve`: validation accuracy against steps from runs' `log.jsonl`, as SVG. Several logs are runs
/// chained in order (each starting from the one before, as a recipe of several runs): their stages continue on one
/// step axis. With the runs' configs (one per log) the stages are labelled by their segment counts.
pub fn curve(logs: &[PathBuf], configs: &[PathBuf], output: &Path, title: &str) -> anyhow::Result<()> {
    anyhow::ensure!(!logs.is_empty(), "give at least one log");
    anyhow::ensure!(
        configs.is_empty() || configs.len() == logs.len(),
        "give one --config per log ({} logs, {} configs)",
        logs.len(),
        configs.len()
    );
    // (first global step, steps, label) of each stage seen, and the validation points on the global step axis
    let (mut points, mut stages) = (Vec::new(), Vec::<(u64, u64, String)>::new());
    let mut by_task = std::collections::BTreeMap::<String, Vec<(u64, f64)>>::new();
    for (r, log) in logs.iter().enumerate() {
        let segments: Option<Vec<usize>> = match configs.get(r) {
            Some(c) => {
                let cfg: TrainConfig = serde_json::from_str(&std::fs::read_to_string(c)?)
                    .with_context(|| format!("{}: not a training config", c.display()))?;
                Some(cfg.stages.iter().map(|s| s.segments).collect())
            }
            None => None,
        };
        let text = std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
        let first = stages.len();
        for (i, line) in text.lines().enumerate() {
            let e: StepLog = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not a training log entry", log.display(), i + 1))?;
            while stages.len() <= first + e.stage {
                let start = stages.last().map_or(0, |(s, n, _)| s + n);
                let label = match &segments {
                    Some(seg) => format!(
                        "≤{} seg",
                        seg.get(stages.len() - first).with_context(|| {
                            format!("{}: stage {} is not in its config", log.display(), e.stage + 1)
                        })?
                    ),
                    None => format!("stage {}", stages.len() + 1),
                };
                stages.push((start, 0, label));
            }
            stages[first + e.stage].1 = e.step;
            let at = stages[first + e.stage].0 + e.step;
            if let Some(a) = e.valid_accuracy {
                points.push((at, a));
            }
            for (task, a) in e.valid_by_task.iter().flatten() {
                by_task.entry(task.clone()).or_default().push((at, *a));
            }
        }
    }
    anyhow::ensure!(!points.is_empty(), "no validation entries in {}", logs[0].display());
    let marks: Vec<(u64, String)> = stages.into_iter().map(|(start, _, l)| (start, l)).collect();
    // a mixed run's tasks, each on its own line, under the total (logs before per-task validation have none)
    let name = if by_task.is_empty() { "validation" } else { "all tasks" };
    let series: Vec<(String, Vec<(u64, f64)>)> = std::iter::once((name.to_string(), points)).chain(by_task).collect();
    let svg = rmt_fast::babilong::plot::training_curve(&series, &marks, title);
    std::fs::write(output, svg).with_context(|| format!("writing {}", output.display()))?;
    eprintln!("wrote {}", output.display());
    Ok(())
}
