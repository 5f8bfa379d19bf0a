//! The round schedule and round statistics of the MQTT half of `tandem-bench queue`
//! ([`crate::mqtt`]): which client publishes when, each client's rate per round, and the
//! per-round ratios (agent / plain, and the control plain / plain) with their min and median.
//!
//! - Three clients: the plain rumqttc client (the reference), the agent's telemetry path, and
//!   a second plain rumqttc client (the control: the same code as the reference, so its ratio
//!   shows how far the broker and the machine alone move a round).
//! - A cycle is six legs: the three clients in an order rotated by the cycle number, then the
//!   same order mirrored (`P A C C A P`, `A C P P C A`, `C P A A P C`, ...). Each client's two
//!   legs sit symmetrically around the cycle's middle, so a load change that drifts linearly
//!   over it costs all three the same (ABBA for three), and no client is always first. A round
//!   is `cycles` consecutive cycles ([`round_schedule`]; three by default, so every client
//!   goes first once per round).
//! - A client's rate in a round: its messages over its legs' seconds.
//! - Judged: agent / plain against [`TARGET`] in every round, next to control / plain of the
//!   same round ([`verdict`]).
//! - Printing: [`table_rows`] (rows of `tandem-bench queue`'s table) and [`tail_lines`] (the
//!   rounds side by side, the summary, then the `mqtt-ratio:` line that stands just above the
//!   bench's last line).

use crate::mqtt::Report;

/// Who publishes in a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// The plain rumqttc client: the broker's limit, the reference of both ratios.
    Plain,
    /// The agent's telemetry path.
    Agent,
    /// A second plain rumqttc client: the control.
    Control,
}

/// Issue 16's target: the agent's path at >= 0.9x the plain client, in every round.
pub const TARGET: f64 = 0.9;

/// The six legs of cycle `cycle` (see the module's documentation).
pub fn schedule(cycle: u32) -> [Client; 6] {
    let base = [Client::Plain, Client::Agent, Client::Control];
    let r = cycle as usize % base.len();
    let o = [base[r], base[(r + 1) % 3], base[(r + 2) % 3]];
    [o[0], o[1], o[2], o[2], o[1], o[0]]
}

/// The legs of round `round` of `cycles` cycles each: the cycles `round * cycles ..`, so with
/// three cycles every client goes first once in every round.
pub fn round_schedule(round: u32, cycles: u32) -> Vec<Client> {
    let cycles = cycles.max(1);
    (round * cycles..(round + 1) * cycles)
        .flat_map(schedule)
        .collect()
}

/// One leg's measurement.
#[derive(Debug, Clone, Copy, Default)]
pub struct Leg {
    /// Messages acknowledged.
    pub messages: u64,
    /// Seconds, first offer to last acknowledgement.
    pub secs: f64,
    /// Seconds the producer spent waiting for room in a full outgoing queue.
    pub wait_secs: f64,
    /// Seconds the producer spent building and handing over messages (not waiting).
    pub busy_secs: f64,
    /// Offers refused by a full queue (the agent only; the plain client waits instead).
    pub refused: u64,
}

/// One client's totals over its rounds.
#[derive(Debug, Clone, Default)]
pub struct Rate {
    /// Messages acknowledged.
    pub messages: u64,
    /// Seconds, first offer to last acknowledgement, summed over the legs.
    pub secs: f64,
    /// Seconds the producer waited for room, summed.
    pub wait_secs: f64,
    /// Seconds the producer was busy building and handing over messages, summed.
    pub busy_secs: f64,
    /// Offers refused by a full queue, summed.
    pub refused: u64,
    /// Each round's messages/s (both legs of the round).
    pub rounds: Vec<f64>,
    /// The current round's messages and seconds, until [`Rate::end_round`].
    open: (u64, f64),
}

impl Rate {
    /// Adds a leg to the current round.
    pub fn add(&mut self, leg: Leg) {
        self.messages += leg.messages;
        self.secs += leg.secs;
        self.wait_secs += leg.wait_secs;
        self.busy_secs += leg.busy_secs;
        self.refused += leg.refused;
        self.open.0 += leg.messages;
        self.open.1 += leg.secs;
    }

    /// Closes the current round (its rate goes to [`Rate::rounds`]).
    pub fn end_round(&mut self) {
        let (n, s) = std::mem::take(&mut self.open);
        self.rounds.push(n as f64 / s.max(f64::EPSILON));
    }

    /// Messages per second over all rounds.
    pub fn per_s(&self) -> f64 {
        self.messages as f64 / self.secs.max(f64::EPSILON)
    }

    /// Producer microseconds per message outside waits (building and handing over).
    pub fn busy_us_per_msg(&self) -> f64 {
        self.busy_secs * 1e6 / self.messages.max(1) as f64
    }

    /// Share of the measured time the producer waited for room.
    pub fn wait_share(&self) -> f64 {
        self.wait_secs / self.secs.max(f64::EPSILON)
    }

