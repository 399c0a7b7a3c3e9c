//! Token streams: token files (memory-mapped, validated) and the GPT-2 tokenizer.

pub mod tokenizer;
pub mod tokens;
