//! Server-side printing: the `meta.k8s.io/v1` Table that `kubectl get` asks
//! for, with the columns a real API server prints for each built-in kind
//! and a CRD's `additionalPrinterColumns` for custom resources. Ages are
//! computed on the fleet clock, so a scaled fleet shows fleet ages.
//!
//! Pure rendering of objects already read from the store.

use std::sync::Arc;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::kinds::Kind;
use super::meta;

/// A column: its header, type, and whether it shows only with `-o wide` (priority 1).
#[derive(Debug, Clone)]
struct Column {
    name: String,
    kind: &'static str,
    wide: bool,
    /// For custom resources: the JSON path of the value and whether it is a date.
    path: Option<(String, bool)>,
}

fn col(name: &str, kind: &'static str, wide: bool) -> Column {
    Column {
        name: name.to_string(),
        kind,
        wide,
        path: None,
    }
}

/// Renders objects of one kind as table rows.
#[derive(Debug, Clone)]
pub struct Printer {
    kind: Arc<Kind>,
    columns: Vec<Column>,
    now: Timestamp,
    /// `includeObject`: `Object`, `Metadata` (default) or `None`.
    include: String,
}

impl Printer {
    /// A printer for `kind`; `crd` is the defining CRD of a custom resource.
    pub fn new(
        kind: Arc<Kind>,
        crd: Option<&Value>,
        now: Timestamp,
        include: Option<&str>,
    ) -> Printer {
        let columns = match (kind.group.as_str(), kind.plural.as_str()) {
            ("", "pods") => vec![
                col("Name", "string", false),
                col("Ready", "string", false),
                col("Status", "string", false),
                col("Restarts", "integer", false),
                col("Age", "string", false),
                col("IP", "string", true),
                col("Node", "string", true),
                col("Nominated Node", "string", true),
                col("Readiness Gates", "string", true),
            ],
            ("", "nodes") => vec![
                col("Name", "string", false),
                col("Status", "string", false),
                col("Roles", "string", false),
                col("Age", "string", false),
                col("Version", "string", false),
                col("Internal-IP", "string", true),
                col("External-IP", "string", true),
                col("OS-Image", "string", true),
                col("Kernel-Version", "string", true),
                col("Container-Runtime", "string", true),
            ],
            ("apps", "deployments") => vec![
                col("Name", "string", false),
                col("Ready", "string", false),
                col("Up-to-date", "integer", false),
                col("Available", "integer", false),
                col("Age", "string", false),
                col("Containers", "string", true),
                col("Images", "string", true),
                col("Selector", "string", true),
            ],
            ("", "services") => vec![
                col("Name", "string", false),
                col("Type", "string", false),
                col("Cluster-IP", "string", false),
                col("External-IP", "string", false),
                col("Port(s)", "string", false),
                col("Age", "string", false),
                col("Selector", "string", true),
            ],
            ("", "namespaces") => vec![
                col("Name", "string", false),
                col("Status", "string", false),
                col("Age", "string", false),
            ],
            ("", "events") => vec![
                col("Last Seen", "string", false),
                col("Type", "string", false),
                col("Reason", "string", false),
                col("Object", "string", false),
                col("Message", "string", false),
            ],
            ("", "configmaps") => vec![
                col("Name", "string", false),
                col("Data", "integer", false),
                col("Age", "string", false),
            ],
            ("coordination.k8s.io", "leases") => {
                vec![
                    col("Name", "string", false),
                    col("Holder", "string", false),
                    col("Age", "string", false),
                ]
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                vec![
                    col("Name", "string", false),
                    col("Created At", "string", false),
                ]
            }
            _ => custom_columns(crd),
        };
        Printer {
            kind,
            columns,
            now,
            include: include.unwrap_or("Metadata").to_string(),
        }
    }

    /// The same printer with ages computed at another moment (long watches).
    pub fn at(&self, now: Timestamp) -> Printer {
        Printer {
            now,
            ..self.clone()
        }
    }

