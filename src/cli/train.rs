//! `rmt-fast train`: curriculum training from a JSON config, with progress, validation and exact resume.

use std::path::Path;
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
    let total: u64 = cfg.stages.iter().map(|s| s.steps).sum();
    let quiet = !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let pb = super::progress(total, "steps", quiet);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing the signal handler")?;
    }
    let t0 = std::time::Instant::now();
    let (mut done, mut samples, mut last_acc) = (0u64, 0usize, None);
    let best = train(&cfg, out, resume, |e| {
        done += 1;
        samples += cfg.stages[e.stage].batch;
        last_acc = e.valid_accuracy.or(last_acc);
        pb.inc(1);
        pb.set_message(format!("stage {} loss {:.4}", e.stage + 1, e.loss));
        let line = format!(
            "stage {} step {} loss {:.4} grad-norm {:.3} lr {:.2e}{} {:.1} samples/s",
            e.stage + 1,
            e.step,
            e.loss,
            e.grad_norm,
            e.lr,
            last_acc.map_or(String::new(), |a| format!(" valid {:.1} %", 100.0 * a)),
            samples as f64 / t0.elapsed().as_secs_f64()
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

/// `rmt-fast train-curve`: validation accuracy against steps from a run's `log.jsonl`, as SVG. With the run's
/// config the stages are labelled by their segment counts.
pub fn curve(log: &Path, config: Option<&Path>, output: &Path, title: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    // (first global step, steps) of each stage seen, and the validation points on the global step axis
    let (mut points, mut stages) = (Vec::new(), Vec::<(u64, u64)>::new());
    for (i, line) in text.lines().enumerate() {
        let e: StepLog = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a training log entry", log.display(), i + 1))?;
        while stages.len() <= e.stage {
            let start = stages.last().map_or(0, |(s, n)| s + n);
            stages.push((start, 0));
        }
        stages[e.stage].1 = e.step;
        if let Some(a) = e.valid_accuracy {
            points.push((stages[e.stage].0 + e.step, a));
        }
    }
    anyhow::ensure!(!points.is_empty(), "{}: no validation entries", log.display());
    let labels: Vec<String> = match config {
        Some(c) => {
            let cfg: TrainConfig = serde_json::from_str(&std::fs::read_to_string(c)?)
                .with_context(|| format!("{}: not a training config", c.display()))?;
            cfg.stages.iter().map(|s| format!("≤{} seg", s.segments)).collect()
        }
        None => (1..=stages.len()).map(|k| format!("stage {k}")).collect(),
    };
    let marks: Vec<(u64, String)> = stages.iter().zip(labels).map(|((start, _), l)| (*start, l)).collect();
    let svg = rmt_fast::babilong::plot::training_curve(&points, &marks, title);
    std::fs::write(output, svg).with_context(|| format!("writing {}", output.display()))?;
    eprintln!("wrote {}", output.display());
    Ok(())
}
