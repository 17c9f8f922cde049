//! Self-contained HTML pages (`report.html`, `diff.html`): one file that works offline, with inline CSS,
//! inline SVG plots and one small inline script that sorts tables. Nothing is fetched: no external
//! scripts, styles, fonts or images.

use std::fmt::Write as _;

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// One table cell: its text and, for numbers, the value it sorts by.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Shown text (escaped when written).
    pub text: String,
    /// Sort key for numeric columns (the text sorts otherwise).
    pub value: Option<f64>,
    /// Optional CSS class (`hi` marks a cell, e.g. a significant change or a throttled step).
    pub class: Option<&'static str>,
}

impl Cell {
    /// A text cell.
    pub fn text(s: impl Into<String>) -> Self {
        Cell { text: s.into(), value: None, class: None }
    }

    /// A number shown with `decimals` decimals, sorted by its value.
    pub fn num(v: f64, decimals: usize) -> Self {
        Cell { text: format!("{v:.decimals$}"), value: Some(v), class: None }
    }

    /// An integer.
    pub fn int(v: u64) -> Self {
        Cell { text: v.to_string(), value: Some(v as f64), class: None }
    }

    /// The same cell with a CSS class.
    pub fn with_class(mut self, class: &'static str) -> Self {
        self.class = Some(class);
        self
    }
}

impl From<&str> for Cell {
    fn from(s: &str) -> Self {
        Cell::text(s)
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Self {
        Cell::text(s)
    }
}

/// A sortable table: a click on a header sorts by that column.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Column headers.
    pub headers: Vec<String>,
    /// Rows of cells, as many as headers.
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    /// A table with these headers and no rows.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Self {
        Table { headers: headers.into_iter().map(Into::into).collect(), rows: Vec::new() }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }
}

