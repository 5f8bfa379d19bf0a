//! Disagreement signals for the detection cascade (`tandem-bench detect --disagreement`): the
//! edge's answer seen from other views of the same frame, and a rule that offloads a frame
//! when the views disagree. The views: each of the edge graph's two scales alone (the copy's
//! manifest decodes only that branch's levels; free on the device, where the shared decoder
//! could keep each branch's boxes before it merges them) and the edge on the mirrored frame
//! (one more edge pass on the device), its boxes mirrored back. Two views disagree on a box
//! one finds that the other has no same-class box for ([`unmatched`]).

use crate::detect_fit::{Frame, Route};
use crate::detect_signals::{Only, Rule, keeps};
use tandem_shared::detect::Detection;
use tandem_shared::detect::nms::iou;

/// IoU at which a box of one view matches a box of the other.
pub const MATCH_IOU: f32 = 0.5;

/// A frame's other views, each every box down to the bench's decode floor (answered or not).
#[derive(Debug, Clone, Default)]
pub struct Views {
    /// The edge's 608 px branch alone.
    pub s608: Vec<Detection>,
    /// The edge's 416 px branch alone.
    pub s416: Vec<Detection>,
    /// The edge (both branches) on the mirrored frame, boxes mirrored back.
    pub mirrored: Vec<Detection>,
    /// [`Disagree::count`] of each of [`all`]'s entries, computed once ([`Views::tally`]; a
    /// grid's rules read them instead of matching boxes again).
    pub counts: Vec<usize>,
}

impl Views {
    /// Fills `f.views.counts` for the disagreements `all`.
    pub fn tally(f: &mut Frame, all: &[Disagree]) {
        f.views.counts = all.iter().map(|d| d.count(f)).collect();
    }
}

/// Boxes of `a` scoring at least `high` that `only` keeps (in a `w` x `h` frame) and that no
/// box of `b` of the same class scoring at least `low` overlaps with IoU >= [`MATCH_IOU`].
pub fn unmatched(
    a: &[Detection],
    b: &[Detection],
    (high, low): (f32, f32),
    only: Only,
    (w, h): (f32, f32),
) -> usize {
    a.iter()
        .filter(|d| d.score >= high && keeps(only, d, w, h))
        .filter(|d| {
            !b.iter()
                .any(|o| o.score >= low && o.class == d.class && iou(&o.bbox, &d.bbox) >= MATCH_IOU)
        })
        .count()
}

/// Pairs of boxes of `a` of different classes, both scoring at least `t` and kept by `only`,
/// that overlap with IoU >= [`MATCH_IOU`]: the edge unsure of the class (a photo of an apple
/// answered as vase, donut and orange: three pairs). Pairs, not boxes: a pile of classes on
/// one object counts more than one stray overlap (counting the boxes instead measured worse,
/// docs/benchmarks/detect.md).
pub fn confused(a: &[Detection], t: f32, only: Only, (w, h): (f32, f32)) -> usize {
    let kept: Vec<&Detection> = a
        .iter()
        .filter(|d| d.score >= t && keeps(only, d, w, h))
        .collect();
    kept.iter()
        .enumerate()
        .map(|(i, d)| {
            kept[i + 1..]
                .iter()
                .filter(|o| o.class != d.class && iou(&o.bbox, &d.bbox) >= MATCH_IOU)
                .count()
        })
        .sum()
}

/// Boxes found on the mirrored frame, in the unmirrored frame of width `width`.
pub fn mirror_back(boxes: &[Detection], width: u32) -> Vec<Detection> {
    let w = width as f32;
    boxes
        .iter()
        .map(|d| {
            let [x1, y1, x2, y2] = d.bbox;
            Detection {
                bbox: [w - x2, y1, w - x1, y2],
                ..d.clone()
            }
        })
        .collect()
}

/// The edge's boxes of frame `f` down to the bench's decode floor: those it answered, then
/// those under its answer threshold.
fn down_to_floor(f: &Frame) -> Vec<Detection> {
    f.edge.iter().chain(&f.below).cloned().collect()
}

/// Which two views a [`Disagree`] compares, and in which direction it counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pair {
    /// Boxes of the 608 branch the 416 branch lacks.
    Only608,
    /// Boxes of the 416 branch the 608 branch lacks.
    Only416,
    /// Both of those.
    Scales,
    /// Boxes of the edge's answer (down to the floor) the mirrored pass lacks, and the reverse.
    Mirror,
    /// Pairs of the edge's boxes (down to the floor) of different classes on one place
    /// ([`confused`], at `high`; no other view).
    Classes,
}

/// Offload when at least `boxes` boxes are unmatched between the views of `pair`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Disagree {
    /// The views.
    pub pair: Pair,
    /// Least score of a box that counts.
    pub high: f32,
    /// Least score of a box that matches it.
    pub low: f32,
    /// Unmatched boxes needed.
    pub boxes: usize,
    /// Which boxes count.
    pub only: Only,
}

