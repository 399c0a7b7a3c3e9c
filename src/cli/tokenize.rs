//! `rmt-fast tokenize` / `detokenize`: text ↔ token files with GPT-2's BPE.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use rmt_fast::stream::tokenizer::Tokenizer;
use rmt_fast::stream::tokens::{TokenDtype, TokenFile, TokenWriter};

pub fn tokenize(input: &Path, output: &Path, dtype: TokenDtype, quiet: bool) -> anyhow::Result<()> {
    let size = std::fs::metadata(input).with_context(|| format!("reading {}", input.display()))?.len();
    let pb = super::progress(size, "bytes", quiet);
    let mut out = TokenWriter::create(output, dtype)?;
    let t0 = std::time::Instant::now();
    Tokenizer::gpt2().encode_file(input, &mut out, |read| pb.set_position(read))?;
    let n = out.finish()?;
    pb.finish_and_clear();
    let s = t0.elapsed().as_secs_f64();
    eprintln!(
        "{}: {n} tokens from {} in {s:.1} s ({:.1} MB/s)",
        output.display(),
        super::human_bytes(size),
        size as f64 / s.max(1e-9) / 1e6
    );
    Ok(())
}

pub fn detokenize(input: &Path, dtype: Option<TokenDtype>, start: usize, count: Option<usize>) -> anyhow::Result<()> {
    let file = TokenFile::open(input, dtype)?;
    let end = count.map_or(file.len(), |c| start.saturating_add(c));
    anyhow::ensure!(
        start <= end && end <= file.len(),
        "tokens {start}..{end} are outside the file's {} tokens",
        file.len()
    );
    let tok = Tokenizer::gpt2();
    let mut stdout = std::io::stdout().lock();
    let mut buf = Vec::new();
    // raw bytes in blocks: exact even where a character spans two blocks
    for at in (start..end).step_by(1 << 16) {
        buf.clear();
        file.read_into(at..(at + (1 << 16)).min(end), &mut buf);
        let bytes = tok.decode_bytes(&buf).with_context(|| format!("{} at token {at}", input.display()))?;
        if let Err(e) = stdout.write_all(&bytes) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e.into());
        }
    }
    Ok(())
}
