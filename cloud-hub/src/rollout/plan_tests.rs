//! The rollout state machine against a simulated fleet.

use super::plan::*;
use std::collections::BTreeMap;

fn spec(canary: u8) -> Spec {
    Spec {
        model: "vision-fashion".into(),
        version: "1.0.1".into(),
        canary_pct: canary,
        stages_pct: vec![100],
        labels: BTreeMap::new(),
        success_share: 0.9,
        failure_share: 0.2,
        stage_timeout_ms: 60_000,
        resend_after_ms: 10_000,
        rollback: false,
    }
}

fn fleet(n: usize) -> Vec<DeviceView> {
    (0..n)
        .map(|i| DeviceView {
            device: format!("cam-{i:02}"),
            labels: [(
                "group".to_string(),
                if i.is_multiple_of(2) {
                    "north"
                } else {
                    "south"
                }
                .to_string(),
            )]
            .into(),
            online: true,
            version: Some("1.0.0".into()),
            updates: Vec::new(),
            reported_ms: 0,
        })
        .collect()
}

fn commanded(actions: &[Action]) -> Vec<String> {
    actions.iter().map(|Action::Command(d)| d.clone()).collect()
}

fn report(devices: &mut [DeviceView], names: &[String], state: &str, reason: Option<&str>) {
    for d in devices.iter_mut().filter(|d| names.contains(&d.device)) {
        d.updates = vec![("1.0.1".into(), state.into(), reason.map(str::to_string))];
        d.reported_ms = u64::MAX; // taken in after every command
        if state == "active" {
            d.version = Some("1.0.1".into());
        }
    }
}

#[test]
fn a_canary_then_everyone() {
    let mut devices = fleet(10);
    let mut r = Rollout::new("vf-1".into(), spec(20), 0);
    let canary = commanded(&r.step(&devices, 0));
    assert_eq!(canary.len(), 2, "20% of 10");
    assert_eq!(r.phase, Phase::Running { stage: 0 });
    // Nothing new until they answer.
    assert!(r.step(&devices, 1000).is_empty());
    report(&mut devices, &canary, "active", None);
    let rest = commanded(&r.step(&devices, 2000));
    assert_eq!(r.phase, Phase::Running { stage: 1 });
    assert_eq!(rest.len(), 8);
    assert!(rest.iter().all(|d| !canary.contains(d)));
    // 8 of 10 active is below 90%: still running; 9 of 10 is enough.
    report(&mut devices, &rest[..6], "active", None);
    r.step(&devices, 3000);
    assert_eq!(r.phase, Phase::Running { stage: 1 });
    report(&mut devices, &rest[6..7], "active", None);
    r.step(&devices, 4000);
    assert_eq!(r.phase, Phase::Succeeded);
    assert!(r.finished());
    assert!(r.step(&devices, 5000).is_empty());
}

#[test]
fn a_failing_canary_halts_the_rollout() {
    let mut devices = fleet(10);
    let mut r = Rollout::new("vf-2".into(), spec(20), 0);
    let canary = commanded(&r.step(&devices, 0));
    report(
        &mut devices,
        &canary[..1],
        "rolled_back",
        Some("confidence"),
    );
    r.step(&devices, 1000);
    match &r.phase {
        Phase::Halted { reason } => {
            assert!(
                reason.contains("1 of 2 devices failed (confidence)"),
                "{reason}"
            );
        }
        other => panic!("expected a halt, got {other:?}"),
    }
    assert!(
        r.step(&devices, 2000).is_empty(),
        "no device is commanded after a halt"
    );
    assert_eq!(
        r.targets.len(),
        2,
        "the rest of the fleet was never touched"
    );
}