impl Disagree {
    /// Unmatched boxes between the frame's views.
    pub fn count(&self, f: &Frame) -> usize {
        let v = &f.views;
        let dims = (f.width as f32, f.height as f32);
        let one = |a: &[Detection], b: &[Detection]| {
            unmatched(a, b, (self.high, self.low), self.only, dims)
        };
        match self.pair {
            Pair::Only608 => one(&v.s608, &v.s416),
            Pair::Only416 => one(&v.s416, &v.s608),
            Pair::Scales => one(&v.s608, &v.s416) + one(&v.s416, &v.s608),
            Pair::Mirror => {
                let edge = down_to_floor(f);
                one(&edge, &v.mirrored) + one(&v.mirrored, &edge)
            }
            Pair::Classes => confused(&down_to_floor(f), self.high, self.only, dims),
        }
    }

    fn show(&self) -> String {
        let pair = match self.pair {
            Pair::Only608 => "608 not 416",
            Pair::Only416 => "416 not 608",
            Pair::Scales => "608 xor 416",
            Pair::Mirror => "mirror xor edge",
            Pair::Classes => "class confusion",
        };
        let only = match self.only {
            Only::All => String::new(),
            Only::NotPerson => " not person".into(),
            Only::Larger(s) => format!(" over {:.0}%", s * 100.0),
            o => format!(" {o:?}"),
        };
        match self.pair {
            Pair::Classes => format!(
                "class confusion{only} (pairs >= {:.2}) >= {}",
                self.high, self.boxes
            ),
            _ => format!(
                "{pair}{only} (>= {:.2} unmatched at {:.2}) >= {}",
                self.high, self.low, self.boxes
            ),
        }
    }
}

/// A candidate policy: a disagreement, a band rule, or either.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewRule {
    /// The band rule.
    pub band: Option<Rule>,
    /// The disagreement.
    pub disagree: Option<Disagree>,
    /// Its entry of [`Views::counts`] (filled by [`Views::tally`] before any rule is asked).
    pub slot: usize,
}

impl Route for ViewRule {
    fn offloads(&self, f: &Frame) -> bool {
        let disagrees = self
            .disagree
            .is_some_and(|d| f.views.counts[self.slot] >= d.boxes);
        disagrees || self.band.is_some_and(|b| b.offloads(f))
    }
}

impl ViewRule {
    /// The rule in words.
    pub fn show(&self) -> String {
        let parts: Vec<String> = self
            .band
            .iter()
            .map(Rule::show)
            .chain(self.disagree.iter().map(Disagree::show))
            .collect();
        parts.join(", or ")
    }
}

/// The disagreements of `pairs` at the (counted, matching) scores `scores`, `counts` boxes
/// of the kinds `only`.
fn grid(pairs: &[Pair], scores: &[(f32, f32)], counts: &[usize], only: &[Only]) -> Vec<Disagree> {
    let mut out = Vec::new();
    for pair in pairs {
        for (high, low) in scores {
            for boxes in counts {
                for only in only {
                    out.push(Disagree {
                        pair: *pair,
                        high: *high,
                        low: *low,
                        boxes: *boxes,
                        only: *only,
                    });
                }
            }
        }
    }
    out
}

