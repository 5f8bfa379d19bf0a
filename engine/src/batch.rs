//! Dynamic batching: which queued requests can run as one, merging their inputs along the batch
//! dimension, and splitting the answer back per request.

use crate::engine::{Inference, Input, OutputTensor};
use std::sync::Arc;
use tandem_shared::oip::{InputTensor, TensorData};

/// Rows (batch entries) a request contributes.
pub fn rows(input: &Input) -> usize {
    match input {
        Input::Images(v) => v.len(),
        Input::Texts(v) => v.len(),
        Input::Tensors(t) => t
            .first()
            .and_then(|t| t.shape.first())
            .map_or(0, |d| *d as usize),
    }
}

/// Whether two requests can share one run: same kind of input and, for tensors, the same
/// names, types and every dimension but the first.
pub fn compatible(a: &Input, b: &Input) -> bool {
    match (a, b) {
        (Input::Images(_), Input::Images(_)) | (Input::Texts(_), Input::Texts(_)) => true,
        (Input::Tensors(x), Input::Tensors(y)) => {
            x.len() == y.len()
                && x.iter().zip(y.iter()).all(|(p, q)| {
                    p.name == q.name
                        && p.data.datatype() == q.data.datatype()
                        && p.shape.len() == q.shape.len()
                        && !p.shape.is_empty()
                        && p.shape[1..] == q.shape[1..]
                })
        }
        _ => false,
    }
}

/// Merges compatible inputs into one; `None` when there is nothing to merge.
pub fn merge(inputs: &[Input]) -> Option<Input> {
    let first = inputs.first()?;
    Some(match first {
        Input::Images(_) => Input::Images(
            inputs
                .iter()
                .flat_map(|i| match i {
                    Input::Images(v) => v.clone(),
                    _ => Vec::new(),
                })
                .collect(),
        ),
        Input::Texts(_) => Input::Texts(
            inputs
                .iter()
                .flat_map(|i| match i {
                    Input::Texts(v) => v.clone(),
                    _ => Vec::new(),
                })
                .collect(),
        ),
        Input::Tensors(t0) => {
            let mut merged = Vec::with_capacity(t0.len());
            for (k, proto) in t0.iter().enumerate() {
                let parts = inputs.iter().filter_map(|i| match i {
                    Input::Tensors(t) => t.get(k),
                    _ => None,
                });
                let mut shape = proto.shape.clone();
                shape[0] = 0;
                let data = match &proto.data {
                    TensorData::F32(_) => {
                        let mut all = Vec::new();
                        for p in parts {
                            shape[0] += p.shape[0];
                            if let TensorData::F32(d) = &p.data {
                                all.extend_from_slice(d);
                            }
                        }
                        TensorData::F32(all)
                    }
                    TensorData::I64(_) => {
                        let mut all = Vec::new();
                        for p in parts {
                            shape[0] += p.shape[0];
                            if let TensorData::I64(d) = &p.data {
                                all.extend_from_slice(d);
                            }
                        }
                        TensorData::I64(all)
                    }
                    TensorData::Bytes(_) => return None,
                };
                merged.push(InputTensor {
                    name: proto.name.clone(),
                    shape,
                    data,
                });
            }
            Input::Tensors(Arc::new(merged))
        }
    })
}

/// Rows `from..from + n` of a tensor's data, `per` elements a row; `None` when the data does
/// not hold those rows.
fn slice_data(data: &TensorData, per: usize, from: usize, n: usize) -> Option<TensorData> {
    let r = from.checked_mul(per)?..from.checked_add(n)?.checked_mul(per)?;
    Some(match data {
        TensorData::F32(d) => TensorData::F32(d.get(r)?.to_vec()),
        TensorData::I64(d) => TensorData::I64(d.get(r)?.to_vec()),
        TensorData::Bytes(d) => TensorData::Bytes(d.get(r)?.to_vec()),
    })
}

fn with_rows(shape: &[i64], n: usize) -> Vec<i64> {
    let mut shape = shape.to_vec();
    if let Some(d) = shape.first_mut() {
        *d = n as i64;
    }
    shape
}

