//! The timeline picture as a person sees it: rendered by resvg with the
//! system's fonts, every text laid out by the font it gets, and no two text
//! boxes overlapping.

use resvg::tiny_skia;
use resvg::usvg;

/// Renders `svg` to PNG and returns it, failing the test if any two texts
/// overlap as drawn (naming both) or any text could not be drawn.
pub fn render_checked(svg: &str) -> Vec<u8> {
    let mut opt = usvg::Options::default();
    opt.fontdb_mut().load_system_fonts();
    assert!(
        !opt.fontdb.is_empty(),
        "no system fonts: install fonts-dejavu-core (scripts/test does)"
    );
    let tree = usvg::Tree::from_str(svg, &opt).expect("the picture is valid SVG");
    let mut texts = Vec::new();
    collect(tree.root(), &mut texts);
    // A text whose font is missing is dropped by the layout: every one of
    // them must have been laid out, or the check below proves nothing.
    assert_eq!(
        texts.len(),
        svg.matches("<text").count(),
        "every text is drawn"
    );
    let mut overlapping = Vec::new();
    for (i, (a, ra)) in texts.iter().enumerate() {
        for (b, rb) in &texts[i + 1..] {
            let apart = ra.right() <= rb.left()
                || rb.right() <= ra.left()
                || ra.bottom() <= rb.top()
                || rb.bottom() <= ra.top();
            if !apart {
                overlapping.push(format!("{a:?} {ra:?} and {b:?} {rb:?}"));
            }
        }
    }
    assert!(
        overlapping.is_empty(),
        "texts overlap in the picture:\n{}",
        overlapping.join("\n")
    );
    let size = tree.size().to_int_size();
    assert!(size.width() >= 1200, "readable at 1,200 px: {size:?}");
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height()).unwrap();
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.encode_png().unwrap()
}

fn collect(group: &usvg::Group, out: &mut Vec<(String, usvg::Rect)>) {
    for node in group.children() {
        match node {
            usvg::Node::Group(g) => collect(g, out),
            usvg::Node::Text(t) => {
                let words: String = t.chunks().iter().map(|c| c.text()).collect();
                out.push((words, t.abs_bounding_box()));
            }
            _ => {}
        }
    }
}
