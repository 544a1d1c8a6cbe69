//! Property tests: no input a user or a server can produce makes cutover
//! panic — Release and policy files, freeze windows, exposition text, and
//! Prometheus API responses only ever give clear errors.

use cutover::gates::providers::{prometheus, scrape};
use cutover::spec::release::ReleaseDocument;
use cutover::spec::{Fleet, Source, TierPolicyFile};
use proptest::prelude::*;

const RELEASE: &str = include_str!("../examples/checkout/release.yaml");

/// Text close to valid: a real document with a slice cut out or replaced.
fn mangled(base: &'static str) -> impl Strategy<Value = String> {
    (0..base.len(), 0..64usize, "[ -~\n\t]{0,12}").prop_map(move |(at, cut, with)| {
        let at = (0..=at)
            .rev()
            .find(|i| base.is_char_boundary(*i))
            .unwrap_or(0);
        let end = (at + cut..=base.len())
            .find(|i| base.is_char_boundary(*i))
            .unwrap_or(base.len());
        format!("{}{with}{}", &base[..at], &base[end..])
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn release_files_never_panic(text in mangled(RELEASE)) {
        let src = Source::new("release.yaml", &text);
        if let Err(e) = src.decode::<ReleaseDocument>() {
            prop_assert!(e.to_string().starts_with("release.yaml"));
        }
    }

    #[test]
    fn policy_and_fleet_files_never_panic(
        tiers in mangled(cutover::spec::policy::BUILTIN_TIERS),
        fleet in mangled(include_str!("../examples/checkout/fleet.yaml")),
    ) {
        let _ = TierPolicyFile::parse("tiers.yaml", &tiers);
        let _ = Fleet::parse("fleet.yaml", &fleet);
    }

    #[test]
    fn freeze_windows_never_panic(zone in "[A-Za-z/_+-]{0,20}", from in "[0-9:a-z ]{0,8}", to in "[0-9:A-Za-z ]{0,10}") {
        let text = format!("apiVersion: cutover.dev/v1alpha1\nkind: FreezeWindows\nwindows:\n  - name: w\n    reason: r\n    timeZone: \"{zone}\"\n    weekly:\n      from: \"{from}\"\n      to: \"{to}\"\n");
        let _ = cutover::freeze::window::parse("freezes.yaml", &text);
    }

    #[test]
    fn exposition_text_never_panics(lines in proptest::collection::vec("[a-z_:{}=\",.0-9 #\\\\+-]{0,40}", 0..12)) {
        let text = lines.join("\n");
        let at = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        if let Ok(s) = scrape::parse(&text, at) {
            let q: cutover::spec::gates::ScrapeQuery = Source::new("q", "measure: errorRatio\nmetric: x\n").decode().unwrap();
            let r = scrape::read(&s, &q, &Default::default(), at);
            let _ = scrape::compute(&q, &scrape::Reading::default(), &r);
        }
    }

    #[test]
    fn prometheus_responses_never_panic(status in 100u16..600, body in "[\\[\\]{}\":,a-zA-Z0-9.+ -]{0,80}") {
        let _ = prometheus::decode(status, body.as_bytes());
    }

    #[test]
    fn prometheus_envelopes_never_panic(
        result_type in "(vector|matrix|scalar|string|bogus)",
        value in "(\"1\"|\"NaN\"|\"+Inf\"|\"-Inf\"|\"x\"|1|null|\\[\\]|\\{\\})",
    ) {
        let body = format!(r#"{{"status":"success","data":{{"resultType":"{result_type}","result":[{{"metric":{{}},"value":[1,{value}],"values":[[1,{value}]]}}]}}}}"#);
        let _ = prometheus::decode(200, body.as_bytes());
        let scalar = format!(r#"{{"status":"success","data":{{"resultType":"{result_type}","result":[1,{value}]}}}}"#);
        let _ = prometheus::decode(200, scalar.as_bytes());
    }
}