/// An HTML page being built.
#[derive(Debug, Clone, Default)]
pub struct Page {
    title: String,
    body: String,
    sections: Vec<(String, String)>,
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em auto;max-width:1200px;\
padding:0 1em;color:#222}h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}\
h3{font-size:1em}table{border-collapse:collapse;font-size:12px;margin:.5em 0}th,td{border:1px solid #ddd;\
padding:2px 6px;text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3;\
cursor:pointer;position:sticky;top:0}td.l{text-align:left}.hi{background:#fde2e1}.ok{background:#e3f4e1}\
.plots{display:flex;flex-wrap:wrap;gap:8px}.plots figure{margin:0;display:table}figcaption{font-size:12px;color:#555;\
display:table-caption;caption-side:bottom}\
nav a{margin-right:1em}.note{color:#555;font-size:13px}pre{background:#f6f6f6;padding:.5em;overflow:auto;font-size:12px}";

/// Sorts a table by the clicked column: numeric by `data-v` where cells have it, else by text.
const SORT_SCRIPT: &str = "document.querySelectorAll('table.sortable th').forEach(function(th,i){\
th.addEventListener('click',function(){var t=th.closest('table'),b=t.tBodies[0],r=Array.from(b.rows),\
d=th.dataset.dir==='a'?-1:1;th.dataset.dir=d===1?'a':'d';r.sort(function(x,y){var p=x.cells[i],q=y.cells[i],\
u=p.dataset.v,v=q.dataset.v;if(u!==undefined&&v!==undefined)return d*(parseFloat(u)-parseFloat(v));\
return d*p.textContent.localeCompare(q.textContent)});r.forEach(function(x){b.appendChild(x)})})})";

impl Page {
    /// A page with this title.
    pub fn new(title: &str) -> Self {
        Page { title: title.to_string(), ..Default::default() }
    }

    /// Starts a section (`<h2>` with an anchor, listed in the page's navigation).
    pub fn section(&mut self, id: &str, heading: &str) {
        self.sections.push((id.to_string(), heading.to_string()));
        let _ = writeln!(self.body, "<h2 id=\"{}\">{}</h2>", escape(id), escape(heading));
    }

    /// A sub-heading.
    pub fn heading(&mut self, text: &str) {
        let _ = writeln!(self.body, "<h3>{}</h3>", escape(text));
    }

    /// A paragraph of text.
    pub fn paragraph(&mut self, text: &str) {
        let _ = writeln!(self.body, "<p>{}</p>", escape(text));
    }

    /// A note in smaller type.
    pub fn note(&mut self, text: &str) {
        let _ = writeln!(self.body, "<p class=\"note\">{}</p>", escape(text));
    }

    /// Preformatted text.
    pub fn pre(&mut self, text: &str) {
        let _ = writeln!(self.body, "<pre>{}</pre>", escape(text));
    }

    /// A row of figures: (caption, SVG document) each. The SVG is inlined as it is: it must come from a
    /// plotting backend, not from input.
    pub fn figures(&mut self, figures: &[(String, String)]) {
        self.body.push_str("<div class=\"plots\">\n");
        for (caption, svg) in figures {
            let _ = writeln!(self.body, "<figure>{}<figcaption>{}</figcaption></figure>", svg, escape(caption));
        }
        self.body.push_str("</div>\n");
    }

    /// A sortable table.
    pub fn table(&mut self, t: &Table) {
        self.body.push_str("<table class=\"sortable\"><thead><tr>");
        for h in &t.headers {
            let _ = write!(self.body, "<th>{}</th>", escape(h));
        }
        self.body.push_str("</tr></thead><tbody>\n");
        for r in &t.rows {
            self.body.push_str("<tr>");
            for c in r {
                self.body.push_str("<td");
                if let Some(v) = c.value.filter(|v| v.is_finite()) {
                    let _ = write!(self.body, " data-v=\"{v}\"");
                }
                match (c.class, c.value.is_none()) {
                    (Some(cl), true) => {
                        let _ = write!(self.body, " class=\"l {cl}\"");
                    }
                    (Some(cl), false) => {
                        let _ = write!(self.body, " class=\"{cl}\"");
                    }
                    (None, true) => self.body.push_str(" class=\"l\""),
                    (None, false) => {}
                }
                let _ = write!(self.body, ">{}</td>", escape(&c.text));
            }
            self.body.push_str("</tr>\n");
        }
        self.body.push_str("</tbody></table>\n");
    }

    /// The finished document.
    pub fn finish(self) -> String {
        let mut out = String::with_capacity(self.body.len() + 4096);
        let _ = write!(
            out,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{}</style></head>\n<body>\n<h1>{}</h1>\n",
            escape(&self.title),
            STYLE,
            escape(&self.title)
        );
        if self.sections.len() > 1 {
            out.push_str("<nav>");
            for (id, h) in &self.sections {
                let _ = write!(out, "<a href=\"#{}\">{}</a>", escape(id), escape(h));
            }
            out.push_str("</nav>\n");
        }
        out.push_str(&self.body);
        let _ = write!(out, "<script>{SORT_SCRIPT}</script>\n</body></html>\n");
        out
    }
}

/// What a self-contained page must not hold: any reference that a browser would fetch. Returns the
/// offending snippets (empty: the page works offline). The SVG namespace URI (`xmlns=`) names a
/// vocabulary and is never fetched, so it is allowed.
pub fn external_references(html: &str) -> Vec<String> {
    let lower = html.to_ascii_lowercase();
    let mut found = Vec::new();
    for pat in
        ["src=", "href=\"http", "href='http", "href=\"//", "url(", "@import", "<link", "<iframe", "<object", "<embed"]
    {
        let mut from = 0;
        while let Some(p) = lower[from..].find(pat) {
            let at = from + p;
            let end = (at + 60).min(lower.len());
            found.push(html.get(at..end).unwrap_or(pat).to_string());
            from = at + pat.len();
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_escapes_text_and_references_nothing_outside() {
        let mut p = Page::new("a <b> & c");
        p.section("s", "Section");
        let mut t = Table::new(["kernel", "us"]);
        t.row(vec![Cell::text("void f<int>(\"x\")"), Cell::num(1.5, 3)]);
        p.table(&t);
        let html = p.finish();
        assert!(html.contains("a &lt;b&gt; &amp; c"));
        assert!(html.contains("void f&lt;int&gt;(&quot;x&quot;)"));
        assert!(html.contains("data-v=\"1.5\">1.500</td>"));
        assert!(external_references(&html).is_empty(), "{:?}", external_references(&html));
        assert_eq!(external_references("<img src=\"http://x/y.png\">").len(), 1);
        assert_eq!(external_references("<script src=a.js></script><link rel=stylesheet href=\"https://c\">").len(), 3);
    }
}
