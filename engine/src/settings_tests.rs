//! Unit tests of the engine settings: the accuracy gate's tolerance per variant.

use super::*;

#[test]
fn a_manifest_raises_the_tolerance_for_its_variant_up_to_the_cap() {
    let mut rt = RuntimeConfig::default();
    let src = "runtime.accuracy_max_abs_diff";
    assert_eq!(rt.accuracy_tolerance(None), (0.01, src));
    assert_eq!(rt.accuracy_tolerance(Some(0.005)), (0.01, src));
    assert_eq!(
        rt.accuracy_tolerance(Some(0.4)),
        (0.4, "the manifest's ep_max_abs_diff")
    );
    assert_eq!(
        rt.accuracy_tolerance(Some(5.0)),
        (1.0, "runtime.accuracy_max_abs_diff_cap")
    );
    // The operator holds every model to the default.
    rt.accuracy_max_abs_diff_cap = 0.01;
    assert_eq!(rt.accuracy_tolerance(Some(0.4)), (0.01, src));
    // A looser runtime value covers a tighter manifest.
    rt.accuracy_max_abs_diff = 2.0;
    assert_eq!(rt.accuracy_tolerance(Some(0.4)), (2.0, src));
}

#[test]
fn the_cap_must_be_positive() {
    let mut s = EngineSettings::default();
    s.runtime.accuracy_max_abs_diff_cap = 0.0;
    assert!(
        s.problems()
            .iter()
            .any(|p| p.contains("runtime.accuracy_max_abs_diff_cap must be")),
        "{:?}",
        s.problems()
    );
}
