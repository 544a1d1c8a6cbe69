//! Reading YAML documents into typed values, with errors a person can act on:
//! every error names the file, the line and column, the field path and what was
//! expected.
//!
//! Owns decoding and locating; the meaning of fields belongs to the schema modules.

use std::cell::RefCell;
use std::fmt;

use serde::de::DeserializeOwned;
use serde_saphyr::granit_parser::{Event, Parser};

/// A problem in a file a person wrote, pointing at the place to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// The file as the user named it.
    pub file: String,
    /// 1-based line and column of the offending node, when known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted field path, e.g. `spec.plan.canary.weight` or `spec.clusters[1].name`.
    pub field: String,
    /// What is wrong and what was expected.
    pub problem: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let (Some(line), Some(col)) = (self.line, self.column) {
            write!(f, ":{line}:{col}")?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.problem)
        } else {
            write!(f, ": field `{}`: {}", self.field, self.problem)
        }
    }
}

impl std::error::Error for InputError {}

/// Several problems found in one file, reported together so one edit fixes them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputErrors(pub Vec<InputError>);

/// A file's bytes as text; bytes that are not UTF-8 are an error at the
/// line and column of the first of them.
pub fn text(file: &str, bytes: Vec<u8>) -> Result<String, InputError> {
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let good = e.utf8_error().valid_up_to();
        let before = std::str::from_utf8(&bytes[..good]).unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .unwrap_or_default()
            .chars()
            .count()
            + 1;
        InputError {
            file: file.to_string(),
            line: Some(line),
            column: Some(column),
            field: String::new(),
            problem: format!(
                "byte 0x{:02x} is not UTF-8: save the file as UTF-8",
                bytes[good]
            ),
        }
    })
}

impl fmt::Display for InputErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InputErrors {}

/// A YAML document and the name it is reported under.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

impl<'a> Source<'a> {
    pub fn new(file: &'a str, text: &'a str) -> Self {
        Source { file, text }
    }

    /// Decodes the whole document into `T`, rejecting unknown fields where `T` does.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, InputError> {
        let failed_at: RefCell<Option<String>> = RefCell::new(None);
        let result = serde_saphyr::with_deserializer_from_str(self.text, |de| {
            serde_path_to_error::deserialize(de).map_err(|e| {
                *failed_at.borrow_mut() = Some(e.path().to_string());
                e.into_inner()
            })
        });
        result.map_err(|e| {
            let field = failed_at
                .into_inner()
                .filter(|p| p != ".")
                .unwrap_or_default();
            let (line, column) = match e.location() {
                // The scanner meets a tab in indentation while still reading
                // the line before it: place the error on the tab.
                Some(loc) if loc.line() > 0 && plain_message(&e).contains("tab") => {
                    match self.tab_from(loc.line() as usize) {
                        Some((l, c)) => (Some(l), Some(c)),
                        None => (Some(loc.line() as usize), Some(loc.column() as usize)),
                    }
                }
                Some(loc) if loc.line() > 0 => {
                    (Some(loc.line() as usize), Some(loc.column() as usize))
                }
                _ => match self.locate(&field) {
                    Some((l, c)) => (Some(l), Some(c)),
                    None => (None, None),
                },
            };
            InputError {
                file: self.file.to_string(),
                line,
                column,
                field,
                problem: plain_message(&e),
            }
        })
    }

    /// The first tab in a line's leading whitespace, at or after `line`
    /// (1-based line and column).
    fn tab_from(&self, line: usize) -> Option<(usize, usize)> {
        self.text
            .lines()
            .enumerate()
            .skip(line.saturating_sub(1))
            .find_map(|(i, l)| {
                let indent = &l[..l.len() - l.trim_start().len()];
                indent
                    .find('\t')
                    .map(|c| (i + 1, indent[..c].chars().count() + 1))
            })
    }

    /// An error about `field`, placed at that field in this document (or at the
    /// nearest enclosing field that exists, for a missing one).
    pub fn error_at(&self, field: &str, problem: impl Into<String>) -> InputError {
        let (line, column) = match self.locate(field) {
            Some((l, c)) => (Some(l), Some(c)),
            None => (None, None),
        };
        InputError {
            file: self.file.to_string(),
            line,
            column,
            field: field.to_string(),
            problem: problem.into(),
        }
    }

    /// 1-based line and column of the node at `field`, or of its nearest existing parent.
    pub fn locate(&self, field: &str) -> Option<(usize, usize)> {
        let root = Node::parse(self.text)?;
        let mut node = &root;
        let mut at = node.position();
        for seg in parse_path(field) {
            let next = match (&seg, node) {
                (Segment::Key(k), Node::Map(entries, _)) => entries
                    .iter()
                    .find(|(key, _, _)| key == k)
                    .map(|(_, key_pos, value)| (value, *key_pos)),
                (Segment::Index(i), Node::Seq(items, _)) => {
                    items.get(*i).map(|n| (n, n.position()))
                }
                _ => None,
            };
            match next {
                Some((n, pos)) => {
                    node = n;
                    at = pos;
                }
                None => break,
            }
        }
        Some(at)
    }
}