    fn definitions(&self) -> Value {
        Value::Array(
            self.columns
                .iter()
                .map(|c| {
                    json!({"name": c.name, "type": c.kind, "format": if c.name == "Name" { "name" } else { "" },
                           "description": c.name, "priority": if c.wide { 1 } else { 0 }})
                })
                .collect(),
        )
    }

    /// A whole table; `columns` false leaves the definitions out (later watch events).
    pub fn table(&self, objects: &[Arc<Value>], rv: u64, columns: bool) -> Value {
        json!({
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": rv.to_string()},
            "columnDefinitions": if columns { self.definitions() } else { json!([]) },
            "rows": objects.iter().map(|o| self.row(o)).collect::<Vec<_>>(),
        })
    }

    fn row(&self, obj: &Value) -> Value {
        let cells: Vec<Value> = self.columns.iter().map(|c| self.cell(c, obj)).collect();
        let mut row = json!({"cells": cells});
        match self.include.as_str() {
            "None" => {}
            "Object" => row["object"] = obj.clone(),
            _ => {
                row["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
            }
        }
        row
    }

    fn cell(&self, c: &Column, o: &Value) -> Value {
        if let Some((path, date)) = &c.path {
            let v = json_path(o, path);
            return match (v, date) {
                (Some(Value::String(s)), true) => {
                    json!(meta::parse_time(s).map(|t| self.age(t)).unwrap_or_default())
                }
                (Some(Value::Array(items)), _) => {
                    json!(
                        items
                            .iter()
                            .map(|i| i
                                .as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| i.to_string()))
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                }
                (Some(v), _) => v.clone(),
                (None, _) => Value::Null,
            };
        }
        let none = || json!("<none>");
        let st = &o["status"];
        let sp = &o["spec"];
        match (self.kind.plural.as_str(), c.name.as_str()) {
            (_, "Name") => json!(meta::name(o)),
            (_, "Age") => json!(self.age_of(&o["metadata"]["creationTimestamp"])),
            ("pods", "Ready") => {
                let total = sp["containers"].as_array().map_or(0, Vec::len);
                let ready = st["containerStatuses"]
                    .as_array()
                    .map_or(0, |a| a.iter().filter(|c| c["ready"] == true).count());
                json!(format!("{ready}/{total}"))
            }
            ("pods", "Status") => json!(pod_status(o)),
            ("pods", "Restarts") => {
                json!(st["containerStatuses"].as_array().map_or(0, |a| {
                    a.iter()
                        .map(|c| c["restartCount"].as_i64().unwrap_or(0))
                        .sum::<i64>()
                }))
            }
            ("pods", "IP") => st.get("podIP").cloned().unwrap_or_else(none),
            ("pods", "Node") => sp.get("nodeName").cloned().unwrap_or_else(none),
            ("pods", _) => none(),
            ("nodes", "Status") => {
                let mut s = if meta::condition_true(o, "Ready") {
                    "Ready"
                } else {
                    "NotReady"
                }
                .to_string();
                if sp["unschedulable"] == true {
                    s.push_str(",SchedulingDisabled");
                }
                json!(s)
            }
            ("nodes", "Roles") => none(),
            ("nodes", "Version") => st["nodeInfo"]["kubeletVersion"].clone(),
            ("nodes", "Internal-IP") => st["addresses"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
                .map(|x| x["address"].clone())
                .unwrap_or_else(none),
            ("nodes", "External-IP") => none(),
            ("nodes", "OS-Image") => st["nodeInfo"]["osImage"].clone(),
            ("nodes", "Kernel-Version") => st["nodeInfo"]["kernelVersion"].clone(),
            ("nodes", "Container-Runtime") => st["nodeInfo"]["containerRuntimeVersion"].clone(),
            ("deployments", "Ready") => {
                json!(format!(
                    "{}/{}",
                    st["readyReplicas"].as_i64().unwrap_or(0),
                    sp["replicas"].as_i64().unwrap_or(0)
                ))
            }
            ("deployments", "Up-to-date") => json!(st["updatedReplicas"].as_i64().unwrap_or(0)),
            ("deployments", "Available") => json!(st["availableReplicas"].as_i64().unwrap_or(0)),
            ("deployments", "Containers") => json!(containers(o, "name")),
            ("deployments", "Images") => json!(containers(o, "image")),
            ("deployments", "Selector") | ("services", "Selector") => {
                let sel = if self.kind.plural == "services" {
                    &sp["selector"]
                } else {
                    &sp["selector"]["matchLabels"]
                };
                json!(pairs(sel).unwrap_or_else(|| "<none>".into()))
            }
            ("services", "Type") => sp["type"].clone(),
            ("services", "Cluster-IP") => sp.get("clusterIP").cloned().unwrap_or_else(none),
            ("services", "External-IP") => none(),
            ("services", "Port(s)") => {
                let ports: Vec<String> = sp["ports"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|p| {
                                format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP"))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                json!(if ports.is_empty() {
                    "<none>".to_string()
                } else {
                    ports.join(",")
                })
            }
            ("namespaces", "Status") => st["phase"].clone(),
            ("events", "Last Seen") => {
                let t = if o["lastTimestamp"].is_string() {
                    &o["lastTimestamp"]
                } else {
                    &o["eventTime"]
                };
                json!(self.age_of(t))
            }
            ("events", "Type") => o["type"].clone(),
            ("events", "Reason") => o["reason"].clone(),
            ("events", "Object") => {
                let io = &o["involvedObject"];
                json!(format!(
                    "{}/{}",
                    io["kind"].as_str().unwrap_or_default().to_lowercase(),
                    io["name"].as_str().unwrap_or_default()
                ))
            }
            ("events", "Message") => o["message"].clone(),
            ("configmaps", "Data") => json!(
                o["data"].as_object().map_or(0, |m| m.len())
                    + o["binaryData"].as_object().map_or(0, |m| m.len())
            ),
            ("leases", "Holder") => sp
                .get("holderIdentity")
                .cloned()
                .unwrap_or_else(|| json!("")),
            ("customresourcedefinitions", "Created At") => {
                o["metadata"]["creationTimestamp"].clone()
            }
            _ => Value::Null,
        }
    }

    fn age_of(&self, ts: &Value) -> String {
        ts.as_str()
            .and_then(meta::parse_time)
            .map(|t| self.age(t))
            .unwrap_or_else(|| "<unknown>".into())
    }

    fn age(&self, t: Timestamp) -> String {
        human_duration(self.now.as_second() - t.as_second())
    }
}

fn custom_columns(crd: Option<&Value>) -> Vec<Column> {
    let mut cols = vec![col("Name", "string", false)];
    let extra = crd
        .and_then(|c| {
            let versions = c["spec"]["versions"].as_array()?;
            let v = versions
                .iter()
                .find(|v| v["storage"] == true)
                .or(versions.first())?;
            v["additionalPrinterColumns"].as_array().cloned()
        })
        .unwrap_or_default();
    if extra.is_empty() {
        cols.push(col("Age", "string", false));
    }
    for c in extra {
        let date = c["type"] == "date";
        cols.push(Column {
            name: c["name"].as_str().unwrap_or_default().to_string(),
            kind: match c["type"].as_str() {
                Some("integer") => "integer",
                Some("number") => "number",
                Some("boolean") => "boolean",
                _ => "string",
            },
            wide: c["priority"].as_i64().unwrap_or(0) > 0,
            path: Some((c["jsonPath"].as_str().unwrap_or_default().to_string(), date)),
        });
    }
    cols
}

/// Follows `.a.b[0].c`.
fn json_path<'a>(o: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = o;
    for part in path
        .trim_start_matches('.')
        .split('.')
        .filter(|p| !p.is_empty())
    {
        let (field, index) = match part.split_once('[') {
            Some((f, rest)) => (f, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        cur = cur.get(field)?;
        if let Some(i) = index {
            cur = cur.get(i)?;
        }
    }
    (!cur.is_null()).then_some(cur)
}

fn pod_status(o: &Value) -> String {
    if meta::is_terminating(o) {
        return "Terminating".into();
    }
    let waiting = o["status"]["containerStatuses"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find_map(|c| c["state"]["waiting"]["reason"].as_str())
        })
        .filter(|r| *r != "ContainerCreating" || o["status"]["phase"] == "Pending");
    match waiting {
        Some(r) => r.to_string(),
        None => o["status"]["phase"]
            .as_str()
            .unwrap_or("Pending")
            .to_string(),
    }
}

fn containers(o: &Value, field: &str) -> String {
    o["spec"]["template"]["spec"]["containers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c[field].as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn pairs(v: &Value) -> Option<String> {
    let m = v.as_object().filter(|m| !m.is_empty())?;
    Some(
        m.iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// Ages the way kubectl prints them: `45s`, `3m20s`, `42m`, `5h10m`, `3d4h`.
pub fn human_duration(secs: i64) -> String {
    if secs < 0 {
        return "0s".into();
    }
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if m < 10 => match s % 60 {
            0 => format!("{m}m"),
            r => format!("{m}m{r}s"),
        },
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 => match m % 60 {
            0 => format!("{h}h"),
            r => format!("{h}h{r}m"),
        },
        _ if h < 48 => format!("{h}h"),
        _ if h < 192 => match h % 24 {
            0 => format!("{d}d"),
            r => format!("{d}d{r}h"),
        },
        _ if d < 730 => format!("{d}d"),
        _ => format!("{}y", d / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::Registry;

    #[test]
    fn ages_read_like_kubectl() {
        let cases = [
            (5, "5s"),
            (119, "119s"),
            (200, "3m20s"),
            (600, "10m"),
            (7200, "120m"),
            (4 * 3600 + 600, "4h10m"),
            (30 * 3600, "30h"),
            (3 * 86_400 + 7200, "3d2h"),
            (40 * 86_400, "40d"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn pods_print_ready_status_and_node() {
        let reg = Registry::with_builtins();
        let now: Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let p = Printer::new(reg.by_resource("", "pods").unwrap(), None, now, None);
        let pod = Arc::new(json!({
            "metadata": {"name": "web-1", "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "containerStatuses": [{"ready": true, "restartCount": 2}]},
        }));
        let t = p.table(&[pod], 7, true);
        let cells = &t["rows"][0]["cells"];
        assert_eq!(
            cells,
            &json!([
                "web-1", "1/1", "Running", 2, "10m", "10.0.0.1", "n1", "<none>", "<none>"
            ])
        );
        assert_eq!(t["rows"][0]["object"]["metadata"]["labels"]["a"], "b");
        assert_eq!(t["columnDefinitions"][6]["priority"], 1);
    }

    #[test]
    fn custom_resources_use_printer_columns() {
        let reg = Registry::with_builtins();
        let crd = json!({"spec": {"versions": [{"name": "v1", "storage": true, "additionalPrinterColumns": [
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
        ]}]}});
        let now: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let p = Printer::new(
            reg.by_resource("", "configmaps").unwrap(),
            Some(&crd),
            now,
            Some("None"),
        );
        // Built-in columns win for a built-in kind.
        assert_eq!(p.columns.len(), 3);
        let mut k = (*reg.by_resource("", "configmaps").unwrap()).clone();
        k.plural = "releases".into();
        let p = Printer::new(Arc::new(k), Some(&crd), now, Some("None"));
        let r = Arc::new(
            json!({"metadata": {"name": "r", "creationTimestamp": "2026-01-01T00:00:00Z"}, "status": {"phase": "Progressing"}}),
        );
        let t = p.table(&[r], 1, true);
        assert_eq!(t["rows"][0]["cells"], json!(["r", "Progressing", "60m"]));
        assert!(t["rows"][0].get("object").is_none());
    }
}
