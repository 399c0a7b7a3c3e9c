//! Token files (ENGINEERING.md §3.2): llm.c's format (256 little-endian i32 of header — magic 20240520,
//! version 1 = u16 tokens / 2 = u32, token count — then the tokens) and raw little-endian `.u16` / `.u32`
//! arrays. Files are memory-mapped, never read whole, and every problem is an error naming the file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Error, Result};

/// llm.c's header magic.
pub const MAGIC: i32 = 20240520;
const HEADER_BYTES: usize = 256 * 4;

/// Width of stored tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenDtype {
    /// 16-bit tokens (llm.c version 1, `.u16`): vocabularies up to 65536.
    U16,
    /// 32-bit tokens (llm.c version 2, `.u32`).
    U32,
}

impl TokenDtype {
    fn width(self) -> usize {
        match self {
            TokenDtype::U16 => 2,
            TokenDtype::U32 => 4,
        }
    }
}

impl std::str::FromStr for TokenDtype {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "u16" => Ok(TokenDtype::U16),
            "u32" => Ok(TokenDtype::U32),
            _ => Err(format!("unknown token dtype `{s}` (u16 or u32)")),
        }
    }
}

/// How a token file stores its tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenFormat {
    /// llm.c header + tokens.
    LlmC(TokenDtype),
    /// A raw little-endian array.
    Raw(TokenDtype),
}

/// A memory-mapped token file.
pub struct TokenFile {
    path: PathBuf,
    map: Mmap,
    format: TokenFormat,
    start: usize,
    len: usize,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("len", &self.len)
            .finish()
    }
}

fn bad(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Input(format!("{}: {msg}", path.display()))
}

impl TokenFile {
    /// Opens and checks the layout of a token file. `dtype` reads a header-less file as a raw array of that
    /// width; without it, raw files are recognised by their `.u16` / `.u32` extension.
    pub fn open(path: impl AsRef<Path>, dtype: Option<TokenDtype>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; a file truncated by another process while mapped is outside what any
        // reader can defend against (the same holds for every mmap-based reader).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        if map.is_empty() {
            return Err(bad(path, "empty token file"));
        }
        let header = |i: usize| i32::from_le_bytes(map[4 * i..4 * i + 4].try_into().unwrap());
        let (format, start) = if dtype.is_none() && map.len() >= 4 && header(0) == MAGIC {
            if map.len() < HEADER_BYTES {
                return Err(bad(path, format!("llm.c header needs {HEADER_BYTES} bytes, the file has {}", map.len())));
            }
            let dtype = match header(1) {
                1 => TokenDtype::U16,
                2 => TokenDtype::U32,
                v => return Err(bad(path, format!("unknown llm.c token file version {v} (1 = u16, 2 = u32)"))),
            };
            let (count, data) = (header(2), map.len() - HEADER_BYTES);
            if count < 0 || count as usize * dtype.width() != data {
                return Err(bad(
                    path,
                    format!(
                        "header says {count} tokens but {data} bytes of data follow ({} bytes per token)",
                        dtype.width()
                    ),
                ));
            }
            (TokenFormat::LlmC(dtype), HEADER_BYTES)
        } else {
            let ext = path.extension().and_then(|e| e.to_str());
            let dtype = match (dtype, ext) {
                (Some(d), _) => d,
                (None, Some("u16")) => TokenDtype::U16,
                (None, Some("u32")) => TokenDtype::U32,
                _ => return Err(bad(
                    path,
                    "no llm.c header (magic 20240520) and not named .u16/.u32: give the raw token width with --dtype",
                )),
            };
            if map.len() % dtype.width() != 0 {
                return Err(bad(
                    path,
                    format!(
                        "{} bytes is not a whole number of {}-byte tokens ({} trailing bytes)",
                        map.len(),
                        dtype.width(),
                        map.len() % dtype.width()
                    ),
                ));
            }
            (TokenFormat::Raw(dtype), 0)
        };
        let len = (map.len() - start) / format.dtype().width();
        if len == 0 {
            return Err(bad(path, "the file holds no tokens"));
        }
        // read front to back: ask the kernel for readahead (a hint; failure changes nothing)
        #[cfg(unix)]
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(TokenFile { path: path.into(), map, format, start, len })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the file holds no tokens (never true for an opened file).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file's layout.
    pub fn format(&self) -> TokenFormat {
        self.format
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends tokens `range` to `out`.
    pub fn read_into(&self, range: std::ops::Range<usize>, out: &mut Vec<u32>) {
        let w = self.format.dtype().width();
        let bytes = &self.map[self.start + range.start * w..self.start + range.end * w];
        match self.format.dtype() {
            TokenDtype::U16 => out.extend(bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)),
            TokenDtype::U32 => out.extend(bytes.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap()))),
        }
    }

    /// Hands the pages holding tokens `0..tokens` back to the kernel, so pages already read do not stay resident:
    /// without it a stream's mapped pages count as this process's memory and grow with the stream. The mapping is
    /// read-only and file-backed, so a page touched again is simply read again.
    pub fn release(&self, tokens: usize) {
        let bytes = self.start + tokens.min(self.len) * self.format.dtype().width();
        #[cfg(unix)]
        // SAFETY: DONTNEED on a shared read-only file mapping drops clean pages only; later reads fault them back
        // in from the file unchanged.
        let _ = unsafe { self.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, 0, bytes) };
        #[cfg(not(unix))]
        let _ = bytes;
    }

    /// Checks every token against the vocabulary, in bounded chunks (released as they are checked); the first bad
    /// one is reported with its index and byte offset.
    pub fn check_vocab(&self, vocab_size: usize) -> Result<()> {
        const CHUNK: usize = 1 << 20;
        let mut buf = Vec::with_capacity(CHUNK);
        for at in (0..self.len).step_by(CHUNK) {
            buf.clear();
            self.read_into(at..(at + CHUNK).min(self.len), &mut buf);
            if let Some(i) = buf.iter().position(|&t| t as usize >= vocab_size) {
                let index = at + i;
                return Err(bad(
                    &self.path,
                    format!(
                        "token {} at index {index} (byte offset {}) is outside the model's vocabulary ({vocab_size})",
                        buf[i],
                        self.start + index * self.format.dtype().width()
                    ),
                ));
            }
            self.release(at + buf.len());
        }
        Ok(())
    }
}

