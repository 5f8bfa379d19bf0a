//! Prometheus text exposition, scraped and read: `name{labels}` → value.

use std::collections::BTreeMap;

/// Samples by `name{labels}` as written (comments skipped, values that do not parse dropped).
pub type Samples = BTreeMap<String, f64>;

/// `GET {base}/metrics` as text.
pub async fn scrape_text(c: &reqwest::Client, base: &str) -> String {
    crate::http::get_text(c, &format!("{base}/metrics")).await
}

/// `GET {base}/metrics`, parsed.
pub async fn scrape(c: &reqwest::Client, base: &str) -> Samples {
    parse(&scrape_text(c, base).await)
}

/// Parses Prometheus text.
pub fn parse(text: &str) -> Samples {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Sum of a family's series (`name` alone or `name{...}`).
pub fn family(m: &Samples, name: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

/// One series' value; NaN when absent (so that any comparison with it fails).
pub fn one(m: &Samples, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_series_and_families() {
        let m = parse("# HELP a x\na{k=\"1\"} 2\na{k=\"2\"} 3.5\nab 7\nbad x\n");
        assert_eq!(family(&m, "a"), 5.5);
        assert_eq!(one(&m, "ab"), 7.0);
        assert!(one(&m, "bad").is_nan());
    }
}
