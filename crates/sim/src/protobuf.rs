//! Kubernetes protobuf request bodies, decoded to the JSON the rest of the
//! server reads. client-go's typed clients send built-in kinds as protobuf
//! (`kubectl create namespace|configmap|secret|serviceaccount|role|rolebinding|
//! clusterrole|clusterrolebinding`, `auth whoami`, `auth can-i`, `create
//! token`), and kube-apiserver accepts them.
//!
//! A body is `k8s\0` and a `runtime.Unknown` (apimachinery
//! `runtime/serializer/protobuf`): its type meta (1 apiVersion, 2 kind) and
//! `raw`, the object's own message. The message is read by the field numbers
//! of kubernetes/api's `generated.proto`, kind by kind, for the kinds below;
//! another kind's protobuf body is refused with 415 naming what is decoded.
//! Zero scalars are always on the wire (gogo's encoder), so an empty string,
//! a zero and an empty time are left out of the JSON, as `omitempty` would.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::api_error::{ApiError, ApiResult};

/// How one field of a message maps to JSON.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    /// `metav1.Time`: `{1 seconds}`, RFC 3339 in JSON.
    Time,
    Msg(&'static [Field]),
    /// `repeated string`.
    Strings,
    /// `repeated` messages.
    Msgs(&'static [Field]),
    /// `map<string, string>`.
    StrMap,
    /// `map<string, bytes>`: base64 in JSON.
    BytesMap,
}

type Field = (u32, &'static str, Ty);

const OWNER_REFERENCE: &[Field] = &[
    (1, "kind", Ty::Str),
    (3, "name", Ty::Str),
    (4, "uid", Ty::Str),
    (5, "apiVersion", Ty::Str),
    (6, "controller", Ty::Bool),
    (7, "blockOwnerDeletion", Ty::Bool),
];

const OBJECT_META: &[Field] = &[
    (1, "name", Ty::Str),
    (2, "generateName", Ty::Str),
    (3, "namespace", Ty::Str),
    (5, "uid", Ty::Str),
    (6, "resourceVersion", Ty::Str),
    (7, "generation", Ty::Int),
    (8, "creationTimestamp", Ty::Time),
    (9, "deletionTimestamp", Ty::Time),
    (10, "deletionGracePeriodSeconds", Ty::Int),
    (11, "labels", Ty::StrMap),
    (12, "annotations", Ty::StrMap),
    (13, "ownerReferences", Ty::Msgs(OWNER_REFERENCE)),
    (14, "finalizers", Ty::Strings),
];

const META: Field = (1, "metadata", Ty::Msg(OBJECT_META));

const NAMESPACE: &[Field] = &[
    META,
    (2, "spec", Ty::Msg(&[(1, "finalizers", Ty::Strings)])),
    (3, "status", Ty::Msg(&[(1, "phase", Ty::Str)])),
];

const CONFIG_MAP: &[Field] = &[
    META,
    (2, "data", Ty::StrMap),
    (3, "binaryData", Ty::BytesMap),
    (4, "immutable", Ty::Bool),
];

const SECRET: &[Field] = &[
    META,
    (2, "data", Ty::BytesMap),
    (3, "type", Ty::Str),
    (4, "stringData", Ty::StrMap),
    (5, "immutable", Ty::Bool),
];

const SERVICE_ACCOUNT: &[Field] = &[
    META,
    (3, "imagePullSecrets", Ty::Msgs(&[(1, "name", Ty::Str)])),
    (4, "automountServiceAccountToken", Ty::Bool),
];

const POLICY_RULE: &[Field] = &[
    (1, "verbs", Ty::Strings),
    (2, "apiGroups", Ty::Strings),
    (3, "resources", Ty::Strings),
    (4, "resourceNames", Ty::Strings),
    (5, "nonResourceURLs", Ty::Strings),
];

const ROLE: &[Field] = &[META, (2, "rules", Ty::Msgs(POLICY_RULE))];

const BINDING: &[Field] = &[
    META,
    (
        2,
        "subjects",
        Ty::Msgs(&[
            (1, "kind", Ty::Str),
            (2, "apiGroup", Ty::Str),
            (3, "name", Ty::Str),
            (4, "namespace", Ty::Str),
        ]),
    ),
    (
        3,
        "roleRef",
        Ty::Msg(&[
            (1, "apiGroup", Ty::Str),
            (2, "kind", Ty::Str),
            (3, "name", Ty::Str),
        ]),
    ),
];

const SELF_SUBJECT_REVIEW: &[Field] = &[META];

const TOKEN_REQUEST: &[Field] = &[
    META,
    (
        2,
        "spec",
        Ty::Msg(&[
            (1, "audiences", Ty::Strings),
            (
                3,
                "boundObjectRef",
                Ty::Msg(&[
                    (1, "kind", Ty::Str),
                    (2, "apiVersion", Ty::Str),
                    (3, "name", Ty::Str),
                    (4, "uid", Ty::Str),
                ]),
            ),
            (4, "expirationSeconds", Ty::Int),
        ]),
    ),
];

const SELECTOR_ATTRIBUTES: &[Field] = &[(1, "rawSelector", Ty::Str)];

const SELF_SUBJECT_ACCESS_REVIEW: &[Field] = &[
    META,
    (
        2,
        "spec",
        Ty::Msg(&[
            (
                1,
                "resourceAttributes",
                Ty::Msg(&[
                    (1, "namespace", Ty::Str),
                    (2, "verb", Ty::Str),
                    (3, "group", Ty::Str),
                    (4, "version", Ty::Str),
                    (5, "resource", Ty::Str),
                    (6, "subresource", Ty::Str),
                    (7, "name", Ty::Str),
                    (8, "fieldSelector", Ty::Msg(SELECTOR_ATTRIBUTES)),
                    (9, "labelSelector", Ty::Msg(SELECTOR_ATTRIBUTES)),
                ]),
            ),
            (
                2,
                "nonResourceAttributes",
                Ty::Msg(&[(1, "path", Ty::Str), (2, "verb", Ty::Str)]),
            ),
        ]),
    ),
];

/// The kinds whose protobuf bodies are decoded, by `apiVersion` and `kind`.
const KINDS: &[(&str, &str, &[Field])] = &[
    ("v1", "Namespace", NAMESPACE),
    ("v1", "ConfigMap", CONFIG_MAP),
    ("v1", "Secret", SECRET),
    ("v1", "ServiceAccount", SERVICE_ACCOUNT),
    ("rbac.authorization.k8s.io/v1", "Role", ROLE),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", ROLE),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", BINDING),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        BINDING,
    ),
    (
        "authentication.k8s.io/v1",
        "SelfSubjectReview",
        SELF_SUBJECT_REVIEW,
    ),
    ("authentication.k8s.io/v1", "TokenRequest", TOKEN_REQUEST),
    (
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
        SELF_SUBJECT_ACCESS_REVIEW,
    ),
];