/// A family: its name, the disagreements it tries alone, those it tries or-ed with each band
/// rule, and whether it tries the band rules alone too (the fit chooses among all three).
type Spec = (&'static str, Vec<Disagree>, Vec<Disagree>, bool);

/// The families' disagreements (`floor`: the bench's decode floor).
fn specs(floor: f32) -> Vec<Spec> {
    let scales = [Pair::Only608, Pair::Only416, Pair::Scales];
    let views = |high: &[f32], low: &[f32]| -> Vec<(f32, f32)> {
        high.iter()
            .flat_map(|h| low.iter().map(move |l| (*h, *l)))
            .collect()
    };
    let all = [Only::All, Only::NotPerson, Only::Larger(0.1)];
    let wide = views(&[0.25, 0.3, 0.4, 0.5], &[floor, 0.2]);
    let narrow = views(&[0.3, 0.4], &[0.2]);
    let classes = [(0.2, 0.2), (0.25, 0.25), (0.3, 0.3)];
    let confusion = grid(
        &[Pair::Classes],
        &classes,
        &[1, 2, 3, 4, 5, 6, 8, 10, 12, 15],
        &[Only::All, Only::NotPerson],
    );
    let or_confusion = grid(
        &[Pair::Classes],
        &classes,
        &[3, 4, 5, 6, 8, 10],
        &[Only::All],
    );
    vec![
        (
            "scale disagreement",
            grid(&scales, &wide, &[1, 2, 3], &all),
            vec![],
            false,
        ),
        (
            "band, or scale disagreement",
            vec![],
            grid(&scales, &narrow, &[1, 2], &[Only::All, Only::Larger(0.1)]),
            false,
        ),
        (
            "mirror disagreement",
            grid(&[Pair::Mirror], &wide, &[1, 2, 3, 4, 6], &all),
            vec![],
            false,
        ),
        (
            "band, or mirror disagreement",
            vec![],
            grid(&[Pair::Mirror], &narrow, &[2, 4, 6], &all),
            false,
        ),
        ("class confusion", confusion.clone(), vec![], false),
        (
            "band, or class confusion",
            vec![],
            or_confusion.clone(),
            false,
        ),
        (
            "band | confusion | both (fit chooses)",
            confusion,
            or_confusion,
            true,
        ),
    ]
}

/// Every disagreement of the families, each once: the entries of [`Views::counts`].
pub fn all(floor: f32) -> Vec<Disagree> {
    let mut out: Vec<Disagree> = Vec::new();
    for (_, alone, with_band, _) in specs(floor) {
        for d in alone.into_iter().chain(with_band) {
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
    out
}

/// The families `--disagreement` measures: each kind of disagreement alone, or-ed with the
/// policy's band grid (`band`), and the three together; their rules read [`Views::counts`] of
/// [`all`]`(floor)`.
pub fn families(floor: f32, band: &[Rule]) -> Vec<(String, Vec<ViewRule>)> {
    let master = all(floor);
    let rule = |band: Option<Rule>, disagree: Option<Disagree>| ViewRule {
        band,
        disagree,
        slot: disagree
            .and_then(|d| master.iter().position(|m| *m == d))
            .unwrap_or(usize::MAX),
    };
    specs(floor)
        .into_iter()
        .map(|(name, alone, with_band, band_alone)| {
            let mut rules: Vec<ViewRule> = Vec::new();
            if band_alone {
                rules.extend(band.iter().map(|b| rule(Some(*b), None)));
            }
            rules.extend(alone.iter().map(|d| rule(None, Some(*d))));
            for b in band {
                rules.extend(with_band.iter().map(|d| rule(Some(*b), Some(*d))));
            }
            (name.to_string(), rules)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(class: usize, score: f32, x: f32) -> Detection {
        Detection {
            bbox: [x, 0.0, x + 10.0, 10.0],
            class,
            label: if class == 0 { "person" } else { "cow" }.into(),
            score,
        }
    }

    #[test]
    fn unmatched_counts_boxes_the_other_view_lacks() {
        let dims = (100.0, 100.0);
        let a = [det(0, 0.6, 0.0), det(1, 0.5, 30.0), det(1, 0.2, 60.0)];
        // Same place and class at 0.15; same place, other class; elsewhere.
        let b = [det(0, 0.15, 1.0), det(0, 0.9, 30.0), det(1, 0.9, 80.0)];
        // The 0.2 box does not count; the cow has no cow in b; the person matches at 0.1.
        assert_eq!(unmatched(&a, &b, (0.3, 0.1), Only::All, dims), 1);
        // Matches need 0.2: the person's 0.15 match no longer counts.
        assert_eq!(unmatched(&a, &b, (0.3, 0.2), Only::All, dims), 2);
        assert_eq!(unmatched(&a, &b, (0.3, 0.2), Only::NotPerson, dims), 1);
        assert_eq!(unmatched(&a, &b, (0.1, 0.2), Only::All, dims), 3);
        // Boxes of 1% of the frame are not over 10% of it.
        assert_eq!(unmatched(&a, &b, (0.1, 0.2), Only::Larger(0.1), dims), 0);
        // A box shifted by half its width is not a match (IoU 1/3).
        let shifted = [det(0, 0.9, 5.0)];
        assert_eq!(unmatched(&a[..1], &shifted, (0.3, 0.1), Only::All, dims), 1);
    }

    #[test]
    fn confused_counts_pairs_of_classes_on_one_place() {
        let dims = (100.0, 100.0);
        // An apple answered as cow 0.4, person 0.3 and (class 2) 0.25 in one place; a lone
        // cow elsewhere.
        let mut a = vec![det(1, 0.4, 0.0), det(0, 0.3, 1.0), det(1, 0.5, 50.0)];
        a.push(Detection {
            class: 2,
            label: "vase".into(),
            ..det(0, 0.25, 0.0)
        });
        assert_eq!(confused(&a, 0.25, Only::All, dims), 3);
        assert_eq!(confused(&a, 0.3, Only::All, dims), 1);
        assert_eq!(confused(&a, 0.25, Only::NotPerson, dims), 1);
        assert_eq!(confused(&a, 0.45, Only::All, dims), 0);
        // The same class overlapping is no confusion.
        let same = [det(1, 0.4, 0.0), det(1, 0.3, 1.0)];
        assert_eq!(confused(&same, 0.2, Only::All, dims), 0);
    }

    #[test]
    fn every_rule_reads_its_own_count() {
        let band = [Rule::of(
            &tandem_shared::detect::cascade::CascadeSpec::band(0.3, 0.35),
        )];
        let master = all(0.1);
        for (name, rules) in families(0.1, &band) {
            assert!(!rules.is_empty(), "{name}");
            for r in rules {
                if let Some(d) = r.disagree {
                    assert_eq!(master[r.slot], d, "{name}");
                }
            }
        }
    }

    #[test]
    fn mirrored_boxes_come_back_in_place() {
        let d = [det(1, 0.5, 10.0)];
        let back = mirror_back(&d, 100);
        assert_eq!(back[0].bbox, [80.0, 0.0, 90.0, 10.0]);
        assert_eq!(mirror_back(&back, 100), d);
    }
}
