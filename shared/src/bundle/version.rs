//! Model versions: dotted decimal numbers (`1.0.1`), compared number by number, a missing
//! part counting as zero (`1.2` = `1.2.0`).

use std::cmp::Ordering;

/// A parsed model version.
#[derive(Debug, Clone, Eq)]
pub struct ModelVersion {
    parts: Vec<u64>,
    text: String,
}

impl ModelVersion {
    /// Parses `1`, `1.0`, `1.0.1`, ...: 1 to 8 dot-separated decimal numbers.
    pub fn parse(text: &str) -> Option<Self> {
        let parts: Vec<u64> = text
            .split('.')
            .map(|p| {
                if p.is_empty() || p.len() > 19 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    None
                } else {
                    p.parse().ok()
                }
            })
            .collect::<Option<_>>()?;
        if parts.len() > 8 {
            return None;
        }
        Some(Self {
            parts,
            text: text.to_string(),
        })
    }

    /// The text it was parsed from.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn part(&self, i: usize) -> u64 {
        self.parts.get(i).copied().unwrap_or(0)
    }
}

impl std::fmt::Display for ModelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Ord for ModelVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.parts.len().max(other.parts.len());
        (0..n)
            .map(|i| self.part(i).cmp(&other.part(i)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}

impl PartialOrd for ModelVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for ModelVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

#[cfg(test)]
mod tests {
    use super::ModelVersion;

    fn v(s: &str) -> ModelVersion {
        ModelVersion::parse(s).expect("valid version")
    }

    #[test]
    fn compares_number_by_number() {
        assert!(v("1.0.1") > v("1.0.0"));
        assert!(v("1.10") > v("1.9"));
        assert!(v("2") > v("1.99.99"));
        assert_eq!(v("1.2"), v("1.2.0"));
        assert_eq!(v("1.0.1").to_string(), "1.0.1");
    }

    #[test]
    fn refuses_what_is_not_dotted_numbers() {
        for bad in [
            "",
            "1.",
            ".1",
            "1..2",
            "v1",
            "1.0-rc1",
            "1.2.3.4.5.6.7.8.9",
            "+1",
        ] {
            assert!(ModelVersion::parse(bad).is_none(), "{bad}");
        }
    }
}
