//! Candidate routing signals for the detection cascade, measured by `tandem-bench detect`
//! with the frame policy's own cross-fitting ([`crate::detect_fit`]): each family is a grid of
//! [`Rule`]s, per-frame signals the edge computes from its own answer and the frame (band
//! boxes by size, at the border, by class; the band's summed doubt; the least confident kept
//! box; boxes under the answer threshold), alone or added to the policy's band.

use crate::detect_fit::{Frame, Route, band_grid, steps};
use tandem_shared::detect::Detection;
use tandem_shared::detect::cascade::CascadeSpec;

/// Which of a band's boxes a [`Clause`] counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Only {
    /// Every box.
    All,
    /// Boxes covering less than this share of the frame.
    Smaller(f32),
    /// Boxes covering more than this share of the frame.
    Larger(f32),
    /// Boxes within 1% of the frame's border.
    Border,
    /// Boxes of a class other than `person`.
    NotPerson,
    /// `person` boxes.
    Person,
}

/// Boxes scoring in `[low, high)` that `only` keeps: the clause fires with at least `boxes`
/// of them, or (with `doubt`) when their summed `1 - score` reaches `doubt`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clause {
    /// Band bottom.
    pub low: f32,
    /// Band top, excluded.
    pub high: f32,
    /// Boxes needed.
    pub boxes: usize,
    /// Which boxes count.
    pub only: Only,
    /// Summed doubt needed instead of a count.
    pub doubt: Option<f32>,
}

/// A candidate frame policy: offload when the main clause or the extra one fires, or when
/// more than `max_boxes` boxes are answered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// The band clause.
    pub band: Clause,
    /// A second clause, or-ed.
    pub extra: Option<Clause>,
    /// Crowded frames.
    pub max_boxes: Option<usize>,
}

/// Whether `only` keeps box `d` of a `w` x `h` frame.
pub fn keeps(only: Only, d: &Detection, w: f32, h: f32) -> bool {
    let [x1, y1, x2, y2] = d.bbox;
    let share = ((x2 - x1).max(0.0) * (y2 - y1).max(0.0)) / (w * h).max(1.0);
    match only {
        Only::All => true,
        Only::Smaller(s) => share < s,
        Only::Larger(s) => share > s,
        Only::Border => x1 <= 0.01 * w || y1 <= 0.01 * h || x2 >= 0.99 * w || y2 >= 0.99 * h,
        Only::NotPerson => d.label != "person",
        Only::Person => d.label == "person",
    }
}

impl Clause {
    fn fires(&self, f: &Frame) -> bool {
        let (w, h) = (f.width as f32, f.height as f32);
        let in_band = f
            .edge
            .iter()
            .chain(&f.below)
            .filter(|d| (self.low..self.high).contains(&d.score) && keeps(self.only, d, w, h));
        match self.doubt {
            Some(t) => in_band.map(|d| 1.0 - d.score).sum::<f32>() >= t - 1e-6,
            None => in_band.count() >= self.boxes,
        }
    }

    fn of(p: &CascadeSpec) -> Self {
        Self {
            low: p.uncertain_low,
            high: p.uncertain_high,
            boxes: p.uncertain_boxes,
            only: Only::All,
            doubt: None,
        }
    }
}

impl Route for Rule {
    fn offloads(&self, f: &Frame) -> bool {
        self.band.fires(f)
            || self.extra.is_some_and(|c| c.fires(f))
            || self.max_boxes.is_some_and(|m| f.edge.len() > m)
    }
}

impl Rule {
    /// The band policy `p` as a rule.
    pub fn of(p: &CascadeSpec) -> Self {
        Self {
            band: Clause::of(p),
            extra: None,
            max_boxes: p.max_boxes,
        }
    }

    /// The rule in words.
    pub fn show(&self) -> String {
        let clause = |c: &Clause| {
            let what = match c.only {
                Only::All => String::new(),
                Only::Smaller(s) => format!(" under {:.1}% of the frame", s * 100.0),
                Only::Larger(s) => format!(" over {:.0}% of the frame", s * 100.0),
                Only::Border => " at the border".into(),
                Only::NotPerson => " not person".into(),
                Only::Person => " person".into(),
            };
            match c.doubt {
                Some(t) => format!(
                    "band [{:.2}, {:.2}){what}: sum(1 - score) >= {t:.1}",
                    c.low, c.high
                ),
                None => format!("band [{:.2}, {:.2}){what} >= {}", c.low, c.high, c.boxes),
            }
        };
        let mut s = clause(&self.band);
        if let Some(e) = &self.extra {
            s += &format!(", or {}", clause(e));
        }
        if let Some(m) = self.max_boxes {
            s += &format!(", or > {m} boxes");
        }
        s
    }
}