/// The parser's message without its own location prefix or snippet, which we print ourselves.
fn plain_message(e: &serde_saphyr::Error) -> String {
    let rendered = e.without_snippet().to_string();
    let first = rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    // Drop a trailing " at line N column M" that the parser may append.
    match first.find(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first,
    }
}

#[derive(Debug, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn parse_path(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            if i > 0 {
                out.push(Segment::Key(rest[..i].to_string()));
            }
            rest = &rest[i..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(end) = stripped.find(']') else { break };
                if let Ok(n) = stripped[..end].parse() {
                    out.push(Segment::Index(n));
                }
                rest = &stripped[end + 1..];
            }
        } else {
            out.push(Segment::Key(rest.to_string()));
        }
    }
    out
}

/// Just enough of a YAML tree to find where a field was written.
enum Node {
    Scalar((usize, usize)),
    Seq(Vec<Node>, (usize, usize)),
    Map(Vec<(String, (usize, usize), Node)>, (usize, usize)),
}

impl Node {
    fn position(&self) -> (usize, usize) {
        match self {
            Node::Scalar(p) | Node::Seq(_, p) | Node::Map(_, p) => *p,
        }
    }

    fn parse(text: &str) -> Option<Node> {
        // Only structural events: comments and anchors carry no field.
        let mut events = Parser::new_from_str(text)
            .filter_map(|r| r.ok())
            .filter(|(ev, _)| {
                matches!(
                    ev,
                    Event::StreamStart
                        | Event::StreamEnd
                        | Event::DocumentStart(..)
                        | Event::DocumentEnd
                        | Event::Scalar(..)
                        | Event::Alias(..)
                        | Event::UnresolvedAlias(..)
                        | Event::SequenceStart(..)
                        | Event::SequenceEnd
                        | Event::MappingStart(..)
                        | Event::MappingEnd
                )
            })
            .map(|(ev, span)| {
                let pos = (span.start.line(), span.start.col() + 1);
                (ev, pos)
            });
        // Skip to the first node of the first document.
        loop {
            let (ev, pos) = events.next()?;
            match ev {
                Event::StreamStart | Event::DocumentStart(..) => continue,
                Event::StreamEnd | Event::DocumentEnd => return None,
                other => return Node::build(other, pos, &mut events),
            }
        }
    }