#[test]
fn a_refusal_counts_when_a_later_report_about_another_version_follows_it() {
    // The device refused 1.0.1, then the watch window of the version it serves ended: both
    // reports travel in its telemetry, newest last, and the rollout of 1.0.1 sees the refusal.
    let mut devices = fleet(1);
    let mut spec = spec(100);
    spec.stages_pct = vec![];
    let mut r = Rollout::new("vf-9".into(), spec, 0);
    assert_eq!(commanded(&r.step(&devices, 0)).len(), 1);
    devices[0].updates = vec![
        (
            "1.0.1".into(),
            "rejected".into(),
            Some("selftest_failed: top-1 differs".into()),
        ),
        ("1.0.0".into(), "active".into(), None),
    ];
    devices[0].reported_ms = 500;
    r.step(&devices, 1000);
    match &r.phase {
        Phase::Halted { reason } => assert!(reason.contains("selftest_failed"), "{reason}"),
        other => panic!("expected a halt, got {other:?}"),
    }
}

#[test]
fn a_refusal_left_from_an_earlier_attempt_does_not_fail_a_new_rollout() {
    // The device refused 1.0.1 once (a download cut, say); the telemetry that says so was
    // taken in at 500, before this rollout commanded it at 1000.
    let mut devices = fleet(1);
    devices[0].updates = vec![("1.0.1".into(), "rejected".into(), Some("download".into()))];
    devices[0].reported_ms = 500;
    let mut spec = spec(100);
    spec.stages_pct = vec![];
    let mut r = Rollout::new("vf-10".into(), spec, 1000);
    assert_eq!(commanded(&r.step(&devices, 1000)).len(), 1);
    r.step(&devices, 1200);
    assert_eq!(r.phase, Phase::Running { stage: 0 }, "{:?}", r.targets);
    // Its next telemetry, after the command: it tried again and the version serves.
    devices[0].updates = vec![("1.0.1".into(), "active".into(), None)];
    devices[0].version = Some("1.0.1".into());
    devices[0].reported_ms = 1300;
    r.step(&devices, 1400);
    assert_eq!(r.phase, Phase::Succeeded, "{:?}", r.targets);
}

#[test]
fn labels_select_the_targets() {
    let mut s = spec(100);
    s.labels = [("group".to_string(), "north".to_string())].into();
    let devices = fleet(10);
    let mut r = Rollout::new("vf-3".into(), s, 0);
    let got = commanded(&r.step(&devices, 0));
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|d| {
        let i: usize = d[4..].parse().expect("index");
        i.is_multiple_of(2)
    }));
}

#[test]
fn a_silent_stage_times_out_and_offline_devices_wait() {
    let mut devices = fleet(4);
    devices[0].online = false;
    devices[1].online = false;
    let mut r = Rollout::new("vf-4".into(), spec(100), 0);
    let first = commanded(&r.step(&devices, 0));
    assert_eq!(first.len(), 2, "only the online ones");
    devices[0].online = true;
    assert_eq!(
        commanded(&r.step(&devices, 1000)).len(),
        1,
        "the one that came back"
    );
    assert_eq!(
        commanded(&r.step(&devices, 12_000)).len(),
        3,
        "told again after resend_after_ms"
    );
    r.step(&devices, 61_000);
    assert!(
        matches!(&r.phase, Phase::Halted { reason } if reason.contains("timed out with 0 of 4")),
        "{:?}",
        r.phase
    );
}

#[test]
fn pause_resume_and_abort() {
    let devices = fleet(10);
    let mut r = Rollout::new("vf-5".into(), spec(20), 0);
    r.step(&devices, 0);
    r.pause().expect("pause");
    assert!(
        r.step(&devices, 100_000).is_empty(),
        "paused: no commands, no timeout"
    );
    assert!(r.pause().is_err());
    r.resume(100_000).expect("resume");
    assert_eq!(r.phase, Phase::Running { stage: 0 });
    r.step(&devices, 150_000);
    assert_eq!(
        r.phase,
        Phase::Running { stage: 0 },
        "the stage clock restarted"
    );
    r.abort().expect("abort");
    assert_eq!(r.phase, Phase::Aborted);
    assert!(r.abort().is_err() && r.resume(0).is_err());
}

