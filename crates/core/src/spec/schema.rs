//! Schema helpers for the CRDs generated from the spec types.

use schemars::{Schema, SchemaGenerator, json_schema};

/// An object kept as written (`x-kubernetes-preserve-unknown-fields`), for
/// embedded Kubernetes manifests whose full schema would bloat the CRD.
pub fn preserve_unknown_fields(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}