fn slice_rows(t: &OutputTensor, from: usize, n: usize) -> OutputTensor {
    let total = t.shape.first().copied().unwrap_or(1).max(1) as usize;
    OutputTensor {
        name: t.name.clone(),
        shape: with_rows(&t.shape, n),
        data: slice_data(&t.data, t.data.len() / total, from, n).unwrap_or_else(|| match &t.data {
            TensorData::F32(_) => TensorData::F32(Vec::new()),
            TensorData::I64(_) => TensorData::I64(Vec::new()),
            TensorData::Bytes(_) => TensorData::Bytes(Vec::new()),
        }),
    }
}

/// Rows `from..from + n` of an input (a chunk a worker runs on its own); `None` when a
/// tensor's data does not hold the rows its shape declares.
pub fn slice(input: &Input, from: usize, n: usize) -> Option<Input> {
    Some(match input {
        Input::Images(v) => Input::Images(v.get(from..from + n)?.to_vec()),
        Input::Texts(v) => Input::Texts(v.get(from..from + n)?.to_vec()),
        Input::Tensors(ts) => Input::Tensors(Arc::new(
            ts.iter()
                .map(|t| {
                    let per =
                        t.shape.get(1..)?.iter().try_fold(1usize, |acc, d| {
                            acc.checked_mul(usize::try_from(*d).ok()?)
                        })?;
                    Some(InputTensor {
                        name: t.name.clone(),
                        shape: with_rows(&t.shape, n),
                        data: slice_data(&t.data, per, from, n)?,
                    })
                })
                .collect::<Option<Vec<_>>>()?,
        )),
    })
}

/// Joins the answers of an input's chunks, in order, into the answer for the whole input:
/// outputs concatenated along the first dimension, predictions appended, the stage timings
/// added up. `None` when there are no parts or their outputs differ past the first dimension.
pub fn concat(parts: Vec<Inference>) -> Option<Inference> {
    let mut parts = parts.into_iter();
    let mut all = parts.next()?;
    for p in parts {
        if p.outputs.len() != all.outputs.len() {
            return None;
        }
        for (into, o) in all.outputs.iter_mut().zip(p.outputs) {
            if into.shape.get(1..) != o.shape.get(1..) || into.shape.is_empty() {
                return None;
            }
            into.shape[0] += o.shape[0];
            match (&mut into.data, o.data) {
                (TensorData::F32(a), TensorData::F32(b)) => a.extend(b),
                (TensorData::I64(a), TensorData::I64(b)) => a.extend(b),
                (TensorData::Bytes(a), TensorData::Bytes(b)) => a.extend(b),
                _ => return None,
            }
        }
        all.predictions.extend(p.predictions);
        all.detections.extend(p.detections);
        all.timing.preprocess_us += p.timing.preprocess_us;
        all.timing.run_us += p.timing.run_us;
        all.timing.postprocess_us += p.timing.postprocess_us;
        all.timing.total_us = p.timing.total_us;
    }
    Some(all)
}

/// Padding a text batch may add, as a share of its real length: texts padded to the longest
/// of their batch cost that much more to run, so a batch whose padding would pass this is split.
pub const MAX_TEXT_PADDING: f64 = 0.25;

/// Groups text requests of similar length so that each group runs with little padding: sorts
/// them by length (characters, a proxy for tokens) and starts a new group when padding the
/// group to its longest text would add more than [`MAX_TEXT_PADDING`]. Returns the indexes of
/// `inputs` per group, shortest group first; a single group when nothing needs splitting, and
/// each input alone when the inputs are not texts.
pub fn group_by_length<'a>(inputs: impl IntoIterator<Item = &'a Input>) -> Vec<Vec<usize>> {
    let inputs: Vec<&Input> = inputs.into_iter().collect();
    let Some(lens) = inputs
        .iter()
        .map(|i| match i {
            Input::Texts(v) => Some((v.len(), v.iter().map(String::len).max().unwrap_or(0))),
            _ => None,
        })
        .collect::<Option<Vec<(usize, usize)>>>()
    else {
        return (0..inputs.len()).map(|i| vec![i]).collect();
    };
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    order.sort_by_key(|&i| lens[i].1);
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let (mut rows, mut real) = (0usize, 0usize);
    for i in order {
        let (n, len) = lens[i];
        let fits = groups.last().is_some_and(|_| {
            let padded = (rows + n) * len.max(1);
            padded as f64 <= (1.0 + MAX_TEXT_PADDING) * (real + n * len.max(1)) as f64
        });
        if !fits {
            groups.push(Vec::new());
            (rows, real) = (0, 0);
        }
        if let Some(g) = groups.last_mut() {
            g.push(i);
        }
        rows += n;
        real += n * len.max(1);
    }
    groups
}

