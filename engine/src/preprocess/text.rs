//! Text pre-processing: a Hugging Face `tokenizer.json` with fixed padding turned off,
//! truncation at the model's limit, and padding only to the longest text of a batch.
//!
//! A text is cut to a byte budget ([`BYTES_PER_TOKEN`] × `max_tokens`, at a UTF-8 character
//! boundary) before the tokenizer sees it: the tokenizer works on the whole text before it
//! truncates, so a 15 MiB text would otherwise cost seconds of a worker and gigabytes.

use super::PreprocessError;
use std::path::Path;
use tandem_shared::manifest::TextPreprocess;
use tokenizers::{Tokenizer, TruncationParams};

/// Bytes of text kept per token the model takes. Ordinary text runs about 4 to 6 bytes per
/// token (English words, multi-byte scripts, punctuation); 32 leaves room for long words and
/// runs of symbols, so a cut text yields the same first `max_tokens` tokens as the whole text
/// unless its tokens average more than 32 bytes.
pub const BYTES_PER_TOKEN: usize = 32;

/// The start of `text`, at most `budget` bytes long, cut at a character boundary.
pub fn cut(text: &str, budget: usize) -> &str {
    if text.len() <= budget {
        return text;
    }
    let mut end = budget;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A loaded tokenizer configured for one model variant.
#[derive(Debug, Clone)]
pub struct TextEncoder {
    tokenizer: Tokenizer,
    pad_id: i64,
    spec: TextPreprocess,
}

/// The input tensors for a batch of texts: `(name, shape, data)`.
pub type TextTensors = Vec<(String, Vec<i64>, Vec<i64>)>;

impl TextEncoder {
    /// Loads the tokenizer file and reconfigures it: no fixed padding, truncation at
    /// `max_tokens`.
    pub fn load(path: &Path, spec: &TextPreprocess) -> Result<Self, String> {
        let mut tokenizer =
            Tokenizer::from_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let pad_id = tokenizer.get_padding().map_or(0, |p| i64::from(p.pad_id));
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: spec.max_tokens,
                ..Default::default()
            }))
            .map_err(|e| format!("{}: truncation: {e}", path.display()))?;
        Ok(Self {
            tokenizer,
            pad_id,
            spec: spec.clone(),
        })
    }

    /// Bytes of a text the tokenizer sees: [`BYTES_PER_TOKEN`] × the model's `max_tokens`.
    pub fn byte_budget(&self) -> usize {
        self.spec.max_tokens.saturating_mul(BYTES_PER_TOKEN)
    }

    /// Tokenises a batch, padding to its longest member; empty texts are refused. Each text is
    /// cut to [`Self::byte_budget`] first.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<TextTensors, PreprocessError> {
        let budget = self.byte_budget();
        let texts: Vec<&str> = texts.iter().map(|t| cut(t, budget)).collect();
        if texts.iter().any(|t| t.trim().is_empty()) {
            return Err(PreprocessError::EmptyText);
        }
        let encodings = texts
            .iter()
            .map(|t| self.tokenizer.encode(*t, true))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PreprocessError::Tokenize(e.to_string()))?;
        let len = encodings
            .iter()
            .map(|e| e.get_ids().len())
            .max()
            .unwrap_or(0);
        let n = texts.len();
        let mut ids = vec![self.pad_id; n * len];
        let mut mask = vec![0i64; n * len];
        let mut types = vec![0i64; n * len];
        for (row, e) in encodings.iter().enumerate() {
            let base = row * len;
            for (j, ((id, m), t)) in e
                .get_ids()
                .iter()
                .zip(e.get_attention_mask())
                .zip(e.get_type_ids())
                .enumerate()
            {
                ids[base + j] = i64::from(*id);
                mask[base + j] = i64::from(*m);
                types[base + j] = i64::from(*t);
            }
        }
        let shape = vec![n as i64, len as i64];
        let mut out = vec![
            (self.spec.input_ids.clone(), shape.clone(), ids),
            (self.spec.attention_mask.clone(), shape.clone(), mask),
        ];
        if let Some(name) = &self.spec.token_type_ids {
            out.push((name.clone(), shape, types));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::cut;

    #[test]
    fn cut_keeps_whole_characters_within_the_budget() {
        assert_eq!(cut("short", 32), "short");
        // "é" is 2 bytes: a budget that falls inside it keeps the character out.
        assert_eq!(cut("abé", 3), "ab");
        assert_eq!(cut("abé", 4), "abé");
        let long = "✓".repeat(1000);
        let c = cut(&long, 100);
        assert!(c.len() <= 100 && c.len() > 96);
        assert!(long.starts_with(c));
        assert_eq!(cut("", 0), "");
    }
}
