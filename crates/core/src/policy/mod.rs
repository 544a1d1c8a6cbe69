//! Tier policy applied to what runs: the live placement of green's pods
//! across zones. Pure: takes snapshots, returns reports.

pub mod placement;
pub mod rules;

pub use placement::{NodeInfo, PlacementReport, PodInfo};

/// Fleet entries that reach one cluster (the same `kube-system` namespace
/// UID), each group as `a = b`: two contexts for one cluster count as one.
pub fn same_clusters(uids: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    let mut by_uid: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for (cluster, uid) in uids.iter().filter(|(_, uid)| !uid.is_empty()) {
        by_uid.entry(uid).or_default().push(cluster);
    }
    by_uid
        .into_values()
        .filter(|names| names.len() > 1)
        .map(|names| names.join(" = "))
        .collect()
}

/// Why a release may not act on clusters that are not distinct, if they are not.
pub fn not_distinct(uids: &std::collections::BTreeMap<String, String>) -> Option<String> {
    let same = same_clusters(uids);
    (!same.is_empty()).then(|| {
        format!(
            "fleet entries reach the same cluster ({}: one kube-system namespace UID); \
             a release needs distinct clusters, so point each entry at its own cluster",
            same.join(", ")
        )
    })
}

#[cfg(test)]
mod distinct_tests {
    use std::collections::BTreeMap;

    #[test]
    fn entries_reaching_one_cluster_are_found() {
        let uids = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(c, u)| (c.to_string(), u.to_string()))
                .collect()
        };
        assert!(super::not_distinct(&uids(&[("a", "1"), ("b", "2")])).is_none());
        assert!(super::not_distinct(&uids(&[("a", "1"), ("b", "")])).is_none());
        let why = super::not_distinct(&uids(&[("a", "1"), ("b", "2"), ("c", "1")])).unwrap();
        assert!(why.contains("a = c"), "{why}");
    }
}