#[test]
fn bad_specs_list_every_problem() {
    let mut s = spec(0);
    s.stages_pct = vec![50, 40];
    s.success_share = 1.5;
    let p = s.problems();
    assert_eq!(p.len(), 4, "{p:?}");
    assert!(spec(10).problems().is_empty());
    assert!(
        spec(100).problems().is_empty(),
        "everyone at once, with the default stages"
    );
    assert_eq!(spec(100).stages(), [100]);
    let mut three = spec(10);
    three.stages_pct = vec![50, 100];
    assert_eq!(three.stages(), [10, 50, 100]);
}

#[test]
fn after_success_latecomers_get_the_version() {
    let mut devices = fleet(4);
    devices[3].online = false;
    let mut s = spec(100);
    s.success_share = 0.75;
    let mut r = Rollout::new("vf-6".into(), s, 0);
    let first = commanded(&r.step(&devices, 0));
    assert_eq!(first.len(), 3);
    report(&mut devices, &first, "active", None);
    r.step(&devices, 1000);
    assert_eq!(r.phase, Phase::Succeeded);
    assert!(
        r.reconcile(&devices, 2000).is_empty(),
        "the latecomer is offline"
    );
    devices[3].online = true;
    assert_eq!(commanded(&r.reconcile(&devices, 3000)), ["cam-03"]);
    assert!(
        r.reconcile(&devices, 4000).is_empty(),
        "not again before resend_after_ms"
    );
    // A device that rolled the version back is left alone.
    report(
        &mut devices,
        &["cam-03".to_string()],
        "rolled_back",
        Some("latency"),
    );
    assert!(r.reconcile(&devices, 60_000).is_empty());
}

#[test]
fn a_rollback_targets_the_devices_on_a_newer_version() {
    // cam-00..03 took 1.0.1 (a bad promotion), cam-04/05 still run 1.0.0, cam-06 runs 0.9.0.
    let mut devices = fleet(7);
    for d in &mut devices[..4] {
        d.version = Some("1.0.1".into());
    }
    devices[6].version = Some("0.9.0".into());
    let mut s = spec(50);
    s.version = "1.0.0".into();
    s.rollback = true;
    let mut r = Rollout::new("vf-7".into(), s, 0);
    let canary = commanded(&r.step(&devices, 0));
    assert_eq!(canary.len(), 2, "50% of the 4 on a newer version");
    assert!(
        canary
            .iter()
            .all(|d| ["cam-00", "cam-01", "cam-02", "cam-03"].contains(&d.as_str())),
        "{canary:?}"
    );
    // Rolled back, they still count (they now run the version and stay targets).
    for d in devices.iter_mut().filter(|d| canary.contains(&d.device)) {
        d.version = Some("1.0.0".into());
        d.updates = vec![("1.0.0".into(), "active".into(), None)];
    }
    let rest = commanded(&r.step(&devices, 1000));
    assert_eq!(r.phase, Phase::Running { stage: 1 });
    assert_eq!(rest.len(), 2, "{rest:?}");
    assert!(rest.iter().all(|d| !canary.contains(d)));
    for d in devices.iter_mut().filter(|d| rest.contains(&d.device)) {
        d.version = Some("1.0.0".into());
    }
    r.step(&devices, 2000);
    assert_eq!(r.phase, Phase::Succeeded);
    assert_eq!(r.targets.len(), 4, "cam-04..06 were never touched");

    // Nothing newer anywhere: nothing to roll back, the stage times out saying so.
    let mut s = spec(100);
    s.version = "1.0.0".into();
    s.rollback = true;
    let mut idle = Rollout::new("vf-8".into(), s, 0);
    assert!(idle.step(&fleet(3), 0).is_empty());
    idle.step(&fleet(3), 61_000);
    assert!(
        matches!(&idle.phase, Phase::Halted { reason } if reason.contains("serves a newer version")),
        "{:?}",
        idle.phase
    );
    // A rollback needs a version it can compare.
    let mut odd = spec(100);
    odd.version = "latest".into();
    odd.rollback = true;
    assert_eq!(odd.problems().len(), 1, "{:?}", odd.problems());
}
