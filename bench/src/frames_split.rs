//! Where `tandem-bench frames`' end-to-end time goes past pre-processing and the raw run: per
//! call, the engine's own timings (`Timing`: queue, pre-processing, run incl. the output copy,
//! post-processing, submission to answer) next to the caller's wall time, from `e2e-after`
//! (in process) and `http-e2e` (the agent's answer carries `timing_us`). The medians give
//! - `hand-off in`: submission to the worker starting the job (`queue_us`);
//! - `hand-off out`: the worker answering to the caller running again (wall minus `total_us`);
//! - `run + copy` against the raw `floor`, and `post` (softmax, top-k, signals);
//! - the agent's HTTP (client, server, router) as the HTTP wall minus the engine's `total_us`.

use crate::stats::median;
use std::sync::Mutex;
use std::time::Duration;
use tandem_shared::answer::TimingUs;

/// One call: the caller's wall time and the engine's timings (when the answer had them).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call {
    pub(crate) wall_us: f64,
    pub(crate) timing: TimingUs,
}

/// The calls of one system on one input set.
#[derive(Debug, Default)]
pub(crate) struct Calls(Mutex<Vec<Call>>);

impl Calls {
    pub(crate) fn push(&self, wall: Duration, timing: TimingUs) {
        if let Ok(mut v) = self.0.lock() {
            v.push(Call {
                wall_us: wall.as_secs_f64() * 1e6,
                timing,
            });
        }
    }

    /// The median of `f` over the calls.
    fn p50(&self, f: impl Fn(&Call) -> f64) -> f64 {
        let mut v: Vec<f64> = self
            .0
            .lock()
            .map(|c| c.iter().map(&f).collect())
            .unwrap_or_default();
        median(&mut v)
    }

    /// `{set}: engine ...` medians, in microseconds.
    pub(crate) fn engine_line(&self, set: &str, floor_us: f64) -> String {
        let t = |f: fn(&TimingUs) -> u64| self.p50(|c| f(&c.timing) as f64);
        format!(
            "{set}: engine p50 us: hand-off in {:.0}, pre {:.0}, run+copy {:.0} (floor {:.0}), post {:.0}, total {:.0}, hand-off out {:.0}, wall {:.0}",
            t(|x| x.queue_us),
            t(|x| x.preprocess_us),
            t(|x| x.run_us),
            floor_us,
            t(|x| x.postprocess_us),
            t(|x| x.total_us),
            self.p50(|c| c.wall_us - c.timing.total_us as f64),
            self.p50(|c| c.wall_us),
        )
    }

    /// `{set}: http ...` medians, in microseconds.
    pub(crate) fn http_line(&self, set: &str) -> String {
        format!(
            "{set}: http p50 us: wall {:.0}, engine total {:.0}, agent + HTTP (wall - total) {:.0}",
            self.p50(|c| c.wall_us),
            self.p50(|c| c.timing.total_us as f64),
            self.p50(|c| c.wall_us - c.timing.total_us as f64),
        )
    }
}

/// The engine's timings in an agent's `/v1/classify` answer.
pub(crate) fn timing_of(body: &[u8]) -> Option<TimingUs> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    serde_json::from_value(v.get("timing_us")?.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_timings_of_an_answer_and_takes_medians() {
        let body = br#"{"label":"x","timing_us":{"queue_us":3,"preprocess_us":10,"run_us":20,"postprocess_us":1,"total_us":40,"batch_size":1}}"#;
        let t = timing_of(body).expect("timings");
        assert_eq!((t.queue_us, t.total_us), (3, 40));
        assert!(timing_of(br#"{"label":"x"}"#).is_none());
        let calls = Calls::default();
        for wall in [50, 70, 60] {
            calls.push(Duration::from_micros(wall), t);
        }
        assert_eq!(calls.p50(|c| c.wall_us - c.timing.total_us as f64), 20.0);
        assert!(calls.http_line("s").ends_with("(wall - total) 20"));
    }
}
