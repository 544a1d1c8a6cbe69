//! The fleet file: the clusters cutover knows, how to reach them, their zones
//! and their share of global traffic. Releases name clusters from here.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::quantity::Percent;
use super::source::{InputErrors, Source};

/// `fleet.yaml`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fleet {
    pub api_version: String,
    pub kind: String,
    /// The cluster that holds Release objects, their state and their leases.
    pub home: String,
    pub clusters: Vec<FleetCluster>,
    /// Only for simulated fleets: fleet time runs `timeScale` times faster than
    /// the wall clock from `origin`, so drivers and the simulation agree on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<FleetClock>,
    /// Where release and freeze events are sent (webhooks, Slack).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<super::notify::Receiver>,
}

/// A scaled clock shared by a simulated fleet and the drivers that use it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FleetClock {
    pub origin: jiff::Timestamp,
    pub time_scale: f64,
    /// Fleet time at the origin, when it is not the origin itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<jiff::Timestamp>,
}

/// One cluster of the fleet.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FleetCluster {
    pub name: String,
    /// Kubeconfig context the CLI uses to reach it.
    #[serde(default)]
    pub context: Option<String>,
    /// Secret holding a kubeconfig for it, used by the in-cluster controller.
    #[serde(default)]
    pub kubeconfig_secret: Option<SecretKeyRef>,
    pub region: String,
    /// Availability zones the cluster declares (`topology.kubernetes.io/zone` values).
    pub zones: Vec<String>,
    /// Physical identity of each zone name (zone names are not comparable across
    /// cloud accounts); a zone missing here is its own identity.
    #[serde(default)]
    pub physical_zones: BTreeMap<String, String>,
    /// Share of the service's global traffic this cluster carries.
    pub traffic_share: Percent,
    /// The Prometheus server that monitors this cluster (for `prometheus` gates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<String>,
    /// A Prometheus text endpoint with the app's metrics in this cluster (for
    /// `scrape` gates); templated like queries, e.g. `…/metrics?app={{app}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_url: Option<String>,
}

/// A key of a Secret in the controller's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    pub name: String,
    #[serde(default = "default_kubeconfig_key")]
    pub key: String,
}

fn default_kubeconfig_key() -> String {
    "kubeconfig".to_string()
}

impl Fleet {
    /// Parses and checks a fleet file; every problem is reported with its place.
    pub fn parse(file: &str, text: &str) -> Result<Fleet, InputErrors> {
        let src = Source::new(file, text);
        let fleet: Fleet = src.decode().map_err(|e| InputErrors(vec![e]))?;
        let mut errors = Vec::new();
        if fleet.api_version != super::API_VERSION {
            errors.push(src.error_at(
                "apiVersion",
                format!(
                    "expected {:?}, got {:?}",
                    super::API_VERSION,
                    fleet.api_version
                ),
            ));
        }
        if fleet.kind != "Fleet" {
            errors.push(src.error_at("kind", format!("expected \"Fleet\", got {:?}", fleet.kind)));
        }
        if fleet.clusters.is_empty() {
            errors.push(src.error_at("clusters", "at least one cluster is required"));
        }
        let mut seen = BTreeSet::new();
        let mut total = 0u32;
        for (i, c) in fleet.clusters.iter().enumerate() {
            let at = format!("clusters[{i}]");
            if let Err(e) = super::check_dns_label(&c.name) {
                errors.push(src.error_at(&format!("{at}.name"), e));
            }
            if !seen.insert(c.name.as_str()) {
                errors.push(src.error_at(
                    &format!("{at}.name"),
                    format!(
                        "cluster {:?} is listed twice; cluster names must be unique",
                        c.name
                    ),
                ));
            }
            // The home cluster may name neither: the controller runs there and
            // reaches it through its service account.
            if c.context.is_none() && c.kubeconfig_secret.is_none() && c.name != fleet.home {
                errors.push(src.error_at(
                    &at,
                    "say how to reach the cluster: set `context` (a kubeconfig context) or `kubeconfigSecret` (only the home cluster may set neither)",
                ));
            }
            if c.zones.is_empty() {
                errors.push(src.error_at(
                    &format!("{at}.zones"),
                    "list the availability zones the cluster runs in (topology.kubernetes.io/zone values)",
                ));
            }
            let mut zones = BTreeSet::new();
            for (j, z) in c.zones.iter().enumerate() {
                if !zones.insert(z) {
                    errors.push(src.error_at(
                        &format!("{at}.zones[{j}]"),
                        format!("zone {z:?} is listed twice"),
                    ));
                }
            }
            for z in c.physical_zones.keys() {
                if !zones.contains(z) {
                    errors.push(src.error_at(
                        &format!("{at}.physicalZones.{z}"),
                        format!(
                            "zone {z:?} is not one of the cluster's zones ({})",
                            c.zones.join(", ")
                        ),
                    ));
                }
            }
            // Two of a cluster's zones in one physical place would count as
            // two failure domains where there is one.
            let mut places: BTreeMap<&str, &str> = BTreeMap::new();
            for z in &c.zones {
                let place = c.physical_zone(z);
                if let Some(other) = places.insert(place, z) {
                    let field = if c.physical_zones.contains_key(z) {
                        format!("{at}.physicalZones.{z}")
                    } else {
                        format!("{at}.physicalZones.{other}")
                    };
                    errors.push(src.error_at(
                        &field,
                        format!(
                            "zones {other:?} and {z:?} map to one physical zone {place:?}: a cluster's zones must be distinct places, or it cannot lose one and keep the other"
                        ),
                    ));
                }
            }
            if c.traffic_share > Percent::HUNDRED {
                errors.push(src.error_at(&format!("{at}.trafficShare"), "must be at most 100%"));
            }
            total += c.traffic_share.basis_points();
        }
        if !fleet.clusters.is_empty() && !seen.contains(fleet.home.as_str()) {
            errors.push(src.error_at(
                "home",
                format!(
                    "home cluster {:?} is not one of the fleet's clusters",
                    fleet.home
                ),
            ));
        }
        if total != 0 && total != Percent::HUNDRED.basis_points() {
            errors.push(src.error_at(
                "clusters",
                format!(
                    "the clusters' trafficShare values add up to {}; they must add up to 100%",
                    Percent::from_basis_points(total)
                ),
            ));
        }
        errors.extend(super::notify::check(&src, &fleet.notifications));
        if let Some(clock) = &fleet.clock
            && !(clock.time_scale.is_finite() && clock.time_scale > 0.0)
        {
            errors.push(src.error_at("clock.timeScale", "must be a number above 0"));
        }
        if errors.is_empty() {
            Ok(fleet)
        } else {
            Err(InputErrors(errors))
        }
    }

