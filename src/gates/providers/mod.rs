//! Metric providers: the Prometheus HTTP API, a scraped text endpoint, and
//! cluster health from the Kubernetes API (via the watch caches).

pub mod health;
pub mod prometheus;
pub mod scrape;

/// Replaces `{{app}}`, `{{version}}`, `{{colour}}`, `{{cluster}}` and `{{namespace}}`.
pub fn template(text: &str, vars: &[(&str, &str)]) -> String {
    let mut out = text.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    out
}
