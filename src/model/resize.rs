//! A trained model carried to another segment size, as the start of training at that size: fewer, longer segments
//! make a stream of the same tokens fewer memory writes (1M tokens: 8,192 segments of 128, 2,048 of 512).

use super::Model;
use crate::error::{Error, Result};

impl Model {
    /// This model with segments of `segment_size` tokens: every weight is kept but the position embeddings, which
    /// grow (or shrink) with the segment. The segment's positions are linearly interpolated from the trained ones
    /// (position interpolation), so that the new rows start between the rows the blocks know; the read rows before
    /// the segment and the write rows after it keep their trained embeddings. Train it at the new size before use.
    ///
    /// ```
    /// let model = rmt_fast::Model::load("models/default.safetensors")?;
    /// let longer = model.with_segment_size(512)?;
    /// assert_eq!(longer.config.memory.segment_size, 512);
    /// assert_eq!(longer.config.n_positions, model.config.n_positions + 384);
    /// # Ok::<(), rmt_fast::Error>(())
    /// ```
    pub fn with_segment_size(&self, segment_size: usize) -> Result<Model> {
        let (old, d) = (self.config.memory.segment_size, self.config.n_embd);
        if segment_size < 2 || old < 2 {
            return Err(Error::Input(format!(
                "a segment of {segment_size} tokens: interpolating positions needs segments of 2 tokens or more \
                 (the model's are {old})"
            )));
        }
        let mut config = self.config.clone();
        config.memory.segment_size = segment_size;
        config.n_positions = self.config.n_positions + segment_size - old;
        config.validate()?;
        let read = self.config.memory.read_rows();
        let row = |p: usize| &self.weights.wpe[p * d..(p + 1) * d];
        let mut wpe = Vec::with_capacity(config.n_positions * d);
        for p in 0..config.n_positions {
            if p < read {
                wpe.extend_from_slice(row(p));
            } else if p < read + segment_size {
                // the new segment's first and last tokens land on the trained first and last
                let x = (p - read) as f64 * (old - 1) as f64 / (segment_size - 1) as f64;
                let (lo, t) = (x.floor() as usize, (x - x.floor()) as f32);
                let hi = (lo + 1).min(old - 1);
                let (a, b) = (row(read + lo), row(read + hi));
                wpe.extend(a.iter().zip(b).map(|(a, b)| a + t * (b - a)));
            } else {
                wpe.extend_from_slice(row(p + old - segment_size));
            }
        }
        let mut model = self.clone();
        model.config = config;
        model.weights.wpe = wpe;
        Ok(model)
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{Config, Model};

    /// A tiny random model of `kind` ("rmt", "rmt-r", "armt") with two memory tokens and 3 positions of slack.
    fn tiny(kind: &str, segment_size: usize) -> Model {
        let extra = match kind {
            "rmt-r" => r#", "retrieval": "v2""#,
            "armt" => r#", "d_mem": 2"#,
            _ => "",
        };
        let n_positions = segment_size + 2 * 2 + 3;
        let config = Config::from_json(&format!(
            r#"{{"n_layer": 2, "n_head": 2, "n_embd": 8, "vocab_size": 40, "n_positions": {n_positions},
                "eos_token_id": 39, "gen_token_id": 38,
                "memory": {{"kind": "{kind}", "num_mem_tokens": 2, "segment_size": {segment_size}{extra}}}}}"#
        ))
        .unwrap();
        Model::random(config, 3).unwrap()
    }

    /// RMT (read rows before the segment): the read and write rows keep their embeddings, the segment's ends land
    /// on the trained ends, and a middle row lies between its two trained neighbours.
    #[test]
    fn positions_are_interpolated_within_the_segment_only() {
        let model = tiny("rmt", 4);
        let d = model.config.n_embd;
        let longer = model.with_segment_size(7).unwrap();
        assert_eq!(longer.config.n_positions, model.config.n_positions + 3);
        let (old, new) = (&model.weights.wpe, &longer.weights.wpe);
        let row = |w: &[f32], p: usize| w[p * d..(p + 1) * d].to_vec();
        // read rows 0..2, segment 2..6 (old) / 2..9 (new), then write rows and slack
        for (new_p, old_p) in [(0, 0), (1, 1), (2, 2), (8, 5), (9, 6), (10, 7), (12, 9)] {
            assert_eq!(row(new, new_p), row(old, old_p), "new position {new_p}");
        }
        // new row 4 sits at old 2 + 2·3/6 = 3: halfway from old row 2 to old row 3 is old 2.5, so check row 3 too
        assert_eq!(row(new, 4), row(old, 3));
        let mid: Vec<f32> = row(old, 2).iter().zip(row(old, 3)).map(|(a, b)| a + 0.5 * (b - a)).collect();
        assert_eq!(row(new, 3), mid);
        assert_eq!(longer.weights.blocks.len(), model.weights.blocks.len());
        assert_eq!(longer.weights.memory, model.weights.memory);
    }

    /// The same segment size gives back the same model, for every memory kind.
    #[test]
    fn the_same_size_changes_nothing() {
        for kind in ["rmt", "rmt-r", "armt"] {
            let model = tiny(kind, 5);
            let same = model.with_segment_size(5).unwrap();
            assert_eq!((same.config.to_json(), &same.weights.wpe), (model.config.to_json(), &model.weights.wpe));
        }
    }

    #[test]
    fn a_one_token_segment_is_refused() {
        let err = tiny("armt", 4).with_segment_size(1).unwrap_err();
        assert!(err.to_string().contains("2 tokens or more"), "{err}");
    }
}