    fn build<'a>(
        first: Event<'a>,
        pos: (usize, usize),
        events: &mut impl Iterator<Item = (Event<'a>, (usize, usize))>,
    ) -> Option<Node> {
        match first {
            Event::Scalar(..) | Event::Alias(..) | Event::UnresolvedAlias(..) => {
                Some(Node::Scalar(pos))
            }
            Event::SequenceStart(..) => {
                let mut items = Vec::new();
                loop {
                    let (ev, p) = events.next()?;
                    match ev {
                        Event::SequenceEnd => return Some(Node::Seq(items, pos)),
                        Event::Anchor(..) => continue,
                        other => items.push(Node::build(other, p, events)?),
                    }
                }
            }
            Event::MappingStart(..) => {
                let mut entries = Vec::new();
                loop {
                    let (ev, kp) = events.next()?;
                    let key = match ev {
                        Event::MappingEnd => return Some(Node::Map(entries, pos)),
                        Event::Anchor(..) => continue,
                        Event::Scalar(k, ..) => k.to_string(),
                        other => {
                            // A complex key: consume it, it never names a field.
                            Node::build(other, kp, events)?;
                            String::new()
                        }
                    };
                    let (vev, vp) = loop {
                        let (e, p) = events.next()?;
                        if !matches!(e, Event::Anchor(..)) {
                            break (e, p);
                        }
                    };
                    let value = Node::build(vev, vp, events)?;
                    entries.push((key, kp, value));
                }
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        items: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        size: u32,
    }

    const DOC: &str = "name: a\nitems:\n  - size: 1\n  - size: big\n";

    #[test]
    fn comments_do_not_hide_fields() {
        let doc = "# header\nname: a # trailing\nitems:\n  # before\n  - size: 1\n";
        assert_eq!(
            Source::new("x.yaml", doc).locate("items[0].size"),
            Some((5, 5))
        );
    }

    #[test]
    fn a_tab_in_indentation_is_reported_on_its_own_line() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Doc {
            name: String,
            spec: std::collections::BTreeMap<String, u32>,
        }
        let text = "name: a\nspec:\n  x: 1\n\ty: 2\n";
        let e = Source::new("r.yaml", text).decode::<Doc>().unwrap_err();
        assert_eq!((e.line, e.column), (Some(4), Some(1)), "{e}");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_placed() {
        let e = text("r.yaml", b"name: a\nspec:\n  app: caf\xe9\n".to_vec()).unwrap_err();
        assert_eq!((e.line, e.column), (Some(3), Some(11)), "{e}");
        assert!(e.to_string().starts_with("r.yaml:3:11"), "{e}");
        assert!(e.problem.contains("0xe9"), "{e}");
    }

    #[test]
    fn wrong_type_names_field_line_and_column() {
        let err = Source::new("x.yaml", DOC).decode::<Outer>().unwrap_err();
        assert_eq!(err.field, "items[1].size");
        assert_eq!(err.line, Some(4));
        assert_eq!(err.column, Some(11));
        assert!(
            err.to_string()
                .starts_with("x.yaml:4:11: field `items[1].size`:"),
            "{err}"
        );
    }

    #[test]
    fn unknown_field_is_refused_with_its_place() {
        let doc = "name: a\nitems:\n  - size: 1\n    colour: red\n";
        let err = Source::new("x.yaml", doc).decode::<Outer>().unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        assert!(err.problem.contains("colour"), "{err}");
        assert!(err.field.starts_with("items[0]"), "{err}");
    }

    #[test]
    fn locate_finds_nested_fields_and_falls_back_to_parent() {
        let src = Source::new("x.yaml", DOC);
        assert_eq!(src.locate("items[1].size"), Some((4, 5)));
        assert_eq!(src.locate("items[1].missing"), Some((4, 5)));
        assert_eq!(src.locate("name"), Some((1, 1)));
        let e = src.error_at("items[0].size", "too small");
        assert_eq!(
            e.to_string(),
            "x.yaml:3:5: field `items[0].size`: too small"
        );
    }

    #[test]
    fn garbage_never_panics() {
        for doc in ["", ":", "[", "{a: [}", "\t- x", "a: &x\n  b: *y", "- - - -"] {
            let _ = Source::new("x.yaml", doc).decode::<Outer>();
            let _ = Source::new("x.yaml", doc).locate("a.b[3].c");
        }
    }
}