    /// This client over `reference`, per round and overall.
    pub fn over(&self, reference: &Rate) -> Ratio {
        Ratio {
            rounds: self
                .rounds
                .iter()
                .zip(&reference.rounds)
                .map(|(a, b)| a / b.max(f64::EPSILON))
                .collect(),
            overall: self.per_s() / reference.per_s().max(f64::EPSILON),
        }
    }
}

/// A ratio of two clients' rates.
#[derive(Debug, Clone, Default)]
pub struct Ratio {
    /// Per round.
    pub rounds: Vec<f64>,
    /// Over all rounds (messages over seconds, summed).
    pub overall: f64,
}

impl Ratio {
    /// The lowest round (NaN with no rounds).
    pub fn min(&self) -> f64 {
        self.rounds
            .iter()
            .copied()
            .reduce(f64::min)
            .unwrap_or(f64::NAN)
    }

    /// The median round (the mean of the middle two for an even count; NaN with none).
    pub fn median(&self) -> f64 {
        crate::stats::median(&mut self.rounds.clone())
    }

    /// `a, b, c` with two decimals.
    pub fn list(&self) -> String {
        join(&self.rounds, 2)
    }
}

/// Numbers with `decimals` decimals, comma-separated.
pub fn join(v: &[f64], decimals: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table rows: each client's rate, then both ratios per round with min and median.
pub fn table_rows(r: &Report, rss_mib: f64) -> Vec<String> {
    let mib = |rate: f64| rate * r.payload_bytes as f64 / (1 << 20) as f64;
    let mut rows: Vec<String> = [
        ("agent telemetry path", &r.agent),
        ("plain rumqttc (broker limit)", &r.plain),
        ("control: a second plain rumqttc", &r.control),
    ]
    .into_iter()
    .map(|(who, x)| {
        format!(
            "| MQTT QoS 1 {} B: {who} | {} | {:.3} | {:.0} | {:.1} | {rss_mib:.1} |",
            r.payload_bytes,
            x.messages,
            x.secs,
            x.per_s(),
            mib(x.per_s())
        )
    })
    .collect();
    for (what, q) in [
        ("agent / plain", r.agent.over(&r.plain)),
        ("control / plain (noise)", r.control.over(&r.plain)),
    ] {
        rows.push(format!(
            "| MQTT {what}: overall {:.2}, per round [{}], min {:.2}, median {:.2} | - | - | - | - | - |",
            q.overall,
            q.list(),
            q.min(),
            q.median()
        ));
    }
    rows
}

/// Whether agent / plain reached [`TARGET`] in every round; otherwise each round below it,
/// with control / plain of the same round (what the broker and the machine alone did then).
pub fn verdict(agent: &Ratio, control: &Ratio) -> String {
    let below: Vec<String> = agent
        .rounds
        .iter()
        .zip(&control.rounds)
        .enumerate()
        .filter(|(_, (a, _))| **a < TARGET)
        .map(|(i, (a, c))| format!("round {} {a:.2} (control {c:.2})", i + 1))
        .collect();
    if agent.rounds.is_empty() {
        "no rounds".to_string()
    } else if below.is_empty() {
        format!("met in all {} rounds", agent.rounds.len())
    } else {
        format!(
            "NOT met in {} of {} rounds: {}",
            below.len(),
            agent.rounds.len(),
            below.join(", ")
        )
    }
}

/// The rounds side by side (both ratios, the three rates), a table of its own.
fn round_table(r: &Report) -> Vec<String> {
    let (agent, control) = (r.agent.over(&r.plain), r.control.over(&r.plain));
    let mut lines = vec![
        format!(
            "MQTT per round (target: agent / plain >= {TARGET:.2} in every round; control / plain is the same code as plain, so its distance from 1.00 is the noise of that round):"
        ),
        "| round | agent / plain | control / plain | agent msg/s | plain msg/s | control msg/s |"
            .to_string(),
        "|---|---|---|---|---|---|".to_string(),
    ];
    for i in 0..agent.rounds.len() {
        let rate = |x: &Rate| x.rounds.get(i).copied().unwrap_or(f64::NAN);
        lines.push(format!(
            "| {} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} |",
            i + 1,
            agent.rounds[i],
            control.rounds.get(i).copied().unwrap_or(f64::NAN),
            rate(&r.agent),
            rate(&r.plain),
            rate(&r.control)
        ));
    }
    lines
}

/// The rounds side by side, the summary line (rates per round, where the producers' time
/// went, refusals), then the `mqtt-ratio:` line.
pub fn tail_lines(r: &Report, leg_messages: u64, cycles: u32) -> Vec<String> {
    let (agent, control) = (r.agent.over(&r.plain), r.control.over(&r.plain));
    let each = |f: &dyn Fn(&Rate) -> String| {
        format!(
            "agent {}, plain {}, control {}",
            f(&r.agent),
            f(&r.plain),
            f(&r.control)
        )
    };
    let mut lines = round_table(r);
    lines.extend([
        format!(
            "MQTT ({}; TLS 1.3 with client certificates, QoS 1, {} B telemetry): msg/s {}; per round {}; producer waiting for room {} of the time; producer busy µs/msg {}; {} offers found the agent's queue full and waited for room",
            r.broker,
            r.payload_bytes,
            each(&|x| format!("{:.0}", x.per_s())),
            each(&|x| format!("[{}]", join(&x.rounds, 0))),
            each(&|x| format!("{:.0}%", 100.0 * x.wait_share())),
            each(&|x| format!("{:.2}", x.busy_us_per_msg())),
            r.agent.refused
        ),
        format!(
            "mqtt-ratio: agent/plain median {:.2} min {:.2}; control plain/plain median {:.2} min {:.2}; {} rounds, {} messages per client and round; target >= {TARGET:.2} in every round: {}",
            agent.median(),
            agent.min(),
            control.median(),
            control.min(),
            agent.rounds.len(),
            2 * leg_messages * u64::from(cycles.max(1)),
            verdict(&agent, &control)
        ),
    ]);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use Client::*;

    #[test]
    fn every_round_is_a_palindrome_and_the_first_client_rotates() {
        let firsts: Vec<_> = (0..3).map(|r| schedule(r)[0]).collect();
        assert_eq!(firsts, [Plain, Agent, Control]);
        for r in 0..6 {
            let s = schedule(r);
            for i in 0..3 {
                assert_eq!(s[i], s[5 - i], "round {r}: {s:?}");
            }
            for c in [Plain, Agent, Control] {
                assert_eq!(s.iter().filter(|x| **x == c).count(), 2, "round {r}: {s:?}");
            }
        }
        assert_eq!(schedule(0), [Plain, Agent, Control, Control, Agent, Plain]);
        assert_eq!(schedule(3), schedule(0));
        // Three cycles a round: each client first once, six legs each.
        for round in 0..3 {
            let legs = round_schedule(round, 3);
            assert_eq!(legs.len(), 18);
            let firsts: Vec<_> = legs.chunks(6).map(|c| c[0]).collect();
            assert_eq!(firsts, [Plain, Agent, Control], "round {round}");
            for c in [Plain, Agent, Control] {
                assert_eq!(legs.iter().filter(|x| **x == c).count(), 6);
            }
        }
        assert_eq!(round_schedule(2, 1), schedule(2));
        assert_eq!(round_schedule(1, 0), schedule(1));
    }

    #[test]
    fn the_verdict_names_each_round_below_the_target_with_its_control() {
        let ratio = |rounds: &[f64]| Ratio {
            rounds: rounds.to_vec(),
            overall: 1.0,
        };
        let control = ratio(&[1.0, 0.86, 1.02]);
        assert_eq!(
            verdict(&ratio(&[0.95, 0.90, 1.1]), &control),
            "met in all 3 rounds"
        );
        assert_eq!(
            verdict(&ratio(&[0.95, 0.85, 0.89]), &control),
            "NOT met in 2 of 3 rounds: round 2 0.85 (control 0.86), round 3 0.89 (control 1.02)"
        );
        assert_eq!(verdict(&ratio(&[]), &ratio(&[])), "no rounds");
    }

    #[test]
    fn rounds_pool_both_legs_and_ratios_pair_rounds() {
        let leg = |messages, secs| Leg {
            messages,
            secs,
            ..Leg::default()
        };
        let (mut a, mut p) = (Rate::default(), Rate::default());
        // Round 1: agent 100 in 1 s + 100 in 3 s = 50/s; plain 200 in 2 s = 100/s.
        a.add(leg(100, 1.0));
        a.add(leg(100, 3.0));
        p.add(leg(100, 1.0));
        p.add(leg(100, 1.0));
        a.end_round();
        p.end_round();
        // Round 2: both 100/s; round 3: agent 90/s, plain 100/s.
        for n in [100, 90] {
            a.add(leg(n, 1.0));
            p.add(leg(100, 1.0));
            a.end_round();
            p.end_round();
        }
        assert_eq!(a.rounds, [50.0, 100.0, 90.0]);
        let q = a.over(&p);
        assert_eq!(q.rounds, [0.5, 1.0, 0.9]);
        assert_eq!(q.min(), 0.5);
        assert_eq!(q.median(), 0.9);
        assert!(
            (q.overall - 390.0 / 6.0 / 100.0).abs() < 1e-12,
            "{}",
            q.overall
        );
        assert_eq!(q.list(), "0.50, 1.00, 0.90");
        let even = Ratio {
            rounds: vec![1.0, 0.8, 0.9, 1.2],
            overall: 1.0,
        };
        assert!((even.median() - 0.95).abs() < 1e-12);
        assert!(Ratio::default().median().is_nan());
    }
}
