//! `tandem-bench loop` (make bench-loop): one turn of the learning loop, measured on a shifted
//! stream, through the real hub and real agents ([`rig`]): Fashion-MNIST t10k under a
//! camera-like shift ([`stream`]), cut into four consecutive phases that never share an input:
//!
//! 1. **feedback**: the devices answer with the shipped edge at its manifest threshold; hard
//!    examples (every offloaded input) and shadow samples (a share of the confident ones)
//!    reach the hub, whose cloud model labels them as teacher. The hub calibrates the
//!    threshold on the feedback's calibration split and pushes it; the devices route with it.
//! 2. **report before**: new inputs at that threshold: the "before" figures.
//! 3. the hub trains a new edge head on the feedback's train split, gates it on the test split
//!    and the original set, signs it and rolls it out; the devices swap. **settle**: new
//!    inputs, answered by the new version, are its feedback; the hub calibrates the new
//!    version's threshold on them and pushes it.
//! 4. **report after**: new inputs again: the "after" figures.
//!
//! Every figure is on inputs sent after every fit that could have used them. Also a candidate
//! the gate refuses ([`refused`]: trained on wrongly labelled examples).
//!
//! Two scenarios, each on a fresh hub and fresh devices with the same stream: the teacher's
//! labels only, and an operator ([`review`]) who gives the true label of a stated share of
//! the examples after each feedback phase, through the console's correction path; the
//! corrections win over the teacher in the training and judge it in the calibration. Last
//! line: `loop: offload_before=X offload_after=Y accuracy_ratio=Z` (the ratio after the turn)
//! of the scenario with corrections (of the teacher-only one when the share is 0).

mod phase;
mod refused;
mod report;
mod review;
mod rig;
mod start;
mod stream;
mod text;

use anyhow::{Context as _, bail};
use rig::{Rig, Sampling, until};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use stream::{Item, MODEL};

/// Options.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The camera-like shift of the stream (`tandem_hub::eval::shift`: brightness:D,
    /// contrast:F, blur:SIGMA, noise:STD, jpeg:Q).
    #[arg(long, default_value = "brightness:0.15")]
    pub shift: String,
    /// Devices (agent daemons).
    #[arg(long, default_value_t = 2)]
    pub devices: usize,
    /// Inputs of the feedback phase (the shipped edge).
    #[arg(long, default_value_t = 3500)]
    pub feedback: usize,
    /// Inputs of each report phase (before and after).
    #[arg(long, default_value_t = 1000)]
    pub report: usize,
    /// Inputs of the settle phase (the new version's feedback for its threshold).
    #[arg(long, default_value_t = 2500)]
    pub settle: usize,
    /// Share of confident answers the agents send as shadow samples.
    #[arg(long, default_value_t = 0.5)]
    pub shadow_rate: f64,
    /// Seed of the stream's order.
    #[arg(long, default_value_t = 13)]
    pub seed: u64,
    /// Wrongly labelled examples the refused candidate is trained on.
    #[arg(long, default_value_t = 300)]
    pub refused_examples: usize,
    /// Train the edge's whole network (`train.whole_net = true`), not only its head.
    #[arg(long)]
    pub whole_net: bool,
    /// Share of the feedback an operator corrects with the true label (console corrections),
    /// in [0, 1]; a scenario of its own beside the teacher-only one (0: that one alone).
    #[arg(long, default_value_t = 0.15)]
    pub corrections: f64,
    /// Run the scenario with corrections alone (not the teacher-only one).
    #[arg(long)]
    pub corrections_only: bool,
    /// The text stream's options (and which streams run).
    #[command(flatten)]
    pub text: text::TextArgs,
}

/// Longest wait for feedback to arrive and be labelled, a threshold to reach the devices or
/// a rollout to finish.
const PATIENCE: Duration = Duration::from_secs(600);