impl TokenFormat {
    /// The stored token width.
    pub fn dtype(self) -> TokenDtype {
        match self {
            TokenFormat::LlmC(d) | TokenFormat::Raw(d) => d,
        }
    }
}

/// Writes tokens in llm.c's format, streaming: call [`TokenWriter::write`] any number of times, then
/// [`TokenWriter::finish`] to fill in the count. Written to a temporary name and renamed at the end.
pub struct TokenWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    dtype: TokenDtype,
    count: u64,
}

impl TokenWriter {
    /// Starts a token file; u16 tokens (version 1) suit GPT-2's vocabulary, u32 (version 2) any.
    pub fn create(path: impl AsRef<Path>, dtype: TokenDtype) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let tmp = path.with_extension("tmp-partial");
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&[0u8; HEADER_BYTES]).map_err(|e| Error::io(&tmp, e))?;
        Ok(TokenWriter { path, tmp, out, dtype, count: 0 })
    }

    /// Appends tokens.
    pub fn write(&mut self, tokens: &[u32]) -> Result<()> {
        for &t in tokens {
            let r = match self.dtype {
                TokenDtype::U16 => {
                    let t16 = u16::try_from(t)
                        .map_err(|_| Error::Input(format!("token {t} does not fit a u16 token file: use u32")))?;
                    self.out.write_all(&t16.to_le_bytes())
                }
                TokenDtype::U32 => self.out.write_all(&t.to_le_bytes()),
            };
            r.map_err(|e| Error::io(&self.tmp, e))?;
        }
        self.count += tokens.len() as u64;
        Ok(())
    }

    /// Tokens written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Writes the header and moves the file into place.
    pub fn finish(mut self) -> Result<u64> {
        use std::io::{Seek, SeekFrom};
        let count = i32::try_from(self.count)
            .map_err(|_| Error::Input(format!("{} tokens exceed llm.c's i32 header count", self.count)))?;
        let version = match self.dtype {
            TokenDtype::U16 => 1,
            TokenDtype::U32 => 2,
        };
        let io = |e| Error::io(&self.tmp, e);
        self.out.flush().map_err(io)?;
        let file = self.out.get_mut();
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        for v in [MAGIC, version, count] {
            file.write_all(&v.to_le_bytes()).map_err(io)?;
        }
        file.sync_all().map_err(io)?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(self.count)
    }
}

/// Several token files read as one stream, in order.
pub struct TokenStream {
    files: Vec<TokenFile>,
    len: usize,
}

impl TokenStream {
    /// Opens every file (see [`TokenFile::open`]).
    pub fn open(paths: &[PathBuf], dtype: Option<TokenDtype>) -> Result<Self> {
        let files = paths.iter().map(|p| TokenFile::open(p, dtype)).collect::<Result<Vec<_>>>()?;
        let len = files.iter().map(TokenFile::len).sum();
        Ok(TokenStream { files, len })
    }

    /// Total tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the stream is empty (never true for opened files).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Checks every token of every file against the vocabulary.
    pub fn check_vocab(&self, vocab_size: usize) -> Result<()> {
        self.files.iter().try_for_each(|f| f.check_vocab(vocab_size))
    }

    /// Releases the pages of every token before `pos` (see [`TokenFile::release`]).
    pub fn release_before(&self, pos: usize) {
        let mut offset = 0;
        for f in &self.files {
            if pos > offset {
                f.release(pos - offset);
            }
            offset += f.len();
        }
    }

    /// Appends the tokens `range` of the concatenated stream to `out`.
    pub fn read_into(&self, range: std::ops::Range<usize>, out: &mut Vec<u32>) {
        let mut offset = 0;
        for f in &self.files {
            let (lo, hi) = (range.start.max(offset), range.end.min(offset + f.len()));
            if lo < hi {
                f.read_into(lo - offset..hi - offset, out);
            }
            offset += f.len();
        }
    }
}