/// Splits a batched answer into one answer per request, `rows[i]` rows each, in order.
pub fn split(inf: &Inference, rows: &[usize]) -> Vec<Inference> {
    let mut from = 0;
    rows.iter()
        .map(|&n| {
            let part = Inference {
                outputs: inf.outputs.iter().map(|o| slice_rows(o, from, n)).collect(),
                predictions: inf
                    .predictions
                    .get(from..from + n)
                    .map(<[_]>::to_vec)
                    .unwrap_or_default(),
                detections: inf
                    .detections
                    .get(from..from + n)
                    .map(<[_]>::to_vec)
                    .unwrap_or_default(),
                ..inf.clone()
            };
            from += n;
            part
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rows: i64, v: f32) -> Input {
        Input::Tensors(Arc::new(vec![InputTensor {
            name: "x".into(),
            shape: vec![rows, 2],
            data: TensorData::F32(vec![v; rows as usize * 2]),
        }]))
    }

    #[test]
    fn tensors_merge_along_the_first_dimension() {
        let (a, b) = (t(1, 1.0), t(2, 2.0));
        assert!(compatible(&a, &b));
        let m = merge(&[a, b]).expect("merged");
        let Input::Tensors(m) = m else {
            panic!("tensors")
        };
        assert_eq!(m[0].shape, vec![3, 2]);
        assert_eq!(
            m[0].data,
            TensorData::F32(vec![1.0, 1.0, 2.0, 2.0, 2.0, 2.0])
        );
        let other = Input::Tensors(Arc::new(vec![InputTensor {
            name: "x".into(),
            shape: vec![1, 3],
            data: TensorData::F32(vec![0.0; 3]),
        }]));
        assert!(!compatible(&t(1, 0.0), &other));
        assert!(!compatible(&t(1, 0.0), &Input::Texts(vec!["a".into()])));
    }

    #[test]
    fn tensor_rows_slice_and_refuse_data_shorter_than_the_shape() {
        let Some(Input::Tensors(part)) = slice(&merge(&[t(1, 1.0), t(2, 2.0)]).expect("m"), 1, 2)
        else {
            panic!("tensors")
        };
        assert_eq!(part[0].shape, vec![2, 2]);
        assert_eq!(part[0].data, TensorData::F32(vec![2.0; 4]));
        let short = Input::Tensors(Arc::new(vec![InputTensor {
            name: "x".into(),
            shape: vec![4, 2],
            data: TensorData::F32(vec![0.0; 6]),
        }]));
        assert!(slice(&short, 3, 1).is_none());
        let texts = Input::Texts(vec!["a".into(), "b".into(), "c".into()]);
        let Some(Input::Texts(v)) = slice(&texts, 1, 2) else {
            panic!("texts")
        };
        assert_eq!(v, vec!["b".to_string(), "c".to_string()]);
    }

    fn text(len: usize) -> Input {
        Input::Texts(vec!["x".repeat(len)])
    }

    #[test]
    fn texts_of_similar_length_share_a_batch_and_long_ones_split_off() {
        // Padding 10, 11, 12 to 12 adds 3 of 33 (9%): one group.
        let similar = [text(12), text(10), text(11)];
        assert_eq!(group_by_length(&similar), vec![vec![1, 2, 0]]);
        // A 60-character text would pad the three short ones five-fold: it runs apart.
        let mixed = [text(10), text(60), text(11), text(12)];
        assert_eq!(group_by_length(&mixed), vec![vec![0, 2, 3], vec![1]]);
        // Every group keeps its padding within MAX_TEXT_PADDING.
        let many: Vec<Input> = (0..40).map(|k| text(5 + (k * 37) % 90)).collect();
        let groups = group_by_length(&many);
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), many.len());
        for g in &groups {
            let lens: Vec<usize> = g.iter().map(|&i| 5 + (i * 37) % 90).collect();
            let longest = lens.iter().max().copied().unwrap_or(0);
            let real: usize = lens.iter().sum();
            assert!((longest * lens.len()) as f64 <= (1.0 + MAX_TEXT_PADDING) * real as f64);
        }
        // Inputs that are not texts are left one per group (the caller batches them as before).
        assert_eq!(
            group_by_length(&[t(1, 0.0), t(1, 1.0)]),
            vec![vec![0], vec![1]]
        );
    }
}