/// A protobuf body as the JSON object it encodes.
pub fn decode(body: &[u8]) -> ApiResult<Value> {
    let bad =
        |why: &str| ApiError::bad_request(format!("unable to decode the protobuf body: {why}"));
    let unknown = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| bad("it does not start with the k8s\\x00 prefix"))?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for field in Fields(unknown) {
        match field.map_err(|e| bad(&e))? {
            (1, Wire::Len(type_meta)) => {
                for f in Fields(type_meta) {
                    match f.map_err(|e| bad(&e))? {
                        (1, Wire::Len(v)) => api_version = String::from_utf8_lossy(v).into(),
                        (2, Wire::Len(k)) => kind = String::from_utf8_lossy(k).into(),
                        _ => {}
                    }
                }
            }
            (2, Wire::Len(r)) => raw = r,
            _ => {}
        }
    }
    let Some((_, _, fields)) = KINDS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
    else {
        let known: Vec<String> = KINDS.iter().map(|(v, k, _)| format!("{v} {k}")).collect();
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - the simulated API server decodes protobuf only for {}; send {api_version} {kind} as application/json",
            known.join(", ")
        )));
    };
    let mut obj = message(raw, fields).map_err(|e| bad(&e))?;
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    Ok(Value::Object(obj))
}

fn message(bytes: &[u8], fields: &'static [Field]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for f in Fields(bytes) {
        let (number, wire) = f?;
        let Some((_, name, ty)) = fields.iter().find(|(n, _, _)| *n == number) else {
            continue;
        };
        let name = name.to_string();
        match (*ty, wire) {
            (Ty::Str, Wire::Len(b)) => {
                if !b.is_empty() {
                    out.insert(name, json!(utf8(b)?));
                }
            }
            (Ty::Int, Wire::Varint(v)) => {
                if v != 0 {
                    out.insert(name, json!(v as i64));
                }
            }
            (Ty::Bool, Wire::Varint(v)) => {
                out.insert(name, json!(v != 0));
            }
            (Ty::Time, Wire::Len(b)) => {
                let seconds = Fields(b)
                    .filter_map(Result::ok)
                    .find_map(|(n, w)| match (n, w) {
                        (1, Wire::Varint(s)) => Some(s as i64),
                        _ => None,
                    })
                    .unwrap_or(0);
                if seconds != 0 {
                    let at = jiff::Timestamp::from_second(seconds).map_err(|e| e.to_string())?;
                    out.insert(name, json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()));
                }
            }
            (Ty::Msg(sub), Wire::Len(b)) => {
                out.insert(name, Value::Object(message(b, sub)?));
            }
            (Ty::Strings, Wire::Len(b)) => push(&mut out, name, json!(utf8(b)?)),
            (Ty::Msgs(sub), Wire::Len(b)) => push(&mut out, name, Value::Object(message(b, sub)?)),
            (Ty::StrMap | Ty::BytesMap, Wire::Len(b)) => {
                let (mut key, mut value) = (String::new(), Value::String(String::new()));
                for e in Fields(b) {
                    match (e?, *ty) {
                        ((1, Wire::Len(k)), _) => key = utf8(k)?,
                        ((2, Wire::Len(v)), Ty::BytesMap) => value = json!(STANDARD.encode(v)),
                        ((2, Wire::Len(v)), _) => value = json!(utf8(v)?),
                        _ => {}
                    }
                }
                let map = out.entry(name).or_insert_with(|| json!({}));
                map[key] = value;
            }
            _ => return Err(format!("field {number} ({name}) has the wrong wire type")),
        }
    }
    Ok(out)
}