    pub fn cluster(&self, name: &str) -> Option<&FleetCluster> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

impl FleetCluster {
    /// The physical zone a zone name stands for.
    pub fn physical_zone<'a>(&'a self, zone: &'a str) -> &'a str {
        self.physical_zones
            .get(zone)
            .map(String::as_str)
            .unwrap_or(zone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLEET: &str = "\
apiVersion: cutover.dev/v1alpha1
kind: Fleet
home: prod-a
clusters:
  - name: prod-a
    context: a
    region: eu-west-1
    zones: [eu-west-1a, eu-west-1b]
    trafficShare: 60%
  - name: prod-b
    context: b
    region: eu-central-1
    zones: [eu-central-1a]
    trafficShare: 30%
";

    #[test]
    fn shares_must_add_up() {
        let err = Fleet::parse("fleet.yaml", FLEET).unwrap_err().to_string();
        assert!(err.contains("fleet.yaml:4:1: field `clusters`"), "{err}");
        assert!(err.contains("add up to 90%"), "{err}");
        let ok = FLEET.replace("30%", "40%");
        assert_eq!(Fleet::parse("fleet.yaml", &ok).unwrap().clusters.len(), 2);
    }

    #[test]
    fn duplicate_names_and_unknown_home_are_refused() {
        let text = FLEET
            .replace("30%", "40%")
            .replace("name: prod-b", "name: prod-a")
            .replace("home: prod-a", "home: prod-c");
        let err = Fleet::parse("fleet.yaml", &text).unwrap_err().to_string();
        assert!(
            err.contains("field `clusters[1].name`: cluster \"prod-a\" is listed twice"),
            "{err}"
        );
        assert!(err.contains("fleet.yaml:3:1: field `home`"), "{err}");
    }

    #[test]
    fn two_zones_of_one_cluster_in_one_physical_zone_are_refused() {
        let base = FLEET.replace("30%", "40%");
        let (a, b) = ("eu-west-1a", "eu-west-1b");
        let text = base.replacen(
            "name: prod-a\n",
            &format!("name: prod-a\n    physicalZones:\n      {a}: az1\n      {b}: az1\n"),
            1,
        );
        let err = Fleet::parse("fleet.yaml", &text).unwrap_err().to_string();
        assert!(
            err.contains(&format!("field `clusters[0].physicalZones.{b}`"))
                && err.contains("map to one physical zone \"az1\""),
            "{err}"
        );
        // Mapping a zone onto another zone's name is the same mistake.
        let text = base.replacen(
            "name: prod-a\n",
            &format!("name: prod-a\n    physicalZones:\n      {a}: {b}\n"),
            1,
        );
        assert!(Fleet::parse("fleet.yaml", &text).is_err());
    }

    #[test]
    fn a_receiver_names_exactly_one_place_for_its_url_and_never_the_url() {
        let base = FLEET.replace("30%", "40%");
        let good = format!(
            "{base}notifications:\n  - name: chat\n    format: slack\n    url: {{file: /run/secrets/chat}}\n    events: [gateFailed, rolledBack]\n"
        );
        let fleet = Fleet::parse("fleet.yaml", &good).unwrap();
        assert_eq!(fleet.notifications[0].name, "chat");
        let both = format!(
            "{base}notifications:\n  - name: chat\n    url: {{file: /f, secretKeyRef: {{name: s, key: k}}}}\n"
        );
        let err = Fleet::parse("fleet.yaml", &both).unwrap_err().to_string();
        assert!(
            err.contains("field `notifications[0].url`") && err.contains("exactly one"),
            "{err}"
        );
        let inline =
            format!("{base}notifications:\n  - name: chat\n    url: https://hooks.example/x\n");
        assert!(
            Fleet::parse("fleet.yaml", &inline).is_err(),
            "a URL written inline is refused"
        );
        let twice = format!(
            "{base}notifications:\n  - name: chat\n    url: {{file: /f}}\n    events: [held, held]\n"
        );
        let err = Fleet::parse("fleet.yaml", &twice).unwrap_err().to_string();
        assert!(err.contains("notifications[0].events[1]"), "{err}");
    }
}
