//! How a list is read: `resourceVersion` with `resourceVersionMatch`, and
//! pages with `limit` and `continue`, checked and served as kube-apiserver
//! 1.33 does.
//!
//! - Validation: apimachinery's `ValidateListOptions` (a 422 on
//!   `ListOptions.meta.k8s.io`), apiserver's `storage.ValidateListOptions`
//!   (a 400 for a bad continue token, or a resourceVersion with one).
//! - Which state is read: `""` the latest; `"0"` any (the latest here, and
//!   `limit` is ignored, as the watch cache ignores it); `N` with `Exact`, or
//!   with a `limit` and no match (the legacy exact read), the state at `N`;
//!   `N` otherwise at least `N`.
//! - Pages: keys in etcd's order (`name`, or `namespace/name` across
//!   namespaces), a continue token `{"v":"meta.k8s.io/v1","rv":N,"start":"key\0"}`
//!   in unpadded URL-safe base64 (`storage/continue.go`), every page read at
//!   the first page's resourceVersion, and `remainingItemCount` when no
//!   selector filters.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::api_error::{ApiError, ApiResult};
use super::server::Params;

/// Which state of the store a list reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// The newest state.
    Latest,
    /// Exactly the state at this resourceVersion (410 once compacted).
    Exact(u64),
    /// A state at least this new (waiting up to 3 s for it, then 504).
    NotOlderThan(u64),
}

/// A list request's options, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOptions {
    pub read: Read,
    /// Items per page; 0 for all.
    pub limit: usize,
    /// The key to continue from (inclusive), from a continue token.
    pub start: Option<String>,
    /// Whether the read comes from a continue token (its 410 is worded so).
    pub continued: bool,
}

impl ListOptions {
    pub fn parse(params: &Params) -> ApiResult<ListOptions> {
        let rv = params.get("resourceVersion").unwrap_or_default();
        let rvm = params.get("resourceVersionMatch").unwrap_or_default();
        let token = params.get("continue").unwrap_or_default();
        let mut problems = Vec::new();
        if !rvm.is_empty() {
            if rv.is_empty() {
                problems.push("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided".to_string());
            }
            if !token.is_empty() {
                problems.push("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when continue is provided".to_string());
            }
            match rvm {
                "Exact" if rv == "0" => problems.push(
                    "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"".to_string(),
                ),
                "Exact" | "NotOlderThan" => {}
                other => problems.push(format!(
                    "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\", \"\""
                )),
            }
        }
        if params.get("sendInitialEvents").is_some() {
            problems.push(
                "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list".to_string(),
            );
        }
        if !problems.is_empty() {
            return Err(ApiError::invalid_fields(
                "meta.k8s.io",
                "ListOptions",
                "",
                &problems,
            ));
        }
        let version = match rv {
            "" => None,
            v => Some(v.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid resource version: resourceVersion: Invalid value: {v:?}: strconv.ParseUint: parsing {v:?}: invalid syntax"
                ))
            })?),
        };
        let limit = params
            .get("limit")
            .and_then(|l| l.parse::<i64>().ok())
            .filter(|l| *l > 0)
            .map_or(0, |l| l as usize);
        if !token.is_empty() {
            let (at, start) = decode(token).map_err(|e| {
                ApiError::bad_request(format!(
                    "invalid continue token: continue key is not valid: {e}"
                ))
            })?;
            if version.is_some_and(|v| v != 0) {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            // A token's negative resourceVersion continues at the latest state.
            let read = u64::try_from(at).map_or(Read::Latest, Read::Exact);
            return Ok(ListOptions {
                read,
                limit,
                start: Some(start),
                continued: true,
            });
        }
        let (read, limit) = match (version, rvm) {
            (None, _) => (Read::Latest, limit),
            (Some(0), _) => (Read::Latest, 0),
            (Some(n), "Exact") => (Read::Exact(n), limit),
            (Some(n), "") if limit > 0 => (Read::Exact(n), limit),
            (Some(n), _) => (Read::NotOlderThan(n), limit),
        };
        Ok(ListOptions {
            read,
            limit,
            start: None,
            continued: false,
        })
    }
}

/// The continue token for the page after `last_key`, read at `rv`.
pub fn encode(rv: i64, last_key: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{last_key}\u{0}")});
    URL_SAFE_NO_PAD.encode(token.to_string())
}

/// `(rv, start key)` of a continue token, or why it is not one.
fn decode(token: &str) -> Result<(i64, String), String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|e| format!("illegal base64 data: {e}"))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if v["v"] != "meta.k8s.io/v1" {
        return Err(format!(
            "server does not recognize this encoded version {}",
            v["v"].as_str().unwrap_or_default()
        ));
    }
    let rv = v["rv"].as_i64().unwrap_or(0);
    if rv == 0 {
        return Err("incorrect encoded start resourceVersion (version meta.k8s.io/v1)".to_string());
    }
    let start = v["start"]
        .as_str()
        .map(|s| s.trim_start_matches('/'))
        .unwrap_or_default();
    if start.is_empty() {
        return Err("encoded start key empty (version meta.k8s.io/v1)".to_string());
    }
    Ok((rv, start.to_string()))
}