/// Runs the benchmark.
pub fn run(a: &Args) -> anyhow::Result<()> {
    let repo = crate::procs::repo()?;
    if a.text.stream.text() {
        text::run(&repo, a)?;
    }
    if !a.text.stream.image() {
        return Ok(());
    }
    let stream = stream::load(&repo, &a.shift, a.seed)?;
    let need = a.feedback + 2 * a.report + a.settle;
    if !(0.0..=1.0).contains(&a.corrections) {
        bail!("--corrections must be a share in [0, 1]");
    }
    if need > stream.items.len() || a.feedback < a.refused_examples + 100 {
        bail!(
            "phases need {need} inputs of {} (and feedback > refused_examples + 100)",
            stream.items.len()
        );
    }
    let (fb, rest) = stream.items.split_at(a.feedback);
    let (before, rest) = rest.split_at(a.report);
    let (settle, rest) = rest.split_at(a.settle);
    let after = &rest[..a.report];
    println!(
        "# tandem-bench loop: {MODEL}, Fashion-MNIST t10k under {} (seed {}), {} devices; phases: feedback {}, report-before {}, settle {}, report-after {} (disjoint)",
        a.shift,
        a.seed,
        a.devices,
        fb.len(),
        before.len(),
        settle.len(),
        after.len()
    );
    let t = Instant::now();
    let cloud_before = stream::cloud_answers(&repo, MODEL, before)?;
    let cloud_after = stream::cloud_answers(&repo, MODEL, after)?;
    eprintln!("cloud-only answers in {:.0} s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let (train, target) = fb.split_at(a.refused_examples);
    let refused = refused::run(
        &repo,
        &stream.labels,
        train,
        &target[..target.len().min(500)],
        a.whole_net,
    )?;
    eprintln!(
        "refused candidate judged in {:.0} s",
        t.elapsed().as_secs_f64()
    );

    let scenarios = scenarios(
        &repo.join("models"),
        a,
        MODEL,
        &stream.items,
        &stream.labels,
        [fb, before, settle, after],
        [&cloud_before, &cloud_after],
    )?;
    report::print(a, &scenarios, Some(&refused), false);
    Ok(())
}

/// Runs the scenarios (teacher only; corrections on `a.corrections` of the feedback), each on
/// a fresh rig serving `model` from the models folder `models`, with the stream's `phases` (feedback, report-before, settle,
/// report-after) of `items` and the cloud model's answers to the two report phases.
fn scenarios(
    models: &std::path::Path,
    a: &Args,
    model: &'static str,
    items: &[Item],
    labels: &[String],
    phases: [&[Item]; 4],
    cloud: [&[usize]; 2],
) -> anyhow::Result<Vec<report::Scenario>> {
    let [_, before, _, after] = phases;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let sampling = Sampling {
        shadow_rate: a.shadow_rate,
        whole_net: a.whole_net,
    };
    let mut scenarios = Vec::new();
    let shares: &[f64] = if a.corrections > 0.0 && a.corrections_only {
        &[a.corrections]
    } else if a.corrections > 0.0 {
        &[0.0, a.corrections]
    } else {
        &[0.0]
    };
    for &share in shares {
        let t = Instant::now();
        let rig = Rig::start(models, model, a.devices, sampling)?;
        let mut reviewer = review::Reviewer::new(share, items, labels);
        let turn = rt.block_on(async {
            let r = turn(&rig, &mut reviewer, labels, phases).await;
            r.map_err(|e| anyhow::anyhow!("{e:#}\nhub log:\n{}", rig.hub_log_tail()))
        })?;
        eprintln!(
            "{model}: scenario with corrections on {share} of the feedback: {:.0} s",
            t.elapsed().as_secs_f64()
        );
        scenarios.push(report::Scenario {
            share,
            before: phase::figures(model, before, &turn.before, cloud[0], labels),
            after: phase::figures(model, after, &turn.after, cloud[1], labels),
            calibrations: turn.calibrations,
            decision: turn.decision,
            feedback: turn.feedback,
        });
    }
    Ok(scenarios)
}

/// What the turn gave.
struct Turn {
    before: Vec<phase::Answer>,
    after: Vec<phase::Answer>,
    calibrations: [Value; 2],
    decision: Value,
    feedback: Vec<report::FeedbackCount>,
}

async fn turn(
    rig: &Rig,
    reviewer: &mut review::Reviewer,
    labels: &[String],
    phases: [&[Item]; 4],
) -> anyhow::Result<Turn> {
    let [fb, before, settle, after] = phases;
    let mut feedback = Vec::new();
    let t = Instant::now();
    let answers = phase::send(rig, fb).await?;
    let base = answers
        .iter()
        .find(|a| !a.edge_version.is_empty())
        .map(|a| a.edge_version.clone())
        .context("no local answer in the feedback phase")?;
    let f = phase::figures(rig.model, fb, &answers, &vec![0; fb.len()], labels);
    eprintln!(
        "feedback phase: {} inputs in {:.0} s (edge {:.4}, offload {:.3} at the manifest threshold)",
        fb.len(),
        t.elapsed().as_secs_f64(),
        f.edge,
        f.offload
    );
    feedback.push(settled(rig, reviewer, "feedback").await?);
    let cal_before = calibrate(rig, &base).await?;

    let answers_before = phase::send(rig, before).await?;
    eprintln!("report-before phase sent");

    let decision = train(rig).await?;
    // Refused: the devices keep the shipped version, whose threshold is fitted again on
    // the larger feedback.
    let new = match decision["status"].as_str() {
        Some("rolled_out") => decision["candidate"]["version"]
            .as_str()
            .context("the decision names no version")?
            .to_string(),
        _ => base.clone(),
    };
    serving(rig, &new).await?;
    let t = Instant::now();
    let answers = phase::send(rig, settle).await?;
    let f = phase::figures(rig.model, settle, &answers, &vec![0; settle.len()], labels);
    anyhow::ensure!(
        f.versions.len() == 1 && f.versions.contains(&new),
        "the settle phase was answered by {:?}, not {new} alone; the devices' logs on versions: {:?}",
        f.versions,
        rig.agent_log_lines(&["rolling back", "version"])
    );
    eprintln!(
        "settle phase: {} inputs in {:.0} s on {new} (edge {:.4}, offload {:.3} at the old threshold)",
        settle.len(),
        t.elapsed().as_secs_f64(),
        f.edge,
        f.offload
    );
    feedback.push(settled(rig, reviewer, "settle").await?);
    let cal_after = calibrate(rig, &new).await?;
    let answers_after = phase::send(rig, after).await?;
    Ok(Turn {
        before: answers_before,
        after: answers_after,
        calibrations: [cal_before, cal_after],
        decision,
        feedback,
    })
}

/// Waits until every device serves `version` of the model and no other (`tandem_model_info`
/// on its `/metrics`): a rollout is finished at the hub when the devices report the install,
/// which can come before the engine answers with the new version.
async fn serving(rig: &Rig, version: &str) -> anyhow::Result<()> {
    let model = format!("model=\"{}\"", rig.model);
    let this = format!("version=\"{version}\"");
    for (i, agent) in rig.agents.iter().enumerate() {
        until(
            &format!(
                "device loop-{i:02} ({}) to serve {version} alone",
                agent.addr
            ),
            PATIENCE,
            || async {
                let info = "tandem_model_info";
                let all = rig
                    .metric(&agent.addr, info, &[&model, "variant=\"edge\""])
                    .await?;
                let new = rig
                    .metric(&agent.addr, info, &[&model, "variant=\"edge\"", &this])
                    .await?;
                Ok((new > 0.0 && all == new).then_some(()))
            },
        )
        .await?;
    }
    Ok(())
}

/// Waits until every device's outbox is empty and every example the hub holds has a label
/// (the teacher judged the shadow samples), then lets the operator review the new examples;
/// the device-side counts of what was sent.
async fn settled(
    rig: &Rig,
    reviewer: &mut review::Reviewer,
    phase: &str,
) -> anyhow::Result<report::FeedbackCount> {
    let t = Instant::now();
    let mut last = None;
    let (total, labelled) = loop {
        anyhow::ensure!(
            t.elapsed() < PATIENCE,
            "{phase}: feedback not delivered and labelled within {} s (last count {last:?})",
            PATIENCE.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut queued = 0.0;
        for agent in &rig.agents {
            queued += rig
                .metric(&agent.addr, "tandem_outbox_records", &[])
                .await?;
        }
        if queued > 0.0 {
            continue;
        }
        let counts = examples(rig).await?;
        if last == Some(counts) && counts.0 == counts.1 {
            break counts;
        }
        last = Some(counts);
    };
    let now = reviewer.review(rig).await?;
    let mut count = report::FeedbackCount {
        phase: phase.to_string(),
        examples: total,
        labelled,
        corrected: reviewer.corrected,
        hard: 0.0,
        shadow: 0.0,
    };
    for agent in &rig.agents {
        // Queued examples count the shadow samples too.
        let queued = rig
            .metric(&agent.addr, "tandem_feedback_examples_queued_total", &[])
            .await?;
        let shadow = rig
            .metric(&agent.addr, "tandem_feedback_shadow_samples_total", &[])
            .await?;
        count.hard += queued - shadow;
        count.shadow += shadow;
    }
    eprintln!(
        "{phase}: {total} examples at the hub, all labelled, after {:.0} s; {now} corrected by the operator",
        t.elapsed().as_secs_f64()
    );
    Ok(count)
}

/// (examples, labelled examples) of the model at the hub.
async fn examples(rig: &Rig) -> anyhow::Result<(u64, u64)> {
    let all = rig.examples().await?;
    let labelled = all.iter().filter(|e| !e["label"].is_null()).count();
    Ok((all.len() as u64, labelled as u64))
}

/// Calibrates `version`'s threshold from the feedback, waits until every device routes with
/// it; the calibration.
async fn calibrate(rig: &Rig, version: &str) -> anyhow::Result<Value> {
    let (status, c) = rig
        .hub_post(
            "/v1/calibrations",
            &json!({"model": rig.model, "version": version}),
        )
        .await?;
    if status != 201 {
        bail!("calibration of {version}: {status}: {c}");
    }
    let t = c["threshold"].as_f64().context("no threshold")?;
    until(
        &format!("every device routing {version} at {t}"),
        PATIENCE,
        || async {
            for agent in &rig.agents {
                let v = rig
                    .metric(
                        &agent.addr,
                        "tandem_routing_threshold",
                        &[
                            &format!("model=\"{}\"", rig.model),
                            "source=\"hub-calibrated\"",
                        ],
                    )
                    .await?;
                if (v - t).abs() > 1e-6 {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
    .await?;
    eprintln!("calibrated {version}: threshold {t:.4}, on every device");
    Ok(c)
}

/// A training turn on the hub; waits for the rollout of a passed candidate to finish. The
/// decision, refused or rolled out.
async fn train(rig: &Rig) -> anyhow::Result<Value> {
    let t = Instant::now();
    let (status, d) = rig
        .hub_post("/v1/train", &json!({"model": rig.model}))
        .await?;
    if !(200..300).contains(&status) {
        bail!("training: {status}: {d}");
    }
    let d = if d["candidate"].is_object() {
        d
    } else {
        // A job (202, `GET /v1/train/jobs/{id}`): polled until it ends, then its decision.
        let path = format!("/v1/train/jobs/{}", d["id"].as_str().context("no job id")?);
        let job = until("the training job to end", PATIENCE, || async {
            let j = rig.hub_get(&path).await?;
            Ok((!matches!(j["state"].as_str(), Some("queued" | "running"))).then_some(j))
        })
        .await?;
        let Some(id) = job["decision"].as_str() else {
            bail!("training job failed: {}", job["error"]);
        };
        rig.hub_get(&format!("/v1/train/decisions/{id}")).await?
    };
    eprintln!(
        "trained and gated in {:.0} s: {}",
        t.elapsed().as_secs_f64(),
        d["status"]
    );
    if d["status"] != "rolled_out" {
        eprintln!("the gate refused the loop's candidate: {}", d["reasons"]);
        return Ok(d);
    }
    let id = d["rollout"].as_str().context("no rollout")?;
    let t = Instant::now();
    let phase = until("the rollout to finish", PATIENCE, || async {
        let r = rig.hub_get(&format!("/v1/rollouts/{id}")).await?;
        let state = r["phase"]["state"].as_str().unwrap_or("").to_string();
        Ok((state != "running" && !state.is_empty()).then_some(state))
    })
    .await?;
    if phase != "succeeded" {
        bail!("rollout {id}: {phase}");
    }
    eprintln!(
        "rolled out to every device in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    Ok(d)
}