fn push(out: &mut Map<String, Value>, name: String, v: Value) {
    match out.entry(name).or_insert_with(|| json!([])) {
        Value::Array(a) => a.push(v),
        _ => unreachable!("repeated fields are arrays"),
    }
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string field is not UTF-8".to_string())
}

/// One field's value on the wire.
enum Wire<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Fixed,
}

/// The fields of one message, in order.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Wire<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let mut step = || -> Result<(u32, Wire<'a>), String> {
            let tag = varint(&mut self.0)?;
            let number = (tag >> 3) as u32;
            let wire = match tag & 7 {
                0 => Wire::Varint(varint(&mut self.0)?),
                1 => Wire::Fixed.skip(&mut self.0, 8)?,
                2 => {
                    let len = varint(&mut self.0)? as usize;
                    if len > self.0.len() {
                        return Err("a length runs past the end".into());
                    }
                    let (v, rest) = self.0.split_at(len);
                    self.0 = rest;
                    Wire::Len(v)
                }
                5 => Wire::Fixed.skip(&mut self.0, 4)?,
                other => return Err(format!("unsupported wire type {other}")),
            };
            Ok((number, wire))
        };
        let item = step();
        if item.is_err() {
            self.0 = &[];
        }
        Some(item)
    }
}

impl<'a> Wire<'a> {
    fn skip(self, bytes: &mut &'a [u8], n: usize) -> Result<Wire<'a>, String> {
        if bytes.len() < n {
            return Err("a fixed-width field runs past the end".into());
        }
        *bytes = &bytes[n..];
        Ok(self)
    }
}

fn varint(bytes: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            return Ok(v);
        }
    }
    Err("a varint runs past the end".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The body kubectl 1.32 sends for `kubectl create namespace demo-ns`.
    #[test]
    fn kubectl_create_namespace_decodes() {
        let body = hex("6b387300 0a0f 0a02 7631 1209 4e616d657370616365
             121f 0a17 0a07 64656d6f2d6e73 1200 1a00 2200 2a00 3200 3800 4200 1200 1a02 0a00
             1a00 2200");
        assert_eq!(
            decode(&body).unwrap(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo-ns"},
                   "spec": {}, "status": {}})
        );
    }

    #[test]
    fn maps_bytes_and_reviews_decode() {
        // ConfigMap cm1 in default with a=1 and binaryData bin=fffe00.
        let raw = hex("0a0e 0a03 636d31 1a07 64656661756c74
             1206 0a01 61 1201 31
             1a0a 0a03 62696e 1203 fffe00");
        let mut body = b"k8s\0".to_vec();
        let type_meta = hex("0a02 7631 1209 436f6e6669674d6170");
        body.push(0x0a);
        body.push(type_meta.len() as u8);
        body.extend(&type_meta);
        body.push(0x12);
        body.push(raw.len() as u8);
        body.extend(&raw);
        assert_eq!(
            decode(&body).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "cm1", "namespace": "default"},
                   "data": {"a": "1"}, "binaryData": {"bin": "//4A"}})
        );
        // A kind not decoded here (apps/v1, no kind) is a 415 naming those that are.
        let mut body = b"k8s\0".to_vec();
        body.extend(hex("0a0b 0a07 617070732f7631 1200 1200"));
        let e = decode(&body).unwrap_err();
        assert_eq!(e.code, 415);
    }
}