/// The 410 for a continue token whose resourceVersion was compacted: a new
/// token in the Status continues at the latest state.
pub fn continue_expired(start: &str) -> ApiError {
    let mut e = ApiError::expired(
        "The provided continue parameter is too old to display a consistent list result. \
         You can start a new list without the continue parameter, or use the continue token in \
         this response to retrieve the remainder of the results. Continuing with the provided \
         token results in an inconsistent list - objects that were created, modified, or deleted \
         between the time the first chunk was returned and now may show up in the list.",
    );
    e.continue_token = Some(encode(-1, start.trim_end_matches('\u{0}')));
    e
}

/// One page of a list.
pub struct Page {
    pub items: Vec<Arc<Value>>,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

/// Cuts `items` (already filtered) into the page `opts` asks for; `across`
/// is whether the list spans namespaces (its keys then hold the namespace).
pub fn page(
    mut items: Vec<Arc<Value>>,
    opts: &ListOptions,
    rv: u64,
    across: bool,
    filtered: bool,
) -> Page {
    // One namespace's objects, or a cluster-scoped kind's, as the store
    // hands them over: in name order already (their key is the name).
    if !across && items.is_sorted_by(|a, b| name(a) <= name(b)) {
        return page_in_order(&items, opts, rv, |_| true, filtered);
    }
    let key = |o: &Value| {
        let md = &o["metadata"];
        let name = md["name"].as_str().unwrap_or_default();
        match md["namespace"].as_str() {
            Some(ns) if across && !ns.is_empty() => format!("{ns}/{name}"),
            _ => name.to_string(),
        }
    };
    let mut keyed: Vec<(String, Arc<Value>)> = items.drain(..).map(|o| (key(&o), o)).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(start) = &opts.start {
        keyed.retain(|(k, _)| k.as_str() >= start.as_str());
    }
    let mut rest: Vec<Arc<Value>> = keyed.into_iter().map(|(_, o)| o).collect();
    if opts.limit == 0 || rest.len() <= opts.limit {
        return Page {
            items: rest,
            continue_token: None,
            remaining: None,
        };
    }
    let remaining = rest.len() - opts.limit;
    rest.truncate(opts.limit);
    let last = rest.last().map(|o| key(o)).unwrap_or_default();
    Page {
        items: rest,
        continue_token: Some(encode(rv as i64, &last)),
        remaining: (!filtered).then_some(remaining),
    }
}

/// The page `opts` asks for of `items` in name order (one namespace's
/// objects, or a cluster-scoped kind's, as the store keeps them), of those
/// `keep` accepts: it starts where the token left off (a binary search),
/// and only the objects up to one past the page are filtered, so each page
/// of a long list costs its own length, as etcd reads a page by key range.
/// `filtered`: whether `keep` filters (the remaining count is then unknown).
pub fn page_in_order(
    items: &[Arc<Value>],
    opts: &ListOptions,
    rv: u64,
    keep: impl Fn(&Value) -> bool,
    filtered: bool,
) -> Page {
    let from = opts
        .start
        .as_ref()
        .map_or(0, |s| items.partition_point(|o| name(o) < s.as_str()));
    let limit = if opts.limit == 0 {
        usize::MAX
    } else {
        opts.limit
    };
    let mut rest = items[from..].iter().filter(|o| keep(o));
    let page: Vec<Arc<Value>> = rest.by_ref().take(limit).cloned().collect();
    if rest.next().is_none() {
        return Page {
            items: page,
            continue_token: None,
            remaining: None,
        };
    }
    let remaining = items.len() - from - page.len();
    let last = page.last().map(|o| name(o)).unwrap_or_default();
    Page {
        continue_token: Some(encode(rv as i64, last)),
        remaining: (!filtered).then_some(remaining),
        items: page,
    }
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(query: &str) -> ApiResult<ListOptions> {
        ListOptions::parse(&Params::parse(query))
    }

    #[test]
    fn resource_version_and_match_pick_what_is_read() {
        let read = |q: &str| opts(q).unwrap().read;
        assert_eq!(read(""), Read::Latest);
        assert_eq!(read("resourceVersion=0&limit=5"), Read::Latest);
        assert_eq!(
            opts("resourceVersion=0&limit=5").unwrap().limit,
            0,
            "limit is ignored at 0"
        );
        assert_eq!(read("resourceVersion=7"), Read::NotOlderThan(7));
        assert_eq!(read("resourceVersion=7&limit=5"), Read::Exact(7));
        assert_eq!(
            read("resourceVersion=7&resourceVersionMatch=Exact"),
            Read::Exact(7)
        );
        assert_eq!(
            read("resourceVersion=7&resourceVersionMatch=NotOlderThan&limit=5"),
            Read::NotOlderThan(7)
        );
    }

    #[test]
    fn invalid_options_are_refused_as_the_api_server_words_them() {
        let e = opts("resourceVersionMatch=Exact").unwrap_err();
        assert_eq!((e.code, e.reason), (422, "Invalid"));
        assert_eq!(
            e.message,
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"
        );
        let e = opts("resourceVersion=0&resourceVersionMatch=Exact").unwrap_err();
        assert!(
            e.message
                .contains("resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"")
        );
        let e = opts("resourceVersion=1&resourceVersionMatch=exact").unwrap_err();
        assert!(e.message.contains(
            "resourceVersionMatch: Unsupported value: \"exact\": supported values: \"Exact\", \"NotOlderThan\", \"\""
        ));
        let e = opts("continue=%%%").unwrap_err();
        assert_eq!(e.code, 400);
        assert!(
            e.message
                .starts_with("invalid continue token: continue key is not valid")
        );
        let token = encode(5, "a");
        let e = opts(&format!("continue={token}&resourceVersion=5")).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                400,
                "specifying resource version is not allowed when using continue"
            )
        );
        let e = opts("resourceVersion=abc").unwrap_err();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn pages_follow_keys_and_continue_at_the_first_pages_version() {
        let objs: Vec<Arc<Value>> = ["c", "a", "b"]
            .iter()
            .map(|n| Arc::new(json!({"metadata": {"name": n, "namespace": "ns"}})))
            .collect();
        let first = page(objs.clone(), &opts("limit=2").unwrap(), 9, false, false);
        let names: Vec<_> = first
            .items
            .iter()
            .map(|o| o["metadata"]["name"].clone())
            .collect();
        assert_eq!(names, [json!("a"), json!("b")]);
        assert_eq!(first.remaining, Some(1));
        let token = first.continue_token.unwrap();
        let next = opts(&format!("continue={token}&limit=2")).unwrap();
        assert_eq!(
            (next.read, next.start.as_deref()),
            (Read::Exact(9), Some("b\u{0}"))
        );
        let second = page(objs, &next, 9, false, false);
        assert_eq!(second.items.len(), 1);
        assert_eq!(second.items[0]["metadata"]["name"], "c");
        assert!(second.continue_token.is_none() && second.remaining.is_none());
    }

    /// A filtered list in name order, cut page by page from the whole
    /// state (what a continue page reads), pages as the filtered objects do.
    #[test]
    fn a_filtered_page_from_the_whole_state_is_the_page_of_the_filtered_list() {
        let all: Vec<Arc<Value>> = ["a", "b", "c", "d", "e", "f", "g"]
            .iter()
            .enumerate()
            .map(|(i, n)| {
                Arc::new(json!({"metadata": {"name": n, "labels": {"odd": (i % 2).to_string()}}}))
            })
            .collect();
        let keep = |o: &Value| o["metadata"]["labels"]["odd"] == "0";
        let kept: Vec<Arc<Value>> = all.iter().filter(|o| keep(o)).cloned().collect();
        for (limit, filtered) in [(1, true), (2, true), (3, true), (0, true), (2, false)] {
            let mut next = opts(&format!("limit={limit}")).unwrap();
            loop {
                let (a, b) = if filtered {
                    (
                        page_in_order(&all, &next, 9, keep, true),
                        page(kept.clone(), &next, 9, false, true),
                    )
                } else {
                    (
                        page_in_order(&all, &next, 9, |_| true, false),
                        page(all.clone(), &next, 9, false, false),
                    )
                };
                assert_eq!(a.items, b.items, "limit {limit}");
                assert_eq!(
                    (&a.continue_token, a.remaining),
                    (&b.continue_token, b.remaining)
                );
                let Some(token) = a.continue_token else { break };
                next = opts(&format!("continue={token}&limit={limit}")).unwrap();
            }
        }
    }

    #[test]
    fn a_list_in_name_order_pages_as_a_sorted_one_does() {
        let names = |p: &Page| -> Vec<String> {
            p.items
                .iter()
                .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
                .collect()
        };
        // In name order, as the store lists one namespace; and shuffled.
        let sorted: Vec<Arc<Value>> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|n| Arc::new(json!({"metadata": {"name": n, "namespace": "ns"}})))
            .collect();
        let mut shuffled = sorted.clone();
        shuffled.rotate_left(2);
        for limit in [0, 1, 2, 5, 7] {
            let mut next = opts(&format!("limit={limit}")).unwrap();
            let mut pages = 0;
            loop {
                let a = page(sorted.clone(), &next, 9, false, false);
                let b = page(shuffled.clone(), &next, 9, false, false);
                assert_eq!(names(&a), names(&b), "limit {limit}, page {pages}");
                assert_eq!(
                    (&a.continue_token, a.remaining),
                    (&b.continue_token, b.remaining)
                );
                pages += 1;
                let Some(token) = a.continue_token else { break };
                next = opts(&format!("continue={token}&limit={limit}")).unwrap();
            }
            assert_eq!(
                pages,
                if limit == 0 {
                    1
                } else {
                    5usize.div_ceil(limit)
                }
            );
        }
    }
}