/// A named grid of candidate rules.
pub struct Family {
    /// What the signal is.
    pub name: String,
    /// Its grid.
    pub rules: Vec<Rule>,
}

/// The candidate families: the policy's band grid first, then each signal alone or added to
/// the band. `floor` is the lowest band bottom (the edge decodes down to it); `answer` the
/// edge's answer threshold.
pub fn families(floor: f32, answer: f32) -> Vec<Family> {
    let base: Vec<Rule> = band_grid(floor).iter().map(Rule::of).collect();
    let restrict = |only: Only| -> Vec<Rule> {
        base.iter()
            .map(|r| Rule {
                band: Clause { only, ..r.band },
                ..*r
            })
            .collect()
    };
    let or = |extras: &[Clause]| -> Vec<Rule> {
        base.iter()
            .flat_map(|r| {
                extras.iter().map(move |e| Rule {
                    extra: Some(*e),
                    ..*r
                })
            })
            .collect()
    };
    let small = [0.005, 0.01, 0.02, 0.05, 0.1];
    let mut out = vec![Family {
        name: "band (the policy before)".into(),
        rules: base.clone(),
    }];
    for s in small {
        out.push(Family {
            name: format!("band boxes under {:.1}% of frame", s * 100.0),
            rules: restrict(Only::Smaller(s)),
        });
    }
    for s in [0.1, 0.25, 0.5] {
        out.push(Family {
            name: format!("band boxes over {:.0}% of frame", s * 100.0),
            rules: restrict(Only::Larger(s)),
        });
    }
    out.push(Family {
        name: "band boxes at the border".into(),
        rules: restrict(Only::Border),
    });
    out.push(Family {
        name: "band boxes not person".into(),
        rules: restrict(Only::NotPerson),
    });
    out.push(Family {
        name: "band boxes person".into(),
        rules: restrict(Only::Person),
    });
    out.push(Family {
        name: "band sum(1 - score)".into(),
        rules: base
            .iter()
            .filter(|r| r.band.boxes == 1)
            .flat_map(|r| {
                [0.5f32, 1.0, 1.5, 2.0, 3.0, 4.0].map(|t| Rule {
                    band: Clause {
                        doubt: Some(t),
                        ..r.band
                    },
                    ..*r
                })
            })
            .collect(),
    });
    let alone = |low: f32, high: f32, counts: &[usize]| -> Vec<Rule> {
        counts
            .iter()
            .map(|n| Rule {
                band: Clause {
                    low,
                    high,
                    boxes: *n,
                    only: Only::All,
                    doubt: None,
                },
                extra: None,
                max_boxes: None,
            })
            .collect()
    };
    out.push(Family {
        name: "least confident kept box < t".into(),
        rules: steps(answer + 0.05, 0.9)
            .flat_map(|t| alone(answer, t, &[1]))
            .collect(),
    });
    out.push(Family {
        name: format!("boxes in [{floor:.2}, {answer:.2}) >= n"),
        rules: alone(floor, answer, &[1, 2, 3, 4, 6, 8, 10, 15, 20, 30, 40]),
    });
    out.push(Family {
        name: "most confident band box >= t".into(),
        rules: steps(floor, 0.65)
            .flat_map(|t| steps(t + 0.05, 0.7).flat_map(move |h| alone(t, h, &[1])))
            .collect(),
    });
    let extra = |low: f32, high: f32, boxes: usize, only: Only| Clause {
        low,
        high,
        boxes,
        only,
        doubt: None,
    };
    let mut small_or = Vec::new();
    for s in [0.01, 0.02, 0.05] {
        for n in [1, 2] {
            for low in [floor, answer, 0.3] {
                small_or.push(extra(low, 0.5, n, Only::Smaller(s)));
            }
        }
    }
    out.push(Family {
        name: "band, or small band boxes".into(),
        rules: or(&small_or),
    });
    let mut large_or = Vec::new();
    for low in [answer, 0.3, 0.4] {
        large_or.push(extra(low, 0.6, 1, Only::Border));
        for s in [0.1, 0.25] {
            large_or.push(extra(low, 0.6, 1, Only::Larger(s)));
        }
    }
    out.push(Family {
        name: "band, or a large/border band box".into(),
        rules: or(&large_or),
    });
    let under: Vec<Clause> = [2, 4, 6, 10]
        .iter()
        .map(|n| extra(floor, answer, *n, Only::All))
        .collect();
    out.push(Family {
        name: format!("band, or boxes in [{floor:.2}, {answer:.2})"),
        rules: or(&under),
    });
    let other: Vec<Clause> = [answer, 0.3, 0.4]
        .iter()
        .flat_map(|low| [1, 2].map(|n| extra(*low, 0.6, n, Only::NotPerson)))
        .collect();
    out.push(Family {
        name: "band, or not-person band boxes".into(),
        rules: or(&other),
    });
    out
}
